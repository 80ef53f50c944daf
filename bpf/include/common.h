/* Shared definitions of the Fabric datapath: load-time configuration, the
 * pinned maps every program shares, and small helpers for parsing and
 * delivering packets. Each program file (one per attach point) includes this
 * header; the maps are pinned by name, so the three objects loaded from the
 * three files share one instance of each map per node. The Go side mirrors
 * every struct here in types.go; keep both in step. */
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
	__u32 flags;      /* reserved */
};

/* LPM trie key: prefixlen counts the family word too (32 + address bits),
 * so IPv4 and IPv6 prefixes live in one trie without ever matching each
 * other. */
struct ipcache_key {
	__u32 prefixlen;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
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

/* Indexes of the metrics map. */
enum {
	METRIC_DROP_UNKNOWN_DST = 0, /* decapsulated for no local endpoint */
	METRIC_DROP_SPOOFED_SRC,     /* source is not the sending endpoint's */
	METRIC_DROP_ENCAP,           /* a helper failed while encapsulating */
	METRIC_DROP_DECAP,           /* a helper failed while decapsulating */
	METRIC_DROP_POLICY,          /* policy_ingress said no */
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

static __always_inline int drop(__u32 reason)
{
	count(reason);
	return TC_ACT_SHOT;
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

static __always_inline struct remote_info *lookup_ipcache4(__be32 addr)
{
	struct ipcache_key k = {.prefixlen = 32 + 32, .family = FAMILY_V4};

	__builtin_memcpy(k.addr, &addr, 4);
	return bpf_map_lookup_elem(&ipcache, &k);
}

static __always_inline struct remote_info *lookup_ipcache6(const struct in6_addr *addr)
{
	struct ipcache_key k = {.prefixlen = 32 + 128, .family = FAMILY_V6};

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
