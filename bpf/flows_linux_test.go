//go:build linux

package bpf

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// TestFlowsRoot plays the deathstar policy and reads node 1's flow events:
// an xwing's connection is a policy drop at the deathstar's ingress, a
// tiefighter's a new connection that ends with FIN.
func TestFlowsRoot(t *testing.T) {
	sw := newStarWars(t, ModeNative)
	ds := sw.deathstar
	n1 := sw.c.nodes[0]
	ds.ep.Policy = deathstarPolicy()
	sw.apply(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := n1.dp.Flows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// wait collects flows until one matches or the time is up.
	wait := func(what string, match func(Flow) bool) {
		t.Helper()
		var got []Flow
		deadline := time.After(5 * time.Second)
		for {
			select {
			case f, ok := <-ch:
				if !ok {
					t.Fatalf("flows channel closed while waiting for %s", what)
				}
				if match(f) {
					return
				}
				got = append(got, f)
			case <-deadline:
				t.Errorf("no %s flow; got %+v", what, got)
				return
			}
		}
	}

	xw := sw.xwing[1] // the other node: the drop is at node 1's delivery
	noTCP(t, xw, ds.ip4, 80)
	wait("policy drop", func(f Flow) bool {
		return f.Event == FlowDrop && f.Dropped && f.Reason == "policy" &&
			f.SrcIdentity == xw.identity && f.DstIdentity == ds.identity &&
			f.Src.Addr() == xw.ip4 && f.Dst == netip.AddrPortFrom(ds.ip4, 80) &&
			f.Proto == 6 && f.Direction == Ingress && f.IfIndex == ds.ep.HostIfIndex &&
			time.Since(f.Time) < time.Minute && time.Since(f.Time) > -time.Second
	})

	tie := sw.tie[0] // the deathstar's node: new at its egress and at the deathstar's ingress
	mustTCP(t, tie, ds.ip4, 80)
	isConn := func(f Flow) bool {
		return f.Proto == 6 && !f.Dropped && f.Reason == "" &&
			((f.Src.Addr() == tie.ip4 && f.Dst == netip.AddrPortFrom(ds.ip4, 80)) ||
				(f.Dst.Addr() == tie.ip4 && f.Src == netip.AddrPortFrom(ds.ip4, 80)))
	}
	wait("new (ingress)", func(f Flow) bool {
		return f.Event == FlowNew && isConn(f) && f.Direction == Ingress &&
			f.SrcIdentity == tie.identity && f.DstIdentity == ds.identity && f.IfIndex == ds.ep.HostIfIndex
	})
	wait("end", func(f Flow) bool { return f.Event == FlowEnd && isConn(f) })

	if lost := n1.dp.FlowsLost(); lost != 0 {
		t.Errorf("FlowsLost %d; want 0", lost)
	}
	if lost, err := n1.dp.FlowEventsLost(); err != nil || lost != 0 {
		t.Errorf("FlowEventsLost %d, %v; want 0", lost, err)
	}
	cancel()
	for range ch { // closes once ctx ended
	}
}
