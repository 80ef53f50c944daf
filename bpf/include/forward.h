/* Forwarding to other nodes and out of the node: encapsulation by mode
 * (lxc.c for workload traffic, underlay.c for external traffic translated
 * to a backend on another node) and the FIB-driven redirect of replies to
 * clients outside the cluster. */
#pragma once

#include "common.h"
#include "geneve.h"
#include "policy.h"

/* Debian's 6.1 UAPI headers predate BPF_FIB_LOOKUP_SKIP_NEIGH (Linux
 * 6.3); its value is ABI. */
#define FABRIC_FIB_LOOKUP_SKIP_NEIGH (1U << 2)

/* encap_geneve wraps the packet (Ethernet header at offset 0) in outer
 * IPv4/UDP/Geneve headers addressed to node, and hands it to the underlay
 * with the kernel resolving the outer MACs. */
static __always_inline int encap_geneve(struct __sk_buff *skb, __u32 vni, __be32 node)
{
	struct geneve_encap h = {};
	struct bpf_redir_neigh nh = {.nh_family = AF_INET};
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
		      BPF_F_ADJ_ROOM_ENCAP_L2(sizeof(struct ethhdr)) | BPF_F_ADJ_ROOM_ENCAP_L2_ETH;
	__be16 outer_proto = bpf_htons(ETH_P_IP);
	__u32 hash, len;

	if (bpf_skb_load_bytes(skb, 0, &h.inner, sizeof(h.inner)))
		return drop(skb, METRIC_DROP_ENCAP);
	/* The flow hash becomes the UDP source port, so the underlay's ECMP
	 * spreads flows as it would spread the flows themselves. */
	hash = bpf_get_hash_recalc(skb);
	if (bpf_skb_adjust_room(skb, GENEVE_ENCAP_LEN, BPF_ADJ_ROOM_MAC, flags))
		return drop(skb, METRIC_DROP_ENCAP);

	len = skb->len - sizeof(struct ethhdr);
	if (len > 0xffff)
		len = 0xffff; /* a GSO packet: segmentation rewrites it */
	h.ip.version = 4;
	h.ip.ihl = 5;
	h.ip.ttl = 64;
	h.ip.protocol = IPPROTO_UDP;
	h.ip.frag_off = bpf_htons(0x4000); /* DF: never fragment the overlay */
	h.ip.tot_len = bpf_htons(len);
	h.ip.saddr = cfg_node_ipv4;
	h.ip.daddr = node;
	h.ip.check = csum_fold(csum_add(&h.ip, sizeof(h.ip), 0));

	h.udp.source = bpf_htons(0xc000 | (hash & 0x3fff));
	h.udp.dest = bpf_htons(cfg_geneve_port);
	h.udp.len = bpf_htons(len - sizeof(struct iphdr));
	h.udp.check = 0; /* allowed over IPv4 (RFC 8926 3.3) */

	h.gnv.proto = bpf_htons(ETH_P_TEB_);
	h.gnv.vni[0] = vni >> 16;
	h.gnv.vni[1] = vni >> 8;
	h.gnv.vni[2] = vni;

	if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &h, sizeof(h), 0) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &outer_proto, 2, 0))
		return drop(skb, METRIC_DROP_ENCAP);
	nh.ipv4_nh = node;
	return bpf_redirect_neigh(cfg_underlay_ifindex, &nh, sizeof(nh), 0);
}

/* forward_remote sends a packet from a local endpoint with identity src to
 * the node that owns its destination, by the configured mode. */
static __always_inline int forward_remote(struct __sk_buff *skb, __u32 src,
					  const struct remote_info *dst, bool v6)
{
	struct bpf_redir_neigh nh = {};
	__be32 node4 = 0;

	if (dst->node_family == FAMILY_V4)
		__builtin_memcpy(&node4, dst->node, 4);

	if (cfg_mode == MODE_VXLAN) {
		struct bpf_tunnel_key key = {};

		if (!node4)
			return drop(skb, METRIC_DROP_ENCAP);
		key.tunnel_id = src; /* the VNI carries the source identity */
		key.remote_ipv4 = bpf_ntohl(node4);
		key.tunnel_ttl = 64;
		if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX))
			return drop(skb, METRIC_DROP_ENCAP);
		return bpf_redirect(cfg_vxlan_ifindex, 0);
	}
	if (cfg_mode == MODE_GENEVE) {
		if (!node4)
			return drop(skb, METRIC_DROP_ENCAP);
		return encap_geneve(skb, src, node4);
	}

	/* Native: this node is a router hop. */
	if (v6) {
		__u8 hl;

		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + offsetof(struct ipv6hdr, hop_limit), &hl, 1) || hl <= 1)
			return TC_ACT_OK; /* the stack sends time exceeded */
		hl--;
		if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr) + offsetof(struct ipv6hdr, hop_limit), &hl, 1, 0))
			return TC_ACT_SHOT;
	} else {
		__u16 oldw, neww; /* TTL and protocol share a 16-bit word */
		__u32 off = sizeof(struct ethhdr) + offsetof(struct iphdr, ttl);

		if (bpf_skb_load_bytes(skb, off, &oldw, 2))
			return TC_ACT_OK;
		if (((__u8 *)&oldw)[0] <= 1)
			return TC_ACT_OK;
		neww = oldw;
		((__u8 *)&neww)[0]--;
		if (bpf_l3_csum_replace(skb, sizeof(struct ethhdr) + offsetof(struct iphdr, check), oldw, neww, 2) ||
		    bpf_skb_store_bytes(skb, off, &neww, 2, 0))
			return TC_ACT_SHOT;
	}
	if (dst->node_family == FAMILY_V6) {
		nh.nh_family = AF_INET6;
		__builtin_memcpy(nh.ipv6_nh, dst->node, 16);
	} else {
		nh.nh_family = AF_INET;
		nh.ipv4_nh = node4;
	}
	return bpf_redirect_neigh(cfg_underlay_ifindex, &nh, sizeof(nh), 0);
}

/* redirect_fib sends the packet whose tuple is k (Ethernet header at 0)
 * out of the underlay interface towards its destination, by the node's
 * routes (a FIB lookup restricted to that interface, the kernel resolving
 * the nexthop's MAC), without the node's stack judging it: a reply that
 * comes from the node's own address (a node port) would be a martian
 * there. A destination not routed through the underlay interface is left
 * to the stack. */
static __always_inline int redirect_fib(struct __sk_buff *skb, const struct ct_key *k)
{
	struct bpf_fib_lookup p = {};
	struct bpf_redir_neigh nh = {};
	long r;

	p.ifindex = cfg_underlay_ifindex;
	p.l4_protocol = k->proto;
	p.sport = bpf_htons(k->sport);
	p.dport = bpf_htons(k->dport);
	if (k->family == FAMILY_V4) {
		p.family = AF_INET;
		__builtin_memcpy(&p.ipv4_src, k->saddr, 4);
		__builtin_memcpy(&p.ipv4_dst, k->daddr, 4);
	} else {
		p.family = AF_INET6;
		__builtin_memcpy(p.ipv6_src, k->saddr, 16);
		__builtin_memcpy(p.ipv6_dst, k->daddr, 16);
	}
	r = bpf_fib_lookup(skb, &p, sizeof(p), BPF_FIB_LOOKUP_OUTPUT | FABRIC_FIB_LOOKUP_SKIP_NEIGH);
	if (r != BPF_FIB_LKUP_RET_SUCCESS)
		return TC_ACT_OK;
	/* p now holds the nexthop: the gateway, or the destination on link. */
	if (p.family == AF_INET6) {
		nh.nh_family = AF_INET6;
		__builtin_memcpy(nh.ipv6_nh, p.ipv6_dst, 16);
	} else {
		nh.nh_family = AF_INET;
		nh.ipv4_nh = p.ipv4_dst;
	}
	return bpf_redirect_neigh(p.ifindex, &nh, sizeof(nh), 0);
}
