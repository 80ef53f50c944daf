/* Identity-based L3/L4 policy with connection tracking. Every delivery to a
 * local endpoint, in every mode and from every attach point, goes through
 * policy_ingress with the source identity the datapath resolved (from the
 * sending endpoint, the VNI, or the ipcache); everything a workload sends
 * goes through policy_egress in lxc.c with the destination's identity.
 *
 * A packet of a tracked connection (conntrack.h) passes. Any other packet
 * is judged by the local endpoint's entries in the policy map: a matching
 * Deny drops it, else a matching Allow passes it, else it is dropped when
 * the endpoint enforces that direction (EP_F_*_ENFORCED, default deny) and
 * passes when it does not. Whatever passes is tracked, so its replies and
 * later packets pass without policy, whatever the other direction says. */
#pragma once

#include "common.h"
#include "conntrack.h"
#include "flows.h"
#include "lb.h"

/* policy_verdict looks up the entries of the endpoint behind ifindex that
 * match peer, f's protocol and port: every combination of {peer, any} x
 * {port, any} x {protocol, any}, at most 8 lookups. An entry for any
 * protocol with a port matches only TCP, UDP and SCTP. A Deny anywhere wins
 * over every Allow. */
static __always_inline __u8 policy_verdict(__u32 ifindex, __u8 dir, __u32 peer, const struct flow *f)
{
	__u8 verdict = VERDICT_NONE;
	__u16 port = f->l4 ? f->port : 0;

#pragma unroll
	for (int i = 0; i < 8; i++) {
		struct policy_key k = {.ifindex = ifindex, .dir = dir};
		struct policy_value *v;

		if (!(i & 1) && peer == 0)
			continue; /* the same as the wildcard lookup */
		if (!(i & 2) && port == 0)
			continue;
		if ((i & 4) && !(i & 2) && !port_bearing(f->key.proto))
			continue;
		k.identity = (i & 1) ? 0 : peer;
		k.dport = (i & 2) ? 0 : port;
		k.proto = (i & 4) ? 0 : f->key.proto;
		v = bpf_map_lookup_elem(&policy, &k);
		if (!v)
			continue;
		if (v->verdict == VERDICT_DENY)
			return VERDICT_DENY;
		if (v->verdict == VERDICT_ALLOW)
			verdict = VERDICT_ALLOW;
	}
	return verdict;
}

static __always_inline void count_seen(__u32 src_identity, __u32 dst_identity)
{
	struct seen_key k = {.src_identity = src_identity, .dst_identity = dst_identity};
	__u64 *v, one = 1;

	v = bpf_map_lookup_elem(&ingress_seen, &k);
	if (v)
		*v += 1; /* per-CPU value */
	else
		bpf_map_update_elem(&ingress_seen, &k, &one, BPF_NOEXIST);
}

/* policy_allows applies the endpoint's policy for direction dir to a packet
 * of a new connection. */
static __always_inline bool policy_allows(__u32 ifindex, __u32 flags, __u8 dir, __u32 peer, const struct flow *f)
{
	__u32 enforced = dir == DIR_INGRESS ? EP_F_INGRESS_ENFORCED : EP_F_EGRESS_ENFORCED;
	__u32 entries = dir == DIR_INGRESS ? EP_F_INGRESS_ENTRIES : EP_F_EGRESS_ENTRIES;
	__u8 v;

	if (!(flags & (enforced | entries)))
		return true;
	v = policy_verdict(ifindex, dir, peer, f);
	if (v == VERDICT_DENY)
		return false;
	return v == VERDICT_ALLOW || !(flags & enforced);
}

/* policy_ingress decides whether the packet (Ethernet header at offset 0)
 * from src_identity may reach the local endpoint dst, and returns TC_ACT_OK
 * to deliver it or TC_ACT_SHOT. Delivered packets are counted by {src
 * identity, dst identity} in ingress_seen. */
static __always_inline int policy_ingress(struct __sk_buff *skb, __u32 src_identity,
					  const struct endpoint_info *dst)
{
	struct flow f;
	__u64 now;
	int ct;

	if (parse_flow(skb, &f)) {
		/* Unreadable IP header: no tuple to judge. */
		if (dst->flags & EP_F_INGRESS_ENFORCED)
			goto deny;
		goto pass;
	}
	if (f.exempt)
		goto pass;
	now = bpf_ktime_get_ns();
	ct = ct_lookup(&f, DIR_INGRESS, now);
	if (ct == CT_ENDED)
		emit_flow(&f, dst->ifindex, src_identity, dst->identity,
			  FLOW_META(FLOW_EV_END, DIR_INGRESS, 0));
	if (ct != CT_NEW)
		goto pass;
	if (!policy_allows(dst->ifindex, dst->flags, DIR_INGRESS, src_identity, &f))
		goto deny;
	if (ct_create(&f, DIR_INGRESS, now))
		emit_flow(&f, dst->ifindex, src_identity, dst->identity,
			  FLOW_META(FLOW_EV_NEW, DIR_INGRESS, 0));
pass:
	count_seen(src_identity, dst->identity);
	return TC_ACT_OK;
deny:
	emit_flow(&f, dst->ifindex, src_identity, dst->identity,
		  FLOW_META(FLOW_EV_DROP, DIR_INGRESS, METRIC_DROP_POLICY));
	return TC_ACT_SHOT;
}

/* policy_egress decides whether the packet (Ethernet header at offset 0)
 * the endpoint behind this veth sent may go to a destination of identity
 * dst_identity: TC_ACT_OK or TC_ACT_SHOT. src_verified says whether the
 * caller checked that the source address is the endpoint's; when it did not
 * (traffic leaving the cluster), an enforcing endpoint's packet with another
 * source is dropped, so that it cannot pass as the reply of someone else's
 * connection. */
static __always_inline int policy_egress(struct __sk_buff *skb, __u32 dst_identity, bool src_verified)
{
	__u32 ifindex = skb->ifindex;
	struct endpoint_info *src;
	__u32 flags, src_identity;
	struct flow f;
	__u64 now;
	int ct;

	src = bpf_map_lookup_elem(&lxc_devices, &ifindex);
	if (!src)
		return TC_ACT_OK;
	flags = src->flags;
	src_identity = src->identity;
	if (parse_flow(skb, &f)) {
		if (flags & EP_F_EGRESS_ENFORCED)
			goto deny;
		return TC_ACT_OK;
	}
	if (f.exempt)
		return TC_ACT_OK;
	if (!src_verified && flags) {
		struct endpoint_key k = {.family = f.key.family};
		struct endpoint_info *own;

		__builtin_memcpy(k.addr, f.key.saddr, 16);
		own = bpf_map_lookup_elem(&endpoints, &k);
		if (!own || own->ifindex != ifindex)
			goto deny;
	}
	now = bpf_ktime_get_ns();
	ct = ct_lookup(&f, DIR_EGRESS, now);
	if (ct == CT_ENDED)
		emit_flow(&f, ifindex, src_identity, dst_identity, FLOW_META(FLOW_EV_END, DIR_EGRESS, 0));
	if (ct != CT_NEW)
		return TC_ACT_OK;
	if (!policy_allows(ifindex, flags, DIR_EGRESS, dst_identity, &f))
		goto deny;
	if (ct_create(&f, DIR_EGRESS, now))
		emit_flow(&f, ifindex, src_identity, dst_identity, FLOW_META(FLOW_EV_NEW, DIR_EGRESS, 0));
	return TC_ACT_OK;
deny:
	emit_flow(&f, ifindex, src_identity, dst_identity,
		  FLOW_META(FLOW_EV_DROP, DIR_EGRESS, METRIC_DROP_POLICY));
	return TC_ACT_SHOT;
}

/* redirect_local gives the packet the MACs the workload behind ep expects
 * (from its gateway, to itself) and moves it straight into the workload's
 * namespace (bpf_redirect_peer skips the host veth's backlog). */
static __always_inline int redirect_local(struct __sk_buff *skb, const struct endpoint_info *ep)
{
	struct endpoint_info e = *ep;
	__u8 macs[12];

	__builtin_memcpy(macs, e.mac, 6);
	__builtin_memcpy(macs + 6, e.host_mac, 6);
	if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0))
		return TC_ACT_SHOT;
	return bpf_redirect_peer(e.ifindex, 0);
}

/* deliver_local hands the packet, whose Ethernet header is at offset 0, to
 * the local endpoint ep: it asks policy, which judges the packet as the
 * backend sent it, then rewrites a service reply back to its frontend
 * (lb.h: the connection was translated on this node, the client's), and
 * redirects it into the workload. */
static __always_inline int deliver_local(struct __sk_buff *skb, __u32 src_identity,
					 const struct endpoint_info *ep)
{
	struct endpoint_info e = *ep;
	__u8 macs[12];

	if (policy_ingress(skb, src_identity, &e) != TC_ACT_OK) {
		count(METRIC_DROP_POLICY); /* policy_ingress reported it */
		return TC_ACT_SHOT;
	}
	if (lb_rev_nat(skb) < 0)
		return TC_ACT_SHOT;
	__builtin_memcpy(macs, e.mac, 6);
	__builtin_memcpy(macs + 6, e.host_mac, 6);
	if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0))
		return TC_ACT_SHOT;
	return bpf_redirect_peer(e.ifindex, 0);
}
