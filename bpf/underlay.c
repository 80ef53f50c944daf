//go:build ignore

/* underlay: TCX ingress of the node's underlay interface. In Geneve mode it
 * terminates the overlay (there is no geneve module): Geneve packets for this
 * node are decapsulated here and delivered with the VNI as the sender's
 * identity. Packets for local endpoints that arrive unencapsulated (in native
 * mode, from other nodes; in every mode, from outside hosts that route pod
 * CIDRs to this node, as a BGP router does) are delivered here too, through
 * ingress policy, with the sender's identity from the ipcache. Everything
 * else, VXLAN included (the kernel's VXLAN socket takes it), goes to the
 * node's stack. */
#include "include/common.h"
#include "include/forward.h"

#define OUTER_LEN (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))

/* GENEVE_DECAPPED: from_geneve removed the encapsulation; the packet is the
 * inner one behind an Ethernet header, for the caller to deliver. */
#define GENEVE_DECAPPED 1000

/* from_geneve decapsulates a Geneve packet for this node and sets *vni to
 * the sender's identity. It returns -1 for a packet that is not one, a
 * verdict (a drop) for a bad one, or GENEVE_DECAPPED. It is a function of
 * its own so that its stack and the delivery's do not add up. */
static __noinline int from_geneve(struct __sk_buff *skb, __u32 *vni_out)
{
	struct endpoint_info *ep;
	struct genevehdr gnv;
	struct ethhdr inner;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 optlen, inner_off, vni;
	__u64 flags;
	int err;

	if (ensure(skb, OUTER_LEN))
		return -1;
	ip = (void *)(long)skb->data + sizeof(struct ethhdr);
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > (void *)(long)skb->data_end)
		return -1;
	/* Only option-less outer IPv4 headers, unfragmented, for us: the
	 * encapsulating side never sends anything else. */
	if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
	    ip->daddr != cfg_node_ipv4 || (ip->frag_off & bpf_htons(0x3fff)))
		return -1;
	if (udp->dest != bpf_htons(cfg_geneve_port))
		return -1;

	if (bpf_skb_load_bytes(skb, OUTER_LEN, &gnv, sizeof(gnv)))
		return drop(skb, METRIC_DROP_DECAP);
	if ((gnv.ver_optlen >> 6) != 0 || gnv.proto != bpf_htons(ETH_P_TEB_))
		return drop(skb, METRIC_DROP_DECAP);
	optlen = (gnv.ver_optlen & 0x3f) * 4; /* at most 252: bounded */
	vni = (__u32)gnv.vni[0] << 16 | (__u32)gnv.vni[1] << 8 | gnv.vni[2];
	inner_off = OUTER_LEN + sizeof(gnv) + optlen;
	if (bpf_skb_load_bytes(skb, inner_off, &inner, sizeof(inner)))
		return drop(skb, METRIC_DROP_DECAP);

	if (inner.h_proto == bpf_htons(ETH_P_IP)) {
		__be32 daddr;

		if (bpf_skb_load_bytes(skb, inner_off + sizeof(inner) + offsetof(struct iphdr, daddr), &daddr, 4))
			return drop(skb, METRIC_DROP_DECAP);
		ep = lookup_endpoint4(daddr);
		flags = FABRIC_ADJ_ROOM_DECAP_L3_IPV4;
	} else if (inner.h_proto == bpf_htons(ETH_P_IPV6)) {
		struct in6_addr daddr;

		if (bpf_skb_load_bytes(skb, inner_off + sizeof(inner) + offsetof(struct ipv6hdr, daddr), &daddr, 16))
			return drop(skb, METRIC_DROP_DECAP);
		ep = lookup_endpoint6(&daddr);
		flags = FABRIC_ADJ_ROOM_DECAP_L3_IPV6;
	} else {
		return drop(skb, METRIC_DROP_DECAP);
	}
	if (!ep)
		return drop(skb, METRIC_DROP_UNKNOWN_DST);

	/* Remove everything between the outer Ethernet header and the inner
	 * L3 header; the outer Ethernet header then only needs the inner
	 * ethertype (deliver_local rewrites its MACs). */
	err = bpf_skb_adjust_room(skb, -(__s32)(inner_off + sizeof(inner) - sizeof(struct ethhdr)),
				  BPF_ADJ_ROOM_MAC, flags);
	if (err)
		return drop(skb, METRIC_DROP_DECAP);
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &inner.h_proto, 2, 0))
		return drop(skb, METRIC_DROP_DECAP);
	*vni_out = vni;
	return GENEVE_DECAPPED;
}

/* native_identity is the identity of a source address on the underlay: the
 * ipcache knows remote endpoints; anything else is the world. */
static __always_inline __u32 native_identity(struct remote_info *ri)
{
	if (!ri || ri->identity == IDENTITY_UNKNOWN)
		return IDENTITY_WORLD;
	return ri->identity;
}

/* unencap_identity is the identity of the sender of an unencapsulated packet
 * for a local endpoint. In the overlay modes other nodes' endpoints always
 * arrive encapsulated, so a bare packet that claims one of their addresses
 * (an entry with a tunnel endpoint) earns only the world's identity. */
static __always_inline __u32 unencap_identity(struct remote_info *ri)
{
	if (cfg_mode != MODE_NATIVE && ri && ri->node_family)
		return IDENTITY_WORLD;
	return native_identity(ri);
}

/* to_local delivers a packet for a local endpoint through its ingress
 * policy: a decapsulated one with its tunnel identity, an unencapsulated one
 * (tunnel_identity 0) with the identity its source has. Returns -1 for a
 * packet that is for no local endpoint. */
static __always_inline int to_local(struct __sk_buff *skb, __u32 tunnel_identity)
{
	struct endpoint_info *ep;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip;
		__be32 saddr;

		if (ensure(skb, sizeof(struct ethhdr) + sizeof(struct iphdr)))
			return -1;
		ip = (void *)(long)skb->data + sizeof(struct ethhdr);
		if ((void *)(ip + 1) > (void *)(long)skb->data_end)
			return -1;
		ep = lookup_endpoint4(ip->daddr);
		if (!ep)
			return -1;
		if (tunnel_identity)
			return deliver_local(skb, tunnel_identity, ep);
		saddr = ip->saddr;
		return deliver_local(skb, unencap_identity(lookup_ipcache4(saddr)), ep);
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6;
		struct in6_addr saddr;

		if (ensure(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr)))
			return -1;
		ip6 = (void *)(long)skb->data + sizeof(struct ethhdr);
		if ((void *)(ip6 + 1) > (void *)(long)skb->data_end)
			return -1;
		ep = lookup_endpoint6(&ip6->daddr);
		if (!ep)
			return -1;
		if (tunnel_identity)
			return deliver_local(skb, tunnel_identity, ep);
		saddr = ip6->saddr;
		return deliver_local(skb, unencap_identity(lookup_ipcache6(&saddr)), ep);
	}
	return -1;
}

/* from_outside serves External frontends (node ports, load-balancer IPs) to
 * traffic from outside the cluster: translated to a backend on this node and
 * delivered (the backend's veth rewrites the replies, lxc.c lxc_reply), or
 * to a backend on another node with the source translated to this node's
 * address and a NAT port (lb.h lb_snat) and forwarded by mode with the
 * world identity; that backend's replies, routed back to this node's
 * address unencapsulated by its node's stack, are translated back here
 * (lb_unsnat) and sent out to the client. Returns -1 for a packet that is
 * none of its business. */
static __always_inline int from_outside(struct __sk_buff *skb)
{
	struct lb_scratch *sc = lb_scratch_get();
	struct endpoint_info *ep;
	struct remote_info *ri;
	__be32 saddr4, daddr4;
	int lb;

	if (!sc || lb_parse(skb, &sc->p))
		return -1;
	if (bpf_map_lookup_elem(&lb_nat, &sc->p.key)) {
		lb = lb_unsnat(skb);
		if (lb < 0)
			return TC_ACT_SHOT;
		if (lb == 0)
			return -1;
		return redirect_fib(skb, &sc->r.key);
	}
	lb = lb_dnat(skb, true);
	if (lb == LB_PASS)
		return -1;
	if (lb == LB_NO_BACKEND)
		return drop(skb, METRIC_DROP_NO_BACKEND);
	if (lb == LB_NO_NAT_PORT)
		return drop(skb, METRIC_DROP_NAT_PORTS);
	if (lb == LB_NAT) {
		if (sc->p.key.family == FAMILY_V4) {
			__builtin_memcpy(&daddr4, sc->p.key.daddr, 4);
			ri = lookup_ipcache4(daddr4);
		} else {
			ri = lookup_ipcache6((const struct in6_addr *)sc->p.key.daddr);
		}
		if (!ri)
			return TC_ACT_SHOT; /* lb_dnat checked it is known */
		return forward_remote(skb, IDENTITY_WORLD, ri, sc->p.key.family == FAMILY_V6);
	}
	if ((lb & 0xff) != LB_DNAT)
		return TC_ACT_SHOT;
	if (sc->p.key.family == FAMILY_V4) {
		__builtin_memcpy(&daddr4, sc->p.key.daddr, 4);
		__builtin_memcpy(&saddr4, sc->p.key.saddr, 4);
		ep = lookup_endpoint4(daddr4);
		ri = lookup_ipcache4(saddr4);
	} else {
		ep = lookup_endpoint6((const struct in6_addr *)sc->p.key.daddr);
		ri = lookup_ipcache6((const struct in6_addr *)sc->p.key.saddr);
	}
	if (!ep)
		return TC_ACT_SHOT; /* lb_dnat checked it is local */
	return deliver_local(skb, native_identity(ri), ep);
}

SEC("tcx/ingress")
int underlay_ingress(struct __sk_buff *skb)
{
	__u32 vni = 0;
	int ret;

	/* A frame for another host's MAC (a switch flooding an unknown
	 * unicast destination, say to a load-balancer IP whose owner just
	 * died) is not ours to serve: answering it too would duplicate the
	 * owner's traffic and hide its failure. */
	if (skb->pkt_type == PACKET_OTHERHOST_)
		return TC_ACT_OK;
	if (cfg_mode == MODE_GENEVE && skb->protocol == bpf_htons(ETH_P_IP)) {
		ret = from_geneve(skb, &vni);
		if (ret >= 0 && ret != GENEVE_DECAPPED)
			return ret;
		if (ret == GENEVE_DECAPPED && !vni)
			vni = IDENTITY_WORLD; /* an identity is never 0 */
	}
	/* A packet for a local endpoint (decapsulated, or bare) is no
	 * service's, whose frontends are node, load-balancer and external
	 * addresses: it skips the load balancer's lookups. One call site
	 * keeps the stack within bounds. */
	ret = to_local(skb, vni);
	if (ret >= 0)
		return ret;
	if (vni)
		return TC_ACT_SHOT; /* from_geneve found the endpoint */
	ret = from_outside(skb);
	if (ret >= 0)
		return ret;
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual MIT/GPL";
