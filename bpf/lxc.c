//go:build ignore

/* lxc: TCX ingress of the host side of a workload's veth, so it sees every
 * packet the workload sends. It answers the workload's ARP and IPv6 neighbour
 * solicitations itself (the host veth's MAC is the gateway for every
 * address), delivers to endpoints on this node, sends to endpoints on other
 * nodes through the overlay (VXLAN device, eBPF Geneve) or natively, and
 * passes everything else to the node's stack; every IP packet but neighbour
 * discovery first passes the sending endpoint's egress policy
 * (policy_egress), and local deliveries the receiver's (policy_ingress).
 * Packets to a service frontend are first translated to a backend (lb.h). */
#include "include/common.h"
#include "include/forward.h"

/* From linux/if_arp.h, which drags in libc headers a BPF target cannot
 * build. */
#define ARPHRD_ETHER 1
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2

struct arp_eth {
	__be16 hrd;
	__be16 pro;
	__u8 hln;
	__u8 pln;
	__be16 op;
	__u8 sha[6];
	__u8 sip[4];
	__u8 tha[6];
	__u8 tip[4];
} __attribute__((packed));

struct arp_frame {
	struct ethhdr eth;
	struct arp_eth arp;
} __attribute__((packed));

/* handle_arp answers an ARP request for any address but the sender's own
 * with the host veth's MAC. Requests for the sender's own address (duplicate
 * address detection, gratuitous ARP) and requests on a veth the datapath
 * does not serve (yet) go to the stack, which ignores them. */
static __always_inline int handle_arp(struct __sk_buff *skb)
{
	struct arp_frame f;
	struct endpoint_info *ep;
	__u32 ifindex = skb->ifindex;
	__be32 sip, tip;
	__u8 mac[6];

	if (bpf_skb_load_bytes(skb, 0, &f, sizeof(f)))
		return TC_ACT_OK;
	if (f.arp.hrd != bpf_htons(ARPHRD_ETHER) || f.arp.pro != bpf_htons(ETH_P_IP) ||
	    f.arp.hln != 6 || f.arp.pln != 4 || f.arp.op != bpf_htons(ARPOP_REQUEST))
		return TC_ACT_OK;
	__builtin_memcpy(&sip, f.arp.sip, 4);
	__builtin_memcpy(&tip, f.arp.tip, 4);
	if (sip == tip || sip == 0)
		return TC_ACT_OK;
	ep = bpf_map_lookup_elem(&lxc_devices, &ifindex);
	if (!ep)
		return TC_ACT_OK;
	__builtin_memcpy(mac, ep->host_mac, 6);

	__builtin_memcpy(f.eth.h_dest, f.arp.sha, 6);
	__builtin_memcpy(f.eth.h_source, mac, 6);
	f.arp.op = bpf_htons(ARPOP_REPLY);
	__builtin_memcpy(f.arp.tha, f.arp.sha, 6);
	__builtin_memcpy(f.arp.tip, &sip, 4);
	__builtin_memcpy(f.arp.sha, mac, 6);
	__builtin_memcpy(f.arp.sip, &tip, 4);
	if (bpf_skb_store_bytes(skb, 0, &f, sizeof(f), 0))
		return TC_ACT_SHOT;
	/* From tc ingress, redirecting to the same device's egress sends the
	 * reply back into the workload. */
	return bpf_redirect(skb->ifindex, 0);
}

struct nd_frame {
	struct ethhdr eth;
	struct ipv6hdr ip6;
	__u8 type;
	__u8 code;
	__be16 csum;
	__be32 flags; /* NA: R, S, O; NS: reserved */
	struct in6_addr target;
	__u8 opt_type; /* NA: target link-layer address (2) */
	__u8 opt_len;  /* in 8-byte units */
	__u8 opt_mac[6];
} __attribute__((packed));

#define ND_NEIGHBOR_SOLICIT 135
#define ND_NEIGHBOR_ADVERT 136
#define ND_OPT_SOURCE_LL 1
#define ND_OPT_TARGET_LL 2
#define ND_LEN 32 /* ICMPv6 header, flags, target and one option */

/* handle_ns answers an IPv6 neighbour solicitation for any address but the
 * sender's own with a neighbour advertisement (router, solicited, override)
 * carrying the host veth's MAC: the same role as handle_arp, so workloads
 * resolve their IPv6 gateway without the CNI plugin installing a neighbour
 * entry. DAD probes (unspecified source) go to the stack. */
static __always_inline int handle_ns(struct __sk_buff *skb)
{
	struct nd_frame f = {};
	struct endpoint_info *ep;
	struct in6_addr requester;
	__u32 ifindex = skb->ifindex;
	__u8 mac[6], req_mac[6];
	__u32 sum = 0;
	__u32 plen;

	if (bpf_skb_load_bytes(skb, 0, &f, offsetof(struct nd_frame, opt_type)))
		return TC_ACT_OK;
	if (f.code != 0 || f.ip6.hop_limit != 255)
		return TC_ACT_OK; /* RFC 4861 7.1.1: not a valid NS */
	requester = f.ip6.saddr;
	if (requester.in6_u.u6_addr32[0] == 0 && requester.in6_u.u6_addr32[1] == 0 &&
	    requester.in6_u.u6_addr32[2] == 0 && requester.in6_u.u6_addr32[3] == 0)
		return TC_ACT_OK;
	if (requester.in6_u.u6_addr32[0] == f.target.in6_u.u6_addr32[0] &&
	    requester.in6_u.u6_addr32[1] == f.target.in6_u.u6_addr32[1] &&
	    requester.in6_u.u6_addr32[2] == f.target.in6_u.u6_addr32[2] &&
	    requester.in6_u.u6_addr32[3] == f.target.in6_u.u6_addr32[3])
		return TC_ACT_OK;
	/* By interface, not by source address: solicitations come from the
	 * workload's link-local address as often as from its global one. */
	ep = bpf_map_lookup_elem(&lxc_devices, &ifindex);
	if (!ep)
		return TC_ACT_OK;
	__builtin_memcpy(mac, ep->host_mac, 6);
	__builtin_memcpy(req_mac, f.eth.h_source, 6);

	__builtin_memcpy(f.eth.h_dest, req_mac, 6);
	__builtin_memcpy(f.eth.h_source, mac, 6);
	f.ip6.payload_len = bpf_htons(ND_LEN);
	f.ip6.nexthdr = IPPROTO_ICMPV6;
	f.ip6.hop_limit = 255;
	f.ip6.daddr = requester;
	f.ip6.saddr = f.target;
	f.type = ND_NEIGHBOR_ADVERT;
	f.code = 0;
	f.csum = 0;
	f.flags = bpf_htonl(0xe0000000);
	f.opt_type = ND_OPT_TARGET_LL;
	f.opt_len = 1;
	__builtin_memcpy(f.opt_mac, mac, 6);

	/* ICMPv6 checksum over the pseudo-header and the message. */
	sum = csum_add(&f.ip6.saddr, 32, 0);
	sum += bpf_htons(ND_LEN) + bpf_htons(IPPROTO_ICMPV6);
	sum = csum_add(&f.type, ND_LEN, sum);
	f.csum = csum_fold(sum);

	plen = sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + ND_LEN;
	if (skb->len != plen && bpf_skb_change_tail(skb, plen, 0))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, 0, &f, sizeof(f), 0))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/* source_identity returns the identity of the endpoint that sent skb from
 * src, or -1 when src is not an address of the endpoint behind this veth
 * (spoofed). */
static __always_inline __s64 source_identity(struct __sk_buff *skb, struct endpoint_info *src)
{
	if (!src || src->ifindex != skb->ifindex)
		return -1;
	return src->identity;
}

/* remote_identity is the identity policy sees for a destination the
 * ipcache resolves (or does not: the world). */
static __always_inline __u32 remote_identity(const struct remote_info *ri)
{
	if (!ri || ri->identity == IDENTITY_UNKNOWN)
		return IDENTITY_WORLD;
	return ri->identity;
}

/* egress_denied asks policy_egress and counts a drop. */
static __always_inline bool egress_denied(struct __sk_buff *skb, __u32 dst_identity, bool src_verified)
{
	if (policy_egress(skb, dst_identity, src_verified) == TC_ACT_OK)
		return false;
	count(METRIC_DROP_POLICY);
	return true;
}

/* is_self reports whether the ipcache points back at this node: a
 * destination in our own pod CIDR without an endpoint is nobody. */
static __always_inline bool is_self(const struct remote_info *ri)
{
	__be32 n;

	if (ri->node_family != FAMILY_V4)
		return false;
	__builtin_memcpy(&n, ri->node, 4);
	return n == cfg_node_ipv4;
}

/* lxc_lb translates a packet to a service frontend to one of its backends
 * (lb.h), before routing and policy look at it, so both see the backend.
 * sc->p is the packet's tuple afterwards. */
static __always_inline int lxc_lb(struct __sk_buff *skb, struct lb_scratch *sc)
{
	if (!sc || lb_parse(skb, &sc->p))
		return LB_NONE;
	return lb_dnat(skb, false);
}

/* lxc_reply handles a reply of a translated connection whose client is not
 * reached through deliver_local: a hairpinned one (sent to the frontend
 * address that replaced the client's source) or one from outside the
 * cluster (out of the underlay interface). The caller has let egress policy judge it
 * as the backend sent it (a tracked reply); here it is rewritten back to
 * come from the frontend, and a hairpin goes straight back into the client
 * (policy passed both of its ends already). */
static __always_inline int lxc_reply(struct __sk_buff *skb, struct lb_scratch *sc)
{
	struct endpoint_key *k = (struct endpoint_key *)&sc->rk;
	struct endpoint_info *dst;
	int r = lb_rev_nat(skb);

	if (r < 0)
		return TC_ACT_SHOT;
	if (r == 0)
		return TC_ACT_OK; /* cannot be: the caller found the entry */
	__builtin_memset(k, 0, sizeof(*k));
	k->family = sc->r.key.family;
	__builtin_memcpy(k->addr, sc->r.key.daddr, 16);
	dst = bpf_map_lookup_elem(&endpoints, k);
	if (dst)
		return redirect_local(skb, dst);
	/* To the outside: the node's stack would drop a reply from a node
	 * port (from its own address, arriving on a veth) as a martian. */
	return redirect_fib(skb, &sc->r.key);
}

static __always_inline int from_lxc4(struct __sk_buff *skb)
{
	struct lb_scratch *sc = lb_scratch_get();
	int lb;
	struct endpoint_info *dst;
	struct remote_info *ri;
	struct iphdr *ip;
	__be32 saddr, daddr;
	__s64 src;

	if (ensure(skb, sizeof(struct ethhdr) + sizeof(struct iphdr)))
		return TC_ACT_OK;
	ip = (void *)(long)skb->data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > (void *)(long)skb->data_end)
		return TC_ACT_OK;
	saddr = ip->saddr;
	daddr = ip->daddr;

	lb = lxc_lb(skb, sc);
	if (lb == LB_NO_BACKEND)
		return drop(skb, METRIC_DROP_NO_BACKEND);
	if (lb == LB_ERROR)
		return TC_ACT_SHOT;
	if (sc && (lb & 0xff) == LB_DNAT)
		__builtin_memcpy(&daddr, sc->p.key.daddr, 4);

	dst = lookup_endpoint4(daddr);
	if (dst) {
		src = source_identity(skb, lookup_endpoint4(saddr));
		if (src < 0)
			return drop(skb, METRIC_DROP_SPOOFED_SRC);
		if (egress_denied(skb, dst->identity, true))
			return TC_ACT_SHOT;
		if (sc && (lb & 0x100) && lb_hairpin(skb, sc))
			return TC_ACT_SHOT;
		return deliver_local(skb, src, dst);
	}
	if (sc && lb == LB_PASS && bpf_map_lookup_elem(&lb_revnat, &sc->p.key)) {
		src = source_identity(skb, lookup_endpoint4(saddr));
		if (src < 0)
			return drop(skb, METRIC_DROP_SPOOFED_SRC);
		if (egress_denied(skb, IDENTITY_WORLD, true))
			return TC_ACT_SHOT;
		return lxc_reply(skb, sc);
	}
	ri = lookup_ipcache4(daddr);
	if (!ri || !ri->node_family || is_self(ri)) {
		/* Out of the cluster, or to the node: the stack takes it. */
		if (egress_denied(skb, remote_identity(ri), false))
			return TC_ACT_SHOT;
		return TC_ACT_OK;
	}
	src = source_identity(skb, lookup_endpoint4(saddr));
	if (src < 0)
		return drop(skb, METRIC_DROP_SPOOFED_SRC);
	if (egress_denied(skb, remote_identity(ri), true))
		return TC_ACT_SHOT;
	return forward_remote(skb, src, ri, false);
}

static __always_inline int from_lxc6(struct __sk_buff *skb)
{
	struct lb_scratch *sc = lb_scratch_get();
	int lb;
	struct endpoint_info *dst;
	struct remote_info *ri;
	struct ipv6hdr *ip6;
	struct in6_addr saddr, daddr;
	__u8 icmp_type = 0;
	__s64 src;

	if (ensure(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr)))
		return TC_ACT_OK;
	ip6 = (void *)(long)skb->data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > (void *)(long)skb->data_end)
		return TC_ACT_OK;
	saddr = ip6->saddr;
	daddr = ip6->daddr;
	if (ip6->nexthdr == IPPROTO_ICMPV6 &&
	    !bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr), &icmp_type, 1) &&
	    icmp_type == ND_NEIGHBOR_SOLICIT)
		return handle_ns(skb);

	lb = lxc_lb(skb, sc);
	if (lb == LB_NO_BACKEND)
		return drop(skb, METRIC_DROP_NO_BACKEND);
	if (lb == LB_ERROR)
		return TC_ACT_SHOT;
	if (sc && (lb & 0xff) == LB_DNAT)
		__builtin_memcpy(&daddr, sc->p.key.daddr, 16);

	dst = lookup_endpoint6(&daddr);
	if (dst) {
		src = source_identity(skb, lookup_endpoint6(&saddr));
		if (src < 0)
			return drop(skb, METRIC_DROP_SPOOFED_SRC);
		if (egress_denied(skb, dst->identity, true))
			return TC_ACT_SHOT;
		if (sc && (lb & 0x100) && lb_hairpin(skb, sc))
			return TC_ACT_SHOT;
		return deliver_local(skb, src, dst);
	}
	if (sc && lb == LB_PASS && bpf_map_lookup_elem(&lb_revnat, &sc->p.key)) {
		src = source_identity(skb, lookup_endpoint6(&saddr));
		if (src < 0)
			return drop(skb, METRIC_DROP_SPOOFED_SRC);
		if (egress_denied(skb, IDENTITY_WORLD, true))
			return TC_ACT_SHOT;
		return lxc_reply(skb, sc);
	}
	ri = lookup_ipcache6(&daddr);
	if (!ri || !ri->node_family || is_self(ri)) {
		/* Out of the cluster, or to the node: the stack takes it. */
		if (egress_denied(skb, remote_identity(ri), false))
			return TC_ACT_SHOT;
		return TC_ACT_OK;
	}
	src = source_identity(skb, lookup_endpoint6(&saddr));
	if (src < 0)
		return drop(skb, METRIC_DROP_SPOOFED_SRC);
	if (egress_denied(skb, remote_identity(ri), true))
		return TC_ACT_SHOT;
	return forward_remote(skb, src, ri, true);
}

SEC("tcx/ingress")
int lxc_ingress(struct __sk_buff *skb)
{
	switch (skb->protocol) {
	case bpf_htons(ETH_P_ARP):
		return handle_arp(skb);
	case bpf_htons(ETH_P_IP):
		return from_lxc4(skb);
	case bpf_htons(ETH_P_IPV6):
		return from_lxc6(skb);
	}
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual MIT/GPL";
