/* Flow events: a fixed-size record in the flows ring buffer for every drop
 * (where it is decided), for the first packet of a connection (when a
 * conntrack entry is created) and for the first TCP FIN or RST of a tracked
 * connection. Nothing is emitted for the other packets of a connection, so
 * the fast path pays nothing. When the ring buffer is full the event is
 * counted in metrics (METRIC_FLOW_EVENTS_LOST) and the packet goes on. The
 * Go side mirrors struct flow_event in flows.go (flowEvent). */
#pragma once

#include "common.h"
#include "conntrack.h"
#include "lb.h"

#define FLOW_EV_NEW 1
#define FLOW_EV_END 2
#define FLOW_EV_DROP 3

#define FLOW_FORWARDED 0
#define FLOW_DROPPED 1

struct flow_event {
	__u64 ts;           /* bpf_ktime_get_ns */
	__u32 ifindex;      /* the endpoint's host veth; 0: no local endpoint */
	__u32 src_identity; /* 0: unknown */
	__u32 dst_identity; /* 0: unknown */
	__u8 saddr[16];     /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 sport; /* host byte order; ICMP as in struct ct_key */
	__u16 dport;
	__u8 family; /* FAMILY_V4, FAMILY_V6, 0: not parsed */
	__u8 proto;
	__u8 dir;     /* DIR_*, relative to the endpoint */
	__u8 verdict; /* FLOW_FORWARDED or FLOW_DROPPED */
	__u8 reason;  /* METRIC_DROP_* when dropped */
	__u8 type;    /* FLOW_EV_* */
	__u8 pad[2];
	/* The service frontend a workload's connection was sent to, when the
	 * datapath translated it to this backend (egress events of the
	 * client; svc_port 0: none). */
	__u8 svc_addr[16];
	__u16 svc_port;
	__u8 pad2[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows SEC(".maps");

/* Keeps struct flow_event in the object's BTF, so that the Go mirror's
 * layout can be checked against it. */
const struct flow_event flow_event_btf_anchor __attribute__((unused));

#define FLOW_META(type, dir, reason) ((__u32)(type) | (__u32)(dir) << 8 | (__u32)(reason) << 16)

/* The reply tuple emit_flow looks a service up by lives here, not on the
 * stack, which the deepest callers have used up. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ct_key);
	__uint(max_entries, 1);
} flow_svc_scratch SEC(".maps");

/* emit_flow writes one event for f; meta is FLOW_META(type, dir, reason).
 * A subprogram, not inlined: it only runs on new connections, ends and
 * drops, and keeps the callers small. */
static __noinline void emit_flow(const struct flow *f, __u32 ifindex, __u32 src_identity,
				 __u32 dst_identity, __u32 meta)
{
	struct flow_event *e;
	__u8 type = meta & 0xff;

	e = bpf_ringbuf_reserve(&flows, sizeof(*e), 0);
	if (!e) {
		count(METRIC_FLOW_EVENTS_LOST);
		return;
	}
	e->ts = bpf_ktime_get_ns();
	e->ifindex = ifindex;
	e->src_identity = src_identity;
	e->dst_identity = dst_identity;
	__builtin_memcpy(e->saddr, f->key.saddr, 16);
	__builtin_memcpy(e->daddr, f->key.daddr, 16);
	e->sport = f->key.sport;
	e->dport = f->key.dport;
	e->family = f->key.family;
	e->proto = f->key.proto;
	e->dir = (meta >> 8) & 0xff;
	e->verdict = type == FLOW_EV_DROP ? FLOW_DROPPED : FLOW_FORWARDED;
	e->reason = type == FLOW_EV_DROP ? (meta >> 16) & 0xff : 0;
	e->type = type;
	e->pad[0] = 0;
	e->pad[1] = 0;
	__builtin_memset(e->svc_addr, 0, sizeof(e->svc_addr) + sizeof(e->svc_port) + sizeof(e->pad2));
	if (e->dir == DIR_EGRESS && f->key.family) {
		/* The reverse-NAT entry of a translated connection is keyed by
		 * its reply's tuple and names the frontend. */
		__u32 zero = 0;
		struct ct_key *rk = bpf_map_lookup_elem(&flow_svc_scratch, &zero);
		struct lb_revnat *rv = NULL;

		if (rk) {
			__builtin_memset(rk, 0, sizeof(*rk));
			__builtin_memcpy(rk->saddr, f->key.daddr, 16);
			__builtin_memcpy(rk->daddr, f->key.saddr, 16);
			rk->sport = f->key.dport;
			rk->dport = f->key.sport;
			rk->proto = f->key.proto;
			rk->family = f->key.family;
			rv = bpf_map_lookup_elem(&lb_revnat, rk);
		}
		if (rv && !(rv->flags & LB_REVNAT_F_HAIRPIN)) {
			__builtin_memcpy(e->svc_addr, rv->addr, 16);
			e->svc_port = rv->port;
		}
	}
	bpf_ringbuf_submit(e, 0);
}

/* drop_event reports a drop decided outside policy (spoofed source, encap,
 * decap, unknown destination): the tuple is parsed from the packet as it
 * is (Ethernet header at 0; for a tunnel packet, the outer one). On a
 * workload's veth the event is that endpoint's egress, with its identity as
 * the source; anywhere else it is an ingress with no endpoint. */
/* The tuple drop_event parses lives here, not on the stack: drop_event can
 * be called from the deepest point of a program, where the program's frame
 * and its own must stay within 512 bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct flow);
	__uint(max_entries, 1);
} drop_scratch SEC(".maps");

static __noinline void drop_event(struct __sk_buff *skb, __u32 reason)
{
	__u32 ifindex = skb->ifindex, zero = 0;
	struct endpoint_info *ep;
	struct flow *f = bpf_map_lookup_elem(&drop_scratch, &zero);

	if (!f)
		return;
	parse_flow(skb, f); /* on failure the tuple stays as far as it got */
	ep = bpf_map_lookup_elem(&lxc_devices, &ifindex);
	if (ep)
		emit_flow(f, ifindex, ep->identity, 0, FLOW_META(FLOW_EV_DROP, DIR_EGRESS, reason));
	else
		emit_flow(f, 0, 0, 0, FLOW_META(FLOW_EV_DROP, DIR_INGRESS, reason));
}

/* drop counts a drop for reason, reports it, and returns TC_ACT_SHOT. */
static __always_inline int drop(struct __sk_buff *skb, __u32 reason)
{
	count(reason);
	drop_event(skb, reason);
	return TC_ACT_SHOT;
}
