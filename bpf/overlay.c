//go:build ignore

/* overlay: TCX ingress of the node's flow-based VXLAN device (VXLAN mode).
 * The kernel has already decapsulated the packet; the tunnel key it kept
 * holds the VNI, which is the sender's identity. Packets go straight to the
 * local endpoint; a packet for an address this node does not serve is
 * dropped and counted, never routed onwards. */
#include "include/common.h"
#include "include/policy.h"

/* inner_endpoint finds the local endpoint the decapsulated frame (Ethernet
 * header at offset 0) is addressed to. */
static __always_inline struct endpoint_info *inner_endpoint(struct __sk_buff *skb, __u16 proto)
{
	if (proto == bpf_htons(ETH_P_IP)) {
		__be32 daddr;

		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + offsetof(struct iphdr, daddr), &daddr, 4))
			return NULL;
		return lookup_endpoint4(daddr);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct in6_addr daddr;

		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + offsetof(struct ipv6hdr, daddr), &daddr, 16))
			return NULL;
		return lookup_endpoint6(&daddr);
	}
	return NULL;
}

SEC("tcx/ingress")
int overlay_ingress(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	struct endpoint_info *ep;

	if (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6))
		return TC_ACT_OK;
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0))
		return drop(skb, METRIC_DROP_DECAP);
	ep = inner_endpoint(skb, skb->protocol);
	if (!ep)
		return drop(skb, METRIC_DROP_UNKNOWN_DST);
	return deliver_local(skb, key.tunnel_id, ep);
}

char __license[] SEC("license") = "Dual MIT/GPL";
