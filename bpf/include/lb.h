/* Service load balancing: the frontends (lb_services), the backends
 * (lb_backends), one Maglev table per service (lb_maglev, a hash of arrays),
 * and the per-connection state that makes a connection keep its backend
 * (lb_ct) and lets its replies be rewritten back to the frontend
 * (lb_revnat), plus ClientIP session affinity (lb_affinity).
 *
 * A workload's packet to a frontend is translated at its veth (lxc.c)
 * before the endpoint and ipcache lookups, so policy and routing see the
 * backend. The node that translated a connection holds its reverse-NAT
 * entry, keyed by the reply's tuple (backend to client); replies are
 * rewritten where they are delivered to the client: deliver_local, or, for
 * a client that is not a workload (external traffic, hairpin), the
 * backend's veth. Only TCP and UDP, unfragmented (IPv4 fragments and IPv6
 * extension headers are left alone: they reach the frontend address, which
 * nobody serves). */
#pragma once

#include "common.h"
#include "conntrack.h"

#define LB_SVC_F_EXTERNAL (1U << 0)

#define LB_REVNAT_F_HAIRPIN (1U << 0) /* also restore the destination */

struct lb_svc_key {
	__u8 addr[16]; /* IPv4 in the first 4 bytes */
	__u16 port;    /* host byte order */
	__u8 proto;
	__u8 family; /* FAMILY_V4 or FAMILY_V6 */
};

struct lb_svc {
	__u32 id;            /* key of its Maglev table in lb_maglev */
	__u32 backends;      /* 0: drop with METRIC_DROP_NO_BACKEND */
	__u32 table_size;    /* slots of its Maglev table */
	__u32 affinity_sec;  /* 0: no session affinity */
	__u32 flags;         /* LB_SVC_F_* */
	__u32 pad;
};

struct lb_backend {
	__u8 addr[16];
	__u16 port; /* host byte order */
	__u8 family;
	__u8 pad;
};

/* lb_ct: keyed by the client's original tuple (client to frontend, dir and
 * pad 0). */
struct lb_ct_entry {
	__u64 last_seen;
	__u32 backend_id;
	__u16 nat_port; /* lb_snat's source port for it; 0: none */
	__u16 pad;
};

/* lb_revnat: keyed by the reply's tuple (backend to client, or to the
 * frontend address for a hairpinned connection). */
struct lb_revnat {
	__u8 addr[16];   /* the frontend: the reply's new source */
	__u8 client[16]; /* hairpin: the reply's new destination */
	__u16 port;      /* the frontend port, host byte order */
	__u8 flags;      /* LB_REVNAT_F_* */
	__u8 pad;
};

/* lb_nat: an external connection forwarded to a backend on another node
 * with its source translated to this node's address and a NAT port, keyed
 * by the tuple of its replies as they come back (backend to this node's
 * address and the NAT port, dir and pad 0). */
struct lb_nat {
	__u8 frontend[16]; /* the reply's new source */
	__u8 client[16];   /* the reply's new destination */
	__u16 frontend_port;
	__u16 client_port;
	__u32 pad;
	__u64 last_seen;
};

struct lb_affinity_key {
	__u32 svc_id;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct lb_affinity {
	__u64 last_seen;
	__u32 backend_id;
	__u32 pad;
};

/* Sizes are rewritten by the loader (Config.*Entries). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_svc_key);
	__type(value, struct lb_svc);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb_backend);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_backends SEC(".maps");

/* The inner maps are made by the Go side, one per service, sized to its
 * table (BPF_F_INNER_MAP lets the sizes differ). */
struct lb_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32); /* backend id */
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_INNER_MAP);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32); /* service id */
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct lb_maglev_inner);
} lb_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct lb_ct_entry);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct lb_revnat);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_affinity_key);
	__type(value, struct lb_affinity);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct lb_nat);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_nat SEC(".maps");

/* What lb_parse knows of a packet: its tuple (dir 0) and where its L4
 * header is. */
struct lb_pkt {
	struct ct_key key;
	__u32 l4off;
};

/* lb_scratch holds what the translation works on, per CPU, off the BPF
 * stack: the programs' own frames plus a subprogram's must stay within 512
 * bytes. TC programs do not nest on one CPU, so one slot is enough; p is
 * the packet lb_dnat translates, r the one lb_rev_nat does (both may run for
 * one packet: a hairpin). */
struct lb_scratch {
	struct lb_pkt p;
	struct lb_pkt r;
	__u8 frontend[16];
	struct lb_revnat rv;
	struct ct_key rk;
	struct lb_backend be;
	struct lb_affinity_key ak;
	struct lb_svc_key sk;
	struct lb_ct_entry ce;
	struct lb_affinity af;
	struct lb_nat nat;
	struct ct_key nk;
	__be32 oa[4];
	__be32 na[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_scratch);
	__uint(max_entries, 1);
} lb_scratch SEC(".maps");

static __always_inline struct lb_scratch *lb_scratch_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&lb_scratch, &zero);
}

/* Results of lb_dnat. */
#define LB_PASS 0       /* not for a frontend (or left alone) */
#define LB_DNAT 1       /* rewritten to a backend */
#define LB_NO_BACKEND 2 /* a frontend without backends */
#define LB_ERROR 3      /* a helper failed: drop */
#define LB_NONE 4       /* not TCP or UDP: neither a frontend nor a reply */
#define LB_NAT 5        /* rewritten to a backend on another node, source to this node */
#define LB_NO_NAT_PORT 6 /* LB_NAT's case without a free NAT port: drop */

/* How many NAT ports lb_snat tries before it gives up on a connection. */
#define LB_NAT_TRIES 32

/* lb_parse reads the tuple of an unfragmented TCP or UDP packet (Ethernet
 * header at 0); -1 for anything else. */
static __always_inline int lb_parse(struct __sk_buff *skb, struct lb_pkt *p)
{
	__be16 ports[2];
	__be16 proto;

	__builtin_memset(p, 0, sizeof(*p));
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, 2))
		return -1;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &ip, sizeof(ip)) || ip.ihl < 5)
			return -1;
		if (ip.frag_off & bpf_htons(0x3fff))
			return -1;
		p->key.family = FAMILY_V4;
		p->key.proto = ip.protocol;
		__builtin_memcpy(p->key.saddr, &ip.saddr, 4);
		__builtin_memcpy(p->key.daddr, &ip.daddr, 4);
		p->l4off = sizeof(struct ethhdr) + ip.ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + offsetof(struct ipv6hdr, nexthdr), &p->key.proto, 1) ||
		    bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + offsetof(struct ipv6hdr, saddr), p->key.saddr, 32))
			return -1;
		p->key.family = FAMILY_V6;
		p->l4off = sizeof(struct ethhdr) + sizeof(struct ipv6hdr);
	} else {
		return -1;
	}
	if (p->key.proto != IPPROTO_TCP && p->key.proto != IPPROTO_UDP)
		return -1;
	if (bpf_skb_load_bytes(skb, p->l4off, ports, 4))
		return -1;
	p->key.sport = bpf_ntohs(ports[0]);
	p->key.dport = bpf_ntohs(ports[1]);
	return 0;
}

/* lb_rewrite replaces the source (src) or destination address and port of
 * the packet p describes, keeping the IPv4 header checksum and the L4
 * checksum (its pseudo-header included) valid. A UDP checksum of zero (none)
 * stays zero. */
static __always_inline int lb_rewrite(struct __sk_buff *skb, struct lb_scratch *s, const struct lb_pkt *p,
				      bool src, const __u8 *addr, __u16 port)
{
	__u32 csum_off = p->l4off + (p->key.proto == IPPROTO_TCP ? 16 : 6);
	__u64 l4flags = p->key.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be16 oport = bpf_htons(src ? p->key.sport : p->key.dport), nport = bpf_htons(port);
	__u32 port_off = p->l4off + (src ? 0 : 2);

	if (p->key.family == FAMILY_V4) {
		__u32 addr_off = sizeof(struct ethhdr) + (src ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr));
		__be32 oa, na;

		__builtin_memcpy(&oa, src ? p->key.saddr : p->key.daddr, 4);
		__builtin_memcpy(&na, addr, 4);
		if (oa != na) {
			if (bpf_l4_csum_replace(skb, csum_off, oa, na, BPF_F_PSEUDO_HDR | l4flags | 4) ||
			    bpf_l3_csum_replace(skb, sizeof(struct ethhdr) + offsetof(struct iphdr, check), oa, na, 4) ||
			    bpf_skb_store_bytes(skb, addr_off, &na, 4, 0))
				return -1;
		}
	} else {
		__u32 addr_off = sizeof(struct ethhdr) + (src ? offsetof(struct ipv6hdr, saddr) : offsetof(struct ipv6hdr, daddr));
		__s64 diff;

		__builtin_memcpy(s->oa, src ? p->key.saddr : p->key.daddr, 16);
		__builtin_memcpy(s->na, addr, 16);
		diff = bpf_csum_diff(s->oa, 16, s->na, 16, 0);
		if (diff < 0 ||
		    bpf_l4_csum_replace(skb, csum_off, 0, (__u32)diff, BPF_F_PSEUDO_HDR | l4flags) ||
		    bpf_skb_store_bytes(skb, addr_off, s->na, 16, 0))
			return -1;
	}
	if (oport != nport) {
		if (bpf_l4_csum_replace(skb, csum_off, oport, nport, l4flags | 2) ||
		    bpf_skb_store_bytes(skb, port_off, &nport, 2, 0))
			return -1;
	}
	return 0;
}

/* lb_hash hashes the tuple: the same connection hashes alike on every
 * node, so any node would pick the same backend for it. */
static __always_inline __u32 lb_hash(const struct ct_key *k)
{
	const __u32 *s = (const __u32 *)k->saddr, *d = (const __u32 *)k->daddr;
	__u32 h = 0x811c9dc5 ^ k->proto;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		h = (h ^ s[i]) * 0x01000193;
		h = (h ^ d[i]) * 0x01000193;
	}
	h = (h ^ ((__u32)k->sport << 16 | k->dport)) * 0x01000193;
	/* murmur3's finaliser: every input bit moves every output bit. */
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* lb_pick finds the backend for a packet of service svc: its connection's
 * (unless that backend is gone), the client's affinity, or the Maglev slot
 * of its hash. It returns the backend's id and copies it to s->be, or 0. */
static __always_inline __u32 lb_pick(struct lb_scratch *s, const struct lb_svc *svc, __u64 now)
{
	const struct lb_pkt *p = &s->p;
	struct lb_ct_entry *ce;
	struct lb_affinity *af;
	struct lb_backend *b;
	__u32 id = 0, slot, svc_id = svc->id, aff = svc->affinity_sec;
	__u64 life;
	void *table;
	__u32 *slotp;

	__builtin_memset(&s->ak, 0, sizeof(s->ak));
	s->ak.svc_id = svc_id;
	s->ak.family = p->key.family;
	__builtin_memcpy(s->ak.addr, p->key.saddr, 16);

	life = p->key.proto == IPPROTO_TCP ? cfg_ct_tcp_ns : cfg_ct_other_ns;
	ce = bpf_map_lookup_elem(&lb_ct, &p->key);
	if (ce && now - ce->last_seen <= life) {
		id = ce->backend_id;
		b = bpf_map_lookup_elem(&lb_backends, &id);
		if (b) {
			s->be = *b;
			if (now - ce->last_seen > CT_REFRESH_NS)
				ce->last_seen = now;
			goto affinity;
		}
		/* Its backend was removed: pick again. */
	}
	if (aff) {
		af = bpf_map_lookup_elem(&lb_affinity, &s->ak);
		if (af && now - af->last_seen <= (__u64)aff * 1000000000ULL) {
			id = af->backend_id;
			b = bpf_map_lookup_elem(&lb_backends, &id);
			if (b)
				goto picked;
		}
	}
	if (!svc->table_size)
		return 0;
	slot = lb_hash(&p->key) % svc->table_size;
	table = bpf_map_lookup_elem(&lb_maglev, &svc_id);
	if (!table)
		return 0;
	slotp = bpf_map_lookup_elem(table, &slot);
	if (!slotp)
		return 0;
	id = *slotp;
	b = bpf_map_lookup_elem(&lb_backends, &id);
	if (!b)
		return 0;
picked:
	s->be = *b;
	s->ce.last_seen = now;
	s->ce.backend_id = id;
	s->ce.nat_port = 0;
	s->ce.pad = 0;
	bpf_map_update_elem(&lb_ct, &p->key, &s->ce, BPF_ANY);
affinity:
	if (aff) {
		af = bpf_map_lookup_elem(&lb_affinity, &s->ak);
		if (!af || af->backend_id != id || now - af->last_seen > CT_REFRESH_NS) {
			s->af.last_seen = now;
			s->af.backend_id = id;
			s->af.pad = 0;
			bpf_map_update_elem(&lb_affinity, &s->ak, &s->af, BPF_ANY);
		}
	}
	return id;
}

/* lb_same_addr compares two 16-byte addresses. */
static __always_inline bool lb_same_addr(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* lb_nat_same reports whether a lb_nat entry is that of connection n. */
static __always_inline bool lb_nat_same(const struct lb_nat *a, const struct lb_nat *n)
{
	return a->frontend_port == n->frontend_port && a->client_port == n->client_port &&
	       lb_same_addr(a->frontend, n->frontend) && lb_same_addr(a->client, n->client);
}

/* lb_snat translates the external packet s->p, whose backend s->be lb_pick
 * chose on another node, to that backend and its source to this node's
 * address and a NAT port, so that the backend's replies come back here
 * (lb_unsnat). The connection keeps its port (lb_ct's nat_port) while its
 * lb_nat entry lives; a new one takes the first port, from a hash of its
 * tuple onwards, that no live connection to the same backend holds. It
 * returns LB_NAT (s->p then holds the new tuple), LB_NO_NAT_PORT, LB_ERROR,
 * or LB_PASS when this node has no address of the packet's family. */
static __noinline int lb_snat(struct __sk_buff *skb, __u64 now)
{
	struct lb_scratch *s = lb_scratch_get();
	struct lb_ct_entry *ce;
	struct lb_nat *cur;
	struct lb_pkt *p;
	__u32 n, start, i;
	__u16 port = 0;
	__u64 life;
	bool any = false;

	if (!s)
		return LB_ERROR;
	p = &s->p;
	__builtin_memset(&s->nk, 0, sizeof(s->nk));
	if (p->key.family == FAMILY_V4) {
		__be32 a = cfg_node_ipv4;

		__builtin_memcpy(s->nk.daddr, &a, 4);
		any = a != 0;
	} else {
#pragma unroll
		for (i = 0; i < 16; i++) {
			s->nk.daddr[i] = cfg_node_ipv6[i];
			any |= cfg_node_ipv6[i] != 0;
		}
	}
	if (!any)
		return LB_PASS;
	__builtin_memcpy(s->nk.saddr, s->be.addr, 16);
	s->nk.sport = s->be.port;
	s->nk.proto = p->key.proto;
	s->nk.family = p->key.family;
	__builtin_memcpy(s->nat.frontend, p->key.daddr, 16);
	__builtin_memcpy(s->nat.client, p->key.saddr, 16);
	s->nat.frontend_port = p->key.dport;
	s->nat.client_port = p->key.sport;
	s->nat.pad = 0;
	s->nat.last_seen = now;
	life = p->key.proto == IPPROTO_TCP ? cfg_ct_tcp_ns : cfg_ct_other_ns;

	ce = bpf_map_lookup_elem(&lb_ct, &p->key);
	if (ce && ce->nat_port) {
		s->nk.dport = ce->nat_port;
		cur = bpf_map_lookup_elem(&lb_nat, &s->nk);
		if (cur && lb_nat_same(cur, &s->nat)) {
			port = s->nk.dport;
			if (now - cur->last_seen > CT_REFRESH_NS)
				cur->last_seen = now;
		}
	}
	if (!port) {
		n = (__u32)cfg_nat_port_max - (__u32)cfg_nat_port_min + 1;
		if (cfg_nat_port_max < cfg_nat_port_min || !n)
			return LB_NO_NAT_PORT; /* Go never writes this */
		start = lb_hash(&p->key);
		for (i = 0; i < LB_NAT_TRIES; i++) {
			__u16 cand = cfg_nat_port_min + (start + i) % n;

			s->nk.dport = cand;
			cur = bpf_map_lookup_elem(&lb_nat, &s->nk);
			if (cur && !lb_nat_same(cur, &s->nat) && now - cur->last_seen <= life)
				continue; /* a live connection's */
			if (bpf_map_update_elem(&lb_nat, &s->nk, &s->nat, cur ? BPF_ANY : BPF_NOEXIST))
				continue; /* another CPU took it a moment ago */
			port = cand;
			break;
		}
		if (!port)
			return LB_NO_NAT_PORT;
		if (ce)
			ce->nat_port = port;
	}
	if (lb_rewrite(skb, s, p, false, s->be.addr, s->be.port))
		return LB_ERROR;
	__builtin_memcpy(p->key.daddr, s->be.addr, 16);
	p->key.dport = s->be.port;
	if (lb_rewrite(skb, s, p, true, s->nk.daddr, port))
		return LB_ERROR;
	__builtin_memcpy(p->key.saddr, s->nk.daddr, 16);
	p->key.sport = port;
	return LB_NAT;
}

/* lb_remote reports whether the ipcache names another node for the
 * backend s->be: where lb_snat's packet is forwarded. */
static __always_inline bool lb_remote(struct lb_scratch *s)
{
	struct remote_info *ri;
	__be32 a;

	if (s->be.family == FAMILY_V4) {
		__builtin_memcpy(&a, s->be.addr, 4);
		ri = lookup_ipcache4(a);
	} else {
		ri = lookup_ipcache6((const struct in6_addr *)s->be.addr);
	}
	if (!ri || !ri->node_family)
		return false;
	if (ri->node_family == FAMILY_V4) {
		__builtin_memcpy(&a, ri->node, 4);
		return a != cfg_node_ipv4;
	}
	return true;
}

/* lb_dnat translates the packet s->p (parsed by lb_parse) addressed to a
 * frontend to its backend, records the reverse translation for the
 * replies, and updates s->p to the new destination (s->frontend keeps the
 * old one). External says the packet came from outside the cluster: only
 * External frontends serve it; a backend on another node (by the ipcache)
 * gets it through lb_snat (LB_NAT), and one that is neither local nor known
 * leaves it untouched (LB_PASS). It returns LB_DNAT | 0x100 for a hairpin:
 * the backend is the client itself (see lb_hairpin). */
static __noinline __attribute__((unused)) int lb_dnat(struct __sk_buff *skb, bool external)
{
	struct lb_scratch *s = lb_scratch_get();
	struct lb_revnat *cur;
	struct lb_svc *svc;
	struct lb_pkt *p;
	bool hairpin;
	__u64 now;

	if (!s)
		return LB_PASS;
	p = &s->p;
	__builtin_memcpy(s->frontend, p->key.daddr, 16);
	__builtin_memset(&s->sk, 0, sizeof(s->sk));
	__builtin_memcpy(s->sk.addr, p->key.daddr, 16);
	s->sk.port = p->key.dport;
	s->sk.proto = p->key.proto;
	s->sk.family = p->key.family;
	svc = bpf_map_lookup_elem(&lb_services, &s->sk);
	if (!svc)
		return LB_PASS;
	if (external && !(svc->flags & LB_SVC_F_EXTERNAL))
		return LB_PASS;
	if (!svc->backends)
		return LB_NO_BACKEND;
	now = bpf_ktime_get_ns();
	if (!lb_pick(s, svc, now))
		return LB_NO_BACKEND;
	if (s->be.family != p->key.family)
		return LB_NO_BACKEND; /* Go never writes this */
	if (external) {
		struct endpoint_key *ek = (struct endpoint_key *)&s->rk;

		__builtin_memset(ek, 0, sizeof(*ek));
		ek->family = s->be.family;
		__builtin_memcpy(ek->addr, s->be.addr, 16);
		if (!bpf_map_lookup_elem(&endpoints, ek)) {
			if (!lb_remote(s))
				return LB_PASS;
			return lb_snat(skb, now);
		}
	}

	/* The reply comes from the backend to the client, or for a hairpin to
	 * the frontend address the client's source is rewritten to. */
	hairpin = lb_same_addr(s->be.addr, p->key.saddr);
	__builtin_memset(&s->rk, 0, sizeof(s->rk));
	__builtin_memcpy(s->rk.saddr, s->be.addr, 16);
	__builtin_memcpy(s->rk.daddr, hairpin ? p->key.daddr : p->key.saddr, 16);
	s->rk.sport = s->be.port;
	s->rk.dport = p->key.sport;
	s->rk.proto = p->key.proto;
	s->rk.family = p->key.family;
	__builtin_memcpy(s->rv.addr, p->key.daddr, 16);
	__builtin_memcpy(s->rv.client, p->key.saddr, 16);
	s->rv.port = p->key.dport;
	s->rv.flags = hairpin ? LB_REVNAT_F_HAIRPIN : 0;
	s->rv.pad = 0;
	cur = bpf_map_lookup_elem(&lb_revnat, &s->rk);
	if (!cur || cur->port != s->rv.port || cur->flags != s->rv.flags || !lb_same_addr(cur->addr, s->rv.addr) ||
	    !lb_same_addr(cur->client, s->rv.client))
		bpf_map_update_elem(&lb_revnat, &s->rk, &s->rv, BPF_ANY);
	if (lb_rewrite(skb, s, p, false, s->be.addr, s->be.port))
		return LB_ERROR;
	__builtin_memcpy(p->key.daddr, s->be.addr, 16);
	p->key.dport = s->be.port;
	return hairpin ? LB_DNAT | 0x100 : LB_DNAT;
}

/* lb_hairpin rewrites the source of a packet the client sends to itself
 * through a frontend (s->p after lb_dnat, so its destination is the client)
 * to the frontend's address. The client's kernel would drop a packet from
 * one of its own addresses arriving from outside (no accept_local), and the
 * frontend address is one it can reply to that no workload uses as a
 * source: the reply, frontend address as destination, meets the revnat
 * entry at the client's veth (lxc.c lxc_reply), which restores both ends.
 * The source port is kept, so the tuple stays unique per client
 * connection. */
static __always_inline int lb_hairpin(struct __sk_buff *skb, struct lb_scratch *s)
{
	if (lb_rewrite(skb, s, &s->p, true, s->frontend, s->p.key.sport))
		return -1;
	__builtin_memcpy(s->p.key.saddr, s->frontend, 16);
	return 0;
}

/* lb_revnat_apply rewrites the reply s->r back to come from the frontend
 * (and for a hairpin to go to the client's own address), updating s->r. */
static __always_inline int lb_revnat_apply(struct __sk_buff *skb, struct lb_scratch *s, const struct lb_revnat *rv)
{
	struct lb_pkt *p = &s->r;

	s->rv = *rv;
	if (lb_rewrite(skb, s, p, true, s->rv.addr, s->rv.port))
		return -1;
	__builtin_memcpy(p->key.saddr, s->rv.addr, 16);
	p->key.sport = s->rv.port;
	if (s->rv.flags & LB_REVNAT_F_HAIRPIN) {
		if (lb_rewrite(skb, s, p, false, s->rv.client, p->key.dport))
			return -1;
		__builtin_memcpy(p->key.daddr, s->rv.client, 16);
	}
	return 0;
}

/* lb_rev_nat translates a reply of a connection this node translated, if
 * the packet is one (one hash lookup otherwise). It returns 1 when it
 * rewrote the packet (s->r then holds the new tuple), 0 when the packet is
 * no such reply, -1 on failure. */
static __noinline int lb_rev_nat(struct __sk_buff *skb)
{
	struct lb_scratch *s = lb_scratch_get();
	struct lb_revnat *rv;

	if (!s || lb_parse(skb, &s->r))
		return 0;
	rv = bpf_map_lookup_elem(&lb_revnat, &s->r.key);
	if (!rv)
		return 0;
	return lb_revnat_apply(skb, s, rv) ? -1 : 1;
}

/* lb_unsnat translates a reply to a connection lb_snat translated back:
 * from the frontend to the client. It returns 1 when it rewrote the packet
 * (s->r then holds the new tuple), 0 when the packet is no such reply, -1
 * on failure. The entry is refreshed, so it lives as long as either
 * direction carries packets. */
static __noinline __attribute__((unused)) int lb_unsnat(struct __sk_buff *skb)
{
	struct lb_scratch *s = lb_scratch_get();
	struct lb_nat *cur;
	struct lb_pkt *p;
	__u64 now;

	if (!s || lb_parse(skb, &s->r))
		return 0;
	p = &s->r;
	cur = bpf_map_lookup_elem(&lb_nat, &p->key);
	if (!cur)
		return 0;
	now = bpf_ktime_get_ns();
	if (now - cur->last_seen > CT_REFRESH_NS)
		cur->last_seen = now;
	s->nat = *cur;
	if (lb_rewrite(skb, s, p, true, s->nat.frontend, s->nat.frontend_port))
		return -1;
	__builtin_memcpy(p->key.saddr, s->nat.frontend, 16);
	p->key.sport = s->nat.frontend_port;
	if (lb_rewrite(skb, s, p, false, s->nat.client, s->nat.client_port))
		return -1;
	__builtin_memcpy(p->key.daddr, s->nat.client, 16);
	p->key.dport = s->nat.client_port;
	return 1;
}
