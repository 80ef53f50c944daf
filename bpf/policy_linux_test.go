//go:build linux

package bpf

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// The policy tests play Cilium's Star Wars demo on the two-node cluster of
// the end-to-end tests: the deathstar on node 1 serves TCP port 80 to the
// empire's ships only; tiefighters sit on both nodes (the same node as the
// deathstar and the other one), and so do the alliance's xwings.

const (
	empire   uint32 = 0x1e000
	alliance uint32 = 0x1a000
	// worldIdentity is IDENTITY_WORLD (include/common.h).
	worldIdentity uint32 = 2
)

type starWars struct {
	c         *cluster
	deathstar *workload
	tie       [2]*workload // node 1 (same node as the deathstar), node 2
	xwing     [2]*workload
}

func newStarWars(t *testing.T, mode Mode) *starWars {
	c := newCluster(t, mode)
	n1, n2 := c.nodes[0], c.nodes[1]
	c.addWorkload(t, n1, 0, 2) // a third workload on node 1
	sw := &starWars{c: c, deathstar: n1.wls[0],
		tie: [2]*workload{n1.wls[1], n2.wls[0]}, xwing: [2]*workload{n1.wls[2], n2.wls[1]}}
	for _, w := range sw.tie {
		w.identity, w.ep.Identity = empire, empire
	}
	for _, w := range sw.xwing {
		w.identity, w.ep.Identity = alliance, alliance
	}
	sw.apply(t)
	for _, port := range []int{80, 443} {
		echoServer(t, sw.deathstar, port)
	}
	return sw
}

// apply hands both nodes their state with the workloads' current policies.
func (sw *starWars) apply(t *testing.T) {
	t.Helper()
	for i, n := range sw.c.nodes {
		if err := inNS(n.ns, func() error { return n.dp.Apply(sw.c.state(i)) }); err != nil {
			t.Fatalf("apply on node %d: %v", i+1, err)
		}
	}
}

// echoServer answers every TCP connection to port (both families) with
// what it receives.
func echoServer(t *testing.T, w *workload, port int) {
	t.Helper()
	var ln net.Listener
	if err := inNS(w.ns, func() error {
		var err error
		ln, err = net.Listen("tcp", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		t.Fatalf("listen on %d in %s: %v", port, w.ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.Copy(conn, conn)
			}()
		}
	}()
}

// tcpEcho opens a connection from one workload and has a message echoed:
// both directions of the connection must pass.
// A drop is told by the dial timing out: timeout is short where a drop is
// expected and long enough for a retransmitted SYN where not.
func tcpEcho(from *workload, dst netip.Addr, port int, timeout time.Duration) error {
	return inNS(from.ns, func() error {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, uint16(port)).String(), timeout)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		msg := []byte("the plans of the death star")
		if _, err := conn.Write(msg); err != nil {
			return err
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, got); err != nil {
			return fmt.Errorf("read the echo: %w", err)
		}
		if !bytes.Equal(got, msg) {
			return fmt.Errorf("echo %q; want %q", got, msg)
		}
		return nil
	})
}

func name(w *workload) string { return fmt.Sprintf("%s(%#x)", w.ip4, w.identity) }

func mustTCP(t *testing.T, from *workload, dst netip.Addr, port int) {
	t.Helper()
	if err := tcpEcho(from, dst, port, 5*time.Second); err != nil {
		t.Errorf("tcp %s → [%s]:%d: %v; want it to pass", name(from), dst, port, err)
	}
}

func noTCP(t *testing.T, from *workload, dst netip.Addr, port int) {
	t.Helper()
	if err := tcpEcho(from, dst, port, time.Second); err == nil {
		t.Errorf("tcp %s → [%s]:%d passed; want it dropped", name(from), dst, port)
	}
}

func noPing(t *testing.T, from *workload, to netip.Addr) {
	t.Helper()
	if out, err := nsExec(from.ns, "ping", "-c", "1", "-W", "1", to.String()); err == nil {
		t.Errorf("ping %s → %s answered; want it dropped\n%s", name(from), to, out)
	}
}

// noWorld checks that a ping out of the cluster is dropped by policy (the
// nodes have no route out, so only the counter tells).
func noWorld(t *testing.T, n *node, from *workload) {
	t.Helper()
	before := policyDrops(t, n)
	_, _ = nsExec(from.ns, "ping", "-c", "1", "-W", "1", "192.0.2.1")
	if after := policyDrops(t, n); after <= before {
		t.Errorf("ping %s → 192.0.2.1 (world): policy drops %d → %d; want it dropped by policy", name(from), before, after)
	}
}

func policyDrops(t *testing.T, n *node) uint64 {
	t.Helper()
	d, err := n.dp.Drops()
	if err != nil {
		t.Fatal(err)
	}
	return d["policy"]
}

// deathstarPolicy: only the empire, on TCP 80 and ping; the deathstar
// itself opens nothing (egress enforced, no entries), so its replies pass
// by connection tracking alone.
func deathstarPolicy(extra ...PolicyEntry) EndpointPolicy {
	return EndpointPolicy{IngressEnforced: true, EgressEnforced: true, Entries: append([]PolicyEntry{
		{Direction: Ingress, Identity: empire, Proto: ProtoTCP, PortLo: 80, PortHi: 80},
		{Direction: Ingress, Identity: empire, Proto: ProtoICMP, PortLo: 8, PortHi: 8},
		{Direction: Ingress, Identity: empire, Proto: ProtoICMPv6, PortLo: 128, PortHi: 128},
	}, extra...)}
}

func testPolicy(t *testing.T, mode Mode) {
	sw := newStarWars(t, mode)
	ds := sw.deathstar
	n1 := sw.c.nodes[0]

	t.Run("nothing enforced", func(t *testing.T) {
		for _, w := range append(sw.tie[:], sw.xwing[:]...) {
			mustTCP(t, w, ds.ip4, 443)
		}
	})

	ds.ep.Policy = deathstarPolicy()
	sw.apply(t)

	t.Run("empire to deathstar 80", func(t *testing.T) {
		for _, tie := range sw.tie {
			mustTCP(t, tie, ds.ip4, 80)
			mustTCP(t, tie, ds.ip6, 80)
			ping(t, tie, ds.ip4)
			ping(t, tie, ds.ip6)
		}
	})
	t.Run("fragments", func(t *testing.T) {
		// Bigger than the workload MTU both ways: the later fragments
		// follow the first one's verdict.
		for _, tie := range sw.tie {
			ping(t, tie, ds.ip4, "-s", "3000")
			ping(t, tie, ds.ip6, "-s", "3000")
		}
	})
	t.Run("alliance dropped", func(t *testing.T) {
		before := policyDrops(t, n1)
		for _, xw := range sw.xwing {
			noTCP(t, xw, ds.ip4, 80)
			noTCP(t, xw, ds.ip6, 80)
			noPing(t, xw, ds.ip4)
		}
		if after := policyDrops(t, n1); after <= before {
			t.Errorf("node 1 policy drops %d → %d; want them counted", before, after)
		}
	})
	t.Run("world", func(t *testing.T) {
		// A host outside the cluster that routes the pod CIDRs through
		// node 1, as a router that learnt them over BGP does, sends
		// straight to the deathstar, unencapsulated in every mode: it is
		// the world to policy.
		out := sw.c.outside
		// The deathstar's replies to the world leave through node 1's
		// stack, as the agent sets it up: forwarding on.
		for _, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
			if out, err := nsExec(n1.ns, "sysctl", "-qw", k+"=1"); err != nil {
				t.Fatalf("%s in %s: %v\n%s", k, n1.ns, err, out)
			}
		}
		ipn(t, out, "route", "replace", n1.cidr4.String(), "via", n1.under4.String())
		ipn(t, out, "route", "replace", n1.cidr6.String(), "via", n1.under6.String())
		world := &workload{ns: out, ip4: sw.c.outside4, ip6: sw.c.outside6, identity: worldIdentity}
		before := policyDrops(t, n1)
		noTCP(t, world, ds.ip4, 80)
		noTCP(t, world, ds.ip6, 80)
		if after := policyDrops(t, n1); after <= before {
			t.Errorf("node 1 policy drops %d → %d; want the world's connections dropped by policy", before, after)
		}
		// Allowed, it passes both ways.
		ds.ep.Policy = deathstarPolicy(PolicyEntry{Direction: Ingress, Identity: worldIdentity, Proto: ProtoTCP, PortLo: 80, PortHi: 80})
		sw.apply(t)
		mustTCP(t, world, ds.ip4, 80)
		mustTCP(t, world, ds.ip6, 80)
		noTCP(t, world, ds.ip4, 443)
		// A bare packet that claims another node's workload address
		// (spoofed: in the overlay modes theirs come encapsulated) gets
		// no more than the world's rights.
		if mode != ModeNative {
			tie2 := sw.tie[1]
			ipn(t, out, "addr", "add", tie2.ip4.String()+"/32", "dev", "eth0")
			spoof := &workload{ns: out, ip4: tie2.ip4, identity: empire}
			if err := inNS(out, func() error {
				d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: tie2.ip4.AsSlice()}}
				conn, err := d.Dial("tcp", netip.AddrPortFrom(ds.ip4, 443).String())
				if err == nil {
					conn.Close()
				}
				return err
			}); err == nil {
				t.Errorf("tcp %s (spoofed, unencapsulated) → [%s]:443 passed; want it dropped", name(spoof), ds.ip4)
			}
			ipn(t, out, "addr", "del", tie2.ip4.String()+"/32", "dev", "eth0")
		}
		ds.ep.Policy = deathstarPolicy()
		sw.apply(t)
	})
	t.Run("empire to deathstar 443", func(t *testing.T) {
		for _, tie := range sw.tie {
			noTCP(t, tie, ds.ip4, 443)
			noTCP(t, tie, ds.ip6, 443)
		}
	})
	t.Run("deathstar opens nothing", func(t *testing.T) {
		// Egress enforced without entries; its replies above passed by
		// connection tracking.
		noPing(t, ds, sw.tie[0].ip4)
		noPing(t, ds, sw.tie[1].ip4)
		noWorld(t, n1, ds)
	})

	t.Run("deny beats allow", func(t *testing.T) {
		ds.ep.Policy = deathstarPolicy(
			PolicyEntry{Direction: Ingress, Identity: empire, Proto: ProtoTCP, PortLo: 80, PortHi: 80, Deny: true})
		sw.apply(t)
		for _, tie := range sw.tie {
			noTCP(t, tie, ds.ip4, 80)
		}
		// A wildcard deny (any peer, any protocol and port) too.
		ds.ep.Policy = deathstarPolicy(PolicyEntry{Direction: Ingress, Deny: true})
		sw.apply(t)
		for _, tie := range sw.tie {
			noTCP(t, tie, ds.ip4, 80)
		}
		// A deny without default deny: only what it names is dropped.
		ds.ep.Policy = EndpointPolicy{Entries: []PolicyEntry{
			{Direction: Ingress, Identity: alliance, Proto: ProtoTCP, PortLo: 400, PortHi: 500, Deny: true}}}
		sw.apply(t)
		noTCP(t, sw.xwing[1], ds.ip4, 443)
		mustTCP(t, sw.xwing[1], ds.ip4, 80)
		mustTCP(t, sw.tie[1], ds.ip4, 443)
		ds.ep.Policy = deathstarPolicy()
		sw.apply(t)
		for _, tie := range sw.tie {
			mustTCP(t, tie, ds.ip4, 80)
		}
	})

	t.Run("tiefighter egress", func(t *testing.T) {
		// The tiefighters may only reach the deathstar on 80, and take
		// nothing in: the deathstar's replies pass by connection tracking.
		for _, tie := range sw.tie {
			tie.ep.Policy = EndpointPolicy{IngressEnforced: true, EgressEnforced: true, Entries: []PolicyEntry{
				{Direction: Egress, Identity: ds.identity, Proto: ProtoTCP, PortLo: 80, PortHi: 80},
			}}
		}
		sw.apply(t)
		for _, tie := range sw.tie {
			mustTCP(t, tie, ds.ip4, 80)
			mustTCP(t, tie, ds.ip6, 80)
			noPing(t, tie, ds.ip4) // egress allows no ICMP now
			noPing(t, tie, sw.xwing[0].ip4)
			noPing(t, tie, sw.xwing[1].ip4)
			noPing(t, tie, sw.xwing[1].ip6)
		}
		noWorld(t, sw.c.nodes[0], sw.tie[0])
		noWorld(t, sw.c.nodes[1], sw.tie[1])
		noPing(t, sw.xwing[0], sw.tie[0].ip4) // ingress enforced, no entries
		noPing(t, sw.xwing[1], sw.tie[1].ip4)
		for _, tie := range sw.tie {
			tie.ep.Policy = EndpointPolicy{}
		}
		sw.apply(t)
	})

	t.Run("ingress seen", func(t *testing.T) {
		seen, err := n1.dp.IngressSeen()
		if err != nil {
			t.Fatal(err)
		}
		if seen[[2]uint32{empire, ds.identity}] == 0 {
			t.Errorf("ingress_seen %v lacks the empire's deliveries to the deathstar", seen)
		}
	})
}

func TestPolicyVXLANRoot(t *testing.T)  { testPolicy(t, ModeVXLAN) }
func TestPolicyGeneveRoot(t *testing.T) { testPolicy(t, ModeGeneve) }
func TestPolicyNativeRoot(t *testing.T) { testPolicy(t, ModeNative) }
