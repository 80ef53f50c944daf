/* Connection tracking: the tuple of a packet (struct flow) and the ct map
 * that lets the packets of an accepted connection, its replies included,
 * pass without another policy decision.
 *
 * Each local endpoint's view of a connection is one entry: dir DIR_EGRESS
 * when the connection passed the endpoint's egress (it opened it), DIR_INGRESS
 * when it passed its ingress. A packet belongs to a tracked connection when
 *   - its reverse tuple is tracked in the other direction (a reply: an
 *     endpoint's reply leaves by egress to a connection accepted on ingress,
 *     and comes in by ingress to one it opened), or
 *   - its own tuple is tracked in the same direction (established).
 * Entries idle beyond their lifetime (cfg_ct_*_ns) count as absent; the Go
 * side's GCConntrack deletes them periodically, and the LRU map reclaims
 * them when it needs room before that. */
#pragma once

#include "common.h"

#define ETH_HLEN_ 14
#define IPPROTO_SCTP_ 132
#define IPV6_FRAGMENT_ 44

#define TCP_FIN_ 0x01
#define TCP_SYN_ 0x02
#define TCP_RST_ 0x04
#define TCP_ACK_ 0x10

#define ICMP_ECHOREPLY_ 0
#define ICMP_ECHO_ 8
#define ICMPV6_ECHO_REQUEST_ 128
#define ICMPV6_ECHO_REPLY_ 129

/* Results of ct_lookup. */
#define CT_NEW 0     /* not tracked */
#define CT_TRACKED 1 /* a packet of a tracked connection */
#define CT_ENDED 2   /* the same, and its first FIN or RST */

/* CT lifetimes are refreshed at most this often, so that established flows
 * do not write their entry at every packet. */
#define CT_REFRESH_NS 1000000000ULL

/* flow is what policy and connection tracking know of a packet. */
struct flow {
	struct ct_key key; /* the packet's tuple; key.dir is set by the users */
	__u16 port;        /* what policy matches: dport, or the ICMP type */
	__u8 tcp_flags;
	bool l4;     /* the ports are known (false: short packet, or a later
		      * fragment whose first fragment was not seen) */
	bool exempt; /* ICMPv6 neighbour discovery and MLD: never policed */
};

/* port_bearing reports whether proto has ports that a policy entry with any
 * protocol (0) and a port matches: TCP, UDP and SCTP, as in Cilium. */
static __always_inline bool port_bearing(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP_;
}

/* parse_l4 fills f's ports from the L4 header at off. */
static __always_inline void parse_l4(struct __sk_buff *skb, __u32 off, struct flow *f)
{
	__u8 h[14];

	if (port_bearing(f->key.proto)) {
		/* Ports are the first 4 bytes of TCP, UDP and SCTP alike. */
		if (f->key.proto == IPPROTO_TCP) {
			if (bpf_skb_load_bytes(skb, off, h, 14))
				return;
			f->tcp_flags = h[13];
		} else if (bpf_skb_load_bytes(skb, off, h, 4)) {
			return;
		}
		f->key.sport = (__u16)h[0] << 8 | h[1];
		f->key.dport = (__u16)h[2] << 8 | h[3];
		f->port = f->key.dport;
		f->l4 = true;
		return;
	}
	if ((f->key.proto == IPPROTO_ICMP && f->key.family == FAMILY_V4) ||
	    (f->key.proto == IPPROTO_ICMPV6 && f->key.family == FAMILY_V6)) {
		__u16 id;

		/* type, code, checksum, identifier */
		if (bpf_skb_load_bytes(skb, off, h, 6))
			return;
		id = (__u16)h[4] << 8 | h[5];
		f->port = h[0];
		f->l4 = true;
		if (h[0] == (f->key.family == FAMILY_V4 ? ICMP_ECHO_ : ICMPV6_ECHO_REQUEST_)) {
			f->key.sport = id;
		} else if (h[0] == (f->key.family == FAMILY_V4 ? ICMP_ECHOREPLY_ : ICMPV6_ECHO_REPLY_)) {
			f->key.dport = id;
		} else {
			f->key.dport = h[0];
			/* ICMPv6 133..137 (router and neighbour discovery, redirect)
			 * and MLD (130..132, 143): link-level control that a
			 * policy must not break. */
			if (f->key.family == FAMILY_V6 && ((h[0] >= 130 && h[0] <= 137) || h[0] == 143))
				f->exempt = true;
		}
		return;
	}
	/* Other protocols have no ports: the tuple is the addresses. */
	f->l4 = true;
}

/* frag_track makes fragmented datagrams follow their first fragment: the
 * first (offset 0, more fragments) records its ports, later ones (offset
 * not 0) take them. A later fragment whose first was not seen keeps
 * l4 = false and ports 0: only port-wildcard policy entries or nothing
 * match it. */
static __always_inline void frag_track(struct flow *f, __u32 id, bool first)
{
	struct frag_key k = {.id = id, .proto = f->key.proto, .family = f->key.family};
	struct frag_ports *p, v;

	__builtin_memcpy(k.saddr, f->key.saddr, 16);
	__builtin_memcpy(k.daddr, f->key.daddr, 16);
	if (first) {
		if (!f->l4)
			return;
		v.sport = f->key.sport;
		v.dport = f->key.dport;
		v.port = f->port;
		v.pad = 0;
		bpf_map_update_elem(&fragments, &k, &v, BPF_ANY);
		return;
	}
	p = bpf_map_lookup_elem(&fragments, &k);
	if (!p)
		return;
	f->key.sport = p->sport;
	f->key.dport = p->dport;
	f->port = p->port;
	f->l4 = true;
}

/* parse_flow reads the tuple of the IP packet whose Ethernet header is at
 * offset 0. IPv4 options are skipped by the header length; IPv6 extension
 * headers are not walked, except one fragment header right after the fixed
 * header: with any other, the next header is the protocol and there are no
 * ports. It returns -1 for anything but a readable IPv4 or IPv6 header. */
static __always_inline int parse_flow(struct __sk_buff *skb, struct flow *f)
{
	__be16 proto;

	__builtin_memset(f, 0, sizeof(*f));
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, 2))
		return -1;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		__u16 frag;

		if (bpf_skb_load_bytes(skb, ETH_HLEN_, &ip, sizeof(ip)) || ip.ihl < 5)
			return -1;
		f->key.family = FAMILY_V4;
		f->key.proto = ip.protocol;
		__builtin_memcpy(f->key.saddr, &ip.saddr, 4);
		__builtin_memcpy(f->key.daddr, &ip.daddr, 4);
		frag = bpf_ntohs(ip.frag_off);
		if (frag & 0x1fff) {
			frag_track(f, bpf_ntohs(ip.id), false);
			return 0;
		}
		parse_l4(skb, ETH_HLEN_ + ip.ihl * 4, f);
		if (frag & 0x2000)
			frag_track(f, bpf_ntohs(ip.id), true);
		return 0;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		struct {
			__u8 nexthdr;
			__u8 reserved;
			__be16 frag_off; /* offset (13 bits) << 3 | M */
			__be32 id;
		} fh;
		__u16 frag;

		if (bpf_skb_load_bytes(skb, ETH_HLEN_, &ip6, sizeof(ip6)))
			return -1;
		f->key.family = FAMILY_V6;
		f->key.proto = ip6.nexthdr;
		__builtin_memcpy(f->key.saddr, &ip6.saddr, 16);
		__builtin_memcpy(f->key.daddr, &ip6.daddr, 16);
		if (ip6.nexthdr != IPV6_FRAGMENT_) {
			parse_l4(skb, ETH_HLEN_ + sizeof(ip6), f);
			return 0;
		}
		if (bpf_skb_load_bytes(skb, ETH_HLEN_ + sizeof(ip6), &fh, sizeof(fh)))
			return 0;
		f->key.proto = fh.nexthdr;
		frag = bpf_ntohs(fh.frag_off);
		if (frag & 0xfff8) {
			frag_track(f, bpf_ntohl(fh.id), false);
			return 0;
		}
		parse_l4(skb, ETH_HLEN_ + sizeof(ip6) + sizeof(fh), f);
		if (frag & 1)
			frag_track(f, bpf_ntohl(fh.id), true);
		return 0;
	}
	return -1;
}

static __always_inline bool ct_alive(const struct ct_entry *e, __u8 proto, __u64 now)
{
	__u64 life = cfg_ct_other_ns;

	if (proto == IPPROTO_TCP) {
		if (e->flags & CT_F_CLOSING)
			life = cfg_ct_closing_ns;
		else if (!(e->flags & CT_F_SEEN_REPLY))
			life = cfg_ct_syn_ns;
		else
			life = cfg_ct_tcp_ns;
	}
	return now - e->last_seen <= life;
}

static __always_inline __u32 ct_tcp_flags(const struct flow *f)
{
	if (f->key.proto == IPPROTO_TCP && (f->tcp_flags & (TCP_FIN_ | TCP_RST_)))
		return CT_F_CLOSING;
	return 0;
}

/* ct_touch refreshes a live entry that f belongs to. It returns CT_ENDED
 * when f is the first FIN or RST of the connection, else CT_TRACKED. */
static __always_inline int ct_touch(struct ct_entry *e, const struct flow *f, __u32 add, __u64 now)
{
	int ret = CT_TRACKED;

	add |= ct_tcp_flags(f);
	if ((e->flags & add) != add) {
		if ((add & CT_F_CLOSING) && !(e->flags & CT_F_CLOSING))
			ret = CT_ENDED;
		e->flags |= add; /* racing writers only ever add the same bits */
	}
	if (now - e->last_seen > CT_REFRESH_NS)
		e->last_seen = now;
	return ret;
}

/* ct_lookup reports whether f belongs to a connection the local endpoint
 * (in direction dir) already accepted, a reply or a later packet
 * (CT_TRACKED or CT_ENDED), or not (CT_NEW). */
static __always_inline int ct_lookup(struct flow *f, __u8 dir, __u64 now)
{
	struct ct_key rev = {
		.sport = f->key.dport,
		.dport = f->key.sport,
		.proto = f->key.proto,
		.family = f->key.family,
		.dir = dir ^ 1,
	};
	struct ct_entry *e;

	__builtin_memcpy(rev.saddr, f->key.daddr, 16);
	__builtin_memcpy(rev.daddr, f->key.saddr, 16);
	e = bpf_map_lookup_elem(&ct, &rev);
	if (e && ct_alive(e, f->key.proto, now))
		return ct_touch(e, f, CT_F_SEEN_REPLY, now);
	f->key.dir = dir;
	e = bpf_map_lookup_elem(&ct, &f->key);
	if (e && ct_alive(e, f->key.proto, now))
		return ct_touch(e, f, 0, now);
	return CT_NEW;
}

/* ct_create tracks f as accepted by the local endpoint in direction dir
 * (replacing an expired entry), and reports whether it did. A later
 * fragment whose ports are unknown makes none. */
static __always_inline bool ct_create(struct flow *f, __u8 dir, __u64 now)
{
	struct ct_entry e = {.last_seen = now, .flags = ct_tcp_flags(f)};

	if (!f->l4)
		return false;
	f->key.dir = dir;
	return bpf_map_update_elem(&ct, &f->key, &e, BPF_ANY) == 0;
}
