/* The policy seam: every delivery to a local endpoint, in every mode and
 * from every attach point, goes through policy_ingress with the source
 * identity the datapath resolved (from the sending endpoint, the VNI, or the
 * ipcache). */
#pragma once

#include "common.h"

/* policy_ingress decides whether a packet from src_identity may reach the
 * local endpoint dst, and returns TC_ACT_OK to deliver it or TC_ACT_SHOT.
 *
 * FOR NOW IT ALWAYS ALLOWS: it only counts {src identity, dst identity} in
 * ingress_seen, which is how the tests prove each receiver resolved the
 * sender's identity. The policy issue replaces this body with the lookup in
 * the per-endpoint policy map; the callers and the signature stay. */
static __always_inline int policy_ingress(struct __sk_buff *skb, __u32 src_identity,
					  const struct endpoint_info *dst)
{
	struct seen_key k = {.src_identity = src_identity, .dst_identity = dst->identity};
	__u64 *v, one = 1;

	(void)skb;
	v = bpf_map_lookup_elem(&ingress_seen, &k);
	if (v)
		*v += 1; /* per-CPU value */
	else
		bpf_map_update_elem(&ingress_seen, &k, &one, BPF_NOEXIST);
	return TC_ACT_OK;
}

/* deliver_local hands the packet, whose Ethernet header is at offset 0, to
 * the local endpoint ep: it gives it the MACs the workload expects (from its
 * gateway, to itself), asks policy, and moves it straight into the
 * workload's namespace (bpf_redirect_peer skips the host veth's backlog). */
static __always_inline int deliver_local(struct __sk_buff *skb, __u32 src_identity,
					 const struct endpoint_info *ep)
{
	struct endpoint_info e = *ep;
	__u8 macs[12];

	if (policy_ingress(skb, src_identity, &e) != TC_ACT_OK)
		return drop(METRIC_DROP_POLICY);
	__builtin_memcpy(macs, e.mac, 6);
	__builtin_memcpy(macs + 6, e.host_mac, 6);
	if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0))
		return TC_ACT_SHOT;
	return bpf_redirect_peer(e.ifindex, 0);
}
