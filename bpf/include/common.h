/* Shared definitions of the Fabric datapath: load-time configuration, the
 * pinned maps every program shares, and small helpers for parsing and
 * delivering packets. Each program file (one per attach point) includes this
 * header; the maps are pinned by name, so the three objects loaded from the
 * three files share one instance of each map per node. The Go side mirrors
 * every struct here in keys.go; keep both in step. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define AF_INET6 10

/* Address families as stored in map keys: the IP version, not AF_*, so the
 * encoding does not depend on an OS's socket constants. */
#define FAMILY_V4 4
#define FAMILY_V6 6

#define MODE_VXLAN 1
#define MODE_GENEVE 2
#define MODE_NATIVE 3

/* Reserved identities (see fabric/identity). */
/* From linux/if_packet.h (skb->pkt_type), which needs libc headers. */
#define PACKET_OTHERHOST_ 3

#define IDENTITY_UNKNOWN 0
#define IDENTITY_WORLD 2

/* Debian's 6.1 UAPI headers predate the decap flags of
 * bpf_skb_adjust_room (Linux 6.3); their values are ABI. */
#define FABRIC_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define FABRIC_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)

/* Load-time configuration, rewritten by the loader before the programs are
 * loaded (CollectionSpec.Variables), so one object serves every node and mode
 * without recompiling. */
volatile const __u32 cfg_mode = MODE_VXLAN;
volatile const __u32 cfg_underlay_ifindex = 0;
volatile const __u32 cfg_vxlan_ifindex = 0;
volatile const __be32 cfg_node_ipv4 = 0;        /* network byte order */
volatile const __u8 cfg_node_ipv6[16] = {};     /* zero: none */
volatile const __u16 cfg_geneve_port = 6081;    /* host byte order */

/* Connection-tracking lifetimes in nanoseconds (Config.CT*Timeout): an
 * entry idle for longer is treated as absent; Datapath.GCConntrack deletes
 * it, or the LRU map reclaims it when it needs the room. */
volatile const __u64 cfg_ct_tcp_ns = 3600ULL * 1000000000ULL;   /* TCP, both sides seen */
volatile const __u64 cfg_ct_syn_ns = 60ULL * 1000000000ULL;     /* TCP, no reply yet */
volatile const __u64 cfg_ct_closing_ns = 10ULL * 1000000000ULL; /* TCP after FIN or RST */
volatile const __u64 cfg_ct_other_ns = 300ULL * 1000000000ULL;  /* UDP, SCTP, ICMP, others */

/* The source ports (host byte order, inclusive) that external connections
 * to a backend on another node are translated to (lb.h lb_snat): chosen
 * above the kernel's default ip_local_port_range, so the node's own
 * connections do not take them. */
volatile const __u16 cfg_nat_port_min = 61000;
volatile const __u16 cfg_nat_port_max = 65535;

struct endpoint_key {
	__u8 addr[16]; /* IPv4 in the first 4 bytes, the rest zero */
	__u8 family;   /* FAMILY_V4 or FAMILY_V6 */
	__u8 pad[3];
};

struct endpoint_info {
	__u32 ifindex; /* host side of the workload's veth */
	__u32 identity;
	__u8 mac[6];      /* the workload's interface */
	__u8 host_mac[6]; /* the host side, the workload's gateway */
	__u32 flags;      /* EP_F_* */
};

/* endpoint_info.flags: the directions in default deny, and the directions
 * that have policy entries at all (a Deny applies without default deny;
 * without entries and enforcement the policy map is not read). */
#define EP_F_INGRESS_ENFORCED (1U << 0)
#define EP_F_EGRESS_ENFORCED (1U << 1)
#define EP_F_INGRESS_ENTRIES (1U << 2)
#define EP_F_EGRESS_ENTRIES (1U << 3)

/* Directions of policy entries and connection-tracking entries, relative to
 * the local endpoint. */
#define DIR_INGRESS 0
#define DIR_EGRESS 1

#define VERDICT_NONE 0
#define VERDICT_ALLOW 1
#define VERDICT_DENY 2

/* One verdict of one local endpoint (by its host veth's ifindex) for a peer
 * identity, a destination port and a protocol; 0 in identity, dport or
 * proto is the wildcard. For ICMP and ICMPv6 the "port" is the type. */
struct policy_key {
	__u32 ifindex;
	__u32 identity;
	__u16 dport; /* host byte order */
	__u8 proto;
	__u8 dir; /* DIR_* */
};

struct policy_value {
	__u8 verdict; /* VERDICT_ALLOW or VERDICT_DENY */
	__u8 pad[3];
};

/* A connection as one local endpoint saw it: dir says whether it passed
 * that endpoint's egress (the endpoint sent the first packet) or its
 * ingress. The direction keeps the two ends of a same-node connection apart,
 * so the sender's entry never counts as the receiver's acceptance. Ports
 * are in host byte order; for ICMP echo they carry the identifier (request:
 * sport = id, dport = 0; reply: sport = 0, dport = id, so a reply's reverse
 * tuple is its request's), for other ICMP messages dport is the type. */
struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family; /* FAMILY_V4 or FAMILY_V6 */
	__u8 dir;    /* DIR_* */
	__u8 pad;
};

#define CT_F_SEEN_REPLY (1U << 0)
#define CT_F_CLOSING (1U << 1) /* TCP FIN or RST seen */

struct ct_entry {
	__u64 last_seen; /* bpf_ktime_get_ns */
	__u32 flags;     /* CT_F_* */
	__u32 pad;
};

/* The ports of a fragmented datagram, recorded from its first fragment for
 * the later ones, which carry no L4 header. */
struct frag_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 id; /* IPv4: 16 bits; IPv6: the fragment header's 32 */
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

struct frag_ports {
	__u16 sport;
	__u16 dport;
	__u16 port; /* flow.port: what policy matches */
	__u16 pad;
};

/* The ipcache is two maps: ipcache_host, a hash of the full-length entries
 * (/32 IPv4, /128 IPv6: remote endpoints, dense around each other), and
 * ipcache, an LPM trie of the shorter prefixes (pod CIDRs). A lookup tries
 * the hash first, which is what the trie would answer too (a full-length
 * match is the longest), and falls back to the trie. A trie walks one node
 * per branching level, so its cost grows with the entries packed around the
 * address looked up; a hash lookup does not. The Go side (keys.go compile)
 * puts each entry in exactly one of the two.
 *
 * LPM trie key: prefixlen counts the family word too (32 + address bits),
 * so IPv4 and IPv6 prefixes live in one trie without ever matching each
 * other. */
struct ipcache_key {
	__u32 prefixlen;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

/* ipcache_host key: a full-length address. */
struct ipcache_host_key {
	__u8 family; /* FAMILY_V4 or FAMILY_V6 */
	__u8 pad[3];
	__u8 addr[16]; /* IPv4 in the first 4 bytes, the rest zero */
};

struct remote_info {
	__u32 identity;    /* 0: unknown (world) */
	__u16 flags;       /* reserved */
	__u8 node_family;  /* 0: no tunnel endpoint/nexthop, else FAMILY_V4/V6 */
	__u8 pad;
	__u8 node[16];     /* tunnel endpoint (overlay) or nexthop (native) */
};

struct seen_key {
	__u32 src_identity;
	__u32 dst_identity;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy SEC(".maps");

/* max_entries is rewritten by the loader (Config.CTEntries). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_ports);
	__uint(max_entries, 8192);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fragments SEC(".maps");

/* Indexes of the metrics map. */
enum {
	METRIC_DROP_UNKNOWN_DST = 0, /* decapsulated for no local endpoint */
	METRIC_DROP_SPOOFED_SRC,     /* source is not the sending endpoint's */
	METRIC_DROP_ENCAP,           /* a helper failed while encapsulating */
	METRIC_DROP_DECAP,           /* a helper failed while decapsulating */
	METRIC_DROP_POLICY,          /* policy_ingress or policy_egress said no */
	METRIC_FLOW_EVENTS_LOST,     /* not a drop: the flows ring buffer was full */
	METRIC_DROP_NO_BACKEND,      /* to a service frontend without backends */
	METRIC_DROP_NAT_PORTS,       /* no free NAT port for an external connection */
	METRIC_MAX = 16,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints SEC(".maps");

/* The endpoint behind each workload veth, by the host side's ifindex: what
 * the ARP and neighbour responders answer with, whatever address is asked. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lxc_devices SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct remote_info);
	__uint(max_entries, 524288);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ipcache_host_key);
	__type(value, struct remote_info);
	__uint(max_entries, 524288);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ipcache_host SEC(".maps");

/* LRU so that a flood of identity pairs can never make counting fail. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__type(key, struct seen_key);
	__type(value, __u64);
	__uint(max_entries, 16384);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ingress_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, METRIC_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} metrics SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&metrics, &idx);

	if (v)
		*v += 1; /* per-CPU: no atomics needed */
}

/* ensure makes the first n bytes linear so direct packet access can read
 * them; it is cheap when they already are. */
static __always_inline int ensure(struct __sk_buff *skb, __u32 n)
{
	if ((void *)(long)skb->data + n <= (void *)(long)skb->data_end)
		return 0;
	if (skb->len < n)
		return -1;
	return bpf_skb_pull_data(skb, n);
}

static __always_inline struct endpoint_info *lookup_endpoint4(__be32 addr)
{
	struct endpoint_key k = {.family = FAMILY_V4};

	__builtin_memcpy(k.addr, &addr, 4);
	return bpf_map_lookup_elem(&endpoints, &k);
}

static __always_inline struct endpoint_info *lookup_endpoint6(const struct in6_addr *addr)
{
	struct endpoint_key k = {.family = FAMILY_V6};

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&endpoints, &k);
}

/* lookup_ipcache4 and lookup_ipcache6 are the only readers of the ipcache:
 * the host hash first, then the trie of shorter prefixes. */
static __always_inline struct remote_info *lookup_ipcache4(__be32 addr)
{
	struct ipcache_host_key h = {.family = FAMILY_V4};
	struct ipcache_key k = {.prefixlen = 32 + 32, .family = FAMILY_V4};
	struct remote_info *ri;

	__builtin_memcpy(h.addr, &addr, 4);
	ri = bpf_map_lookup_elem(&ipcache_host, &h);
	if (ri)
		return ri;
	__builtin_memcpy(k.addr, &addr, 4);
	return bpf_map_lookup_elem(&ipcache, &k);
}

static __always_inline struct remote_info *lookup_ipcache6(const struct in6_addr *addr)
{
	struct ipcache_host_key h = {.family = FAMILY_V6};
	struct ipcache_key k = {.prefixlen = 32 + 128, .family = FAMILY_V6};
	struct remote_info *ri;

	__builtin_memcpy(h.addr, addr, 16);
	ri = bpf_map_lookup_elem(&ipcache_host, &h);
	if (ri)
		return ri;
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&ipcache, &k);
}

/* csum_fold folds a 32-bit one's complement sum to the 16-bit checksum. */
static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* csum_add sums n bytes (n even, a compile-time constant) of buf. */
static __always_inline __u32 csum_add(const void *buf, int n, __u32 sum)
{
	const __u16 *p = buf;

#pragma unroll
	for (int i = 0; i < n / 2; i++)
		sum += p[i];
	return sum;
}
