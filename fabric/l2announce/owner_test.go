package l2announce

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func nodes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%d", i)
	}
	return out
}

func manyIPs(n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	a := netip.MustParseAddr("10.20.0.0")
	b := netip.MustParseAddr("fd00:20::")
	for i := 0; i < n; i++ {
		a, b = a.Next(), b.Next()
		if i%2 == 0 {
			out = append(out, a)
		} else {
			out = append(out, b)
		}
	}
	return out
}

func TestOwnerDeterministicAndEven(t *testing.T) {
	ns := nodes(5)
	rev := slices.Clone(ns)
	slices.Reverse(rev)
	count := map[string]int{}
	ips := manyIPs(10000)
	for _, ip := range ips {
		o := Owner(ip, ns)
		if o2 := Owner(ip, rev); o2 != o {
			t.Fatalf("Owner(%s) depends on order: %s vs %s", ip, o, o2)
		}
		if o3 := Owner(ip, append(slices.Clone(ns), ns[0], "")); o3 != o {
			t.Fatalf("Owner(%s) changed with a duplicate and an empty name", ip)
		}
		count[o]++
	}
	// Pinned: every node, every Fabric version computes the same owner.
	if got := Owner(netip.MustParseAddr("10.0.0.200"), []string{"a", "b", "c"}); got != pinnedOwner {
		t.Errorf("Owner(10.0.0.200, a b c) = %s, want %s: the hash changed, so nodes of different versions would disagree", got, pinnedOwner)
	}
	per := len(ips) / len(ns)
	for _, n := range ns {
		if c := count[n]; c < per*85/100 || c > per*115/100 {
			t.Errorf("%s owns %d of %d IPs, want about %d", n, c, len(ips), per)
		}
	}
	t.Logf("spread over %d nodes: %v", len(ns), count)
	if Owner(ips[0], nil) != "" {
		t.Error("no candidates should give no owner")
	}
}

const pinnedOwner = "b" // computed once; see TestOwnerDeterministicAndEven

func TestOwnerRemovalMovesOnlyItsIPs(t *testing.T) {
	ns := nodes(7)
	gone := ns[3]
	rest := slices.Delete(slices.Clone(ns), 3, 4)
	moved := 0
	for _, ip := range manyIPs(5000) {
		before, after := Owner(ip, ns), Owner(ip, rest)
		if before != gone && before != after {
			t.Fatalf("%s moved from %s to %s though %s was removed", ip, before, after, gone)
		}
		if before == gone {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("the removed node owned nothing")
	}
	// Adding a node back takes only IPs for itself.
	for _, ip := range manyIPs(2000) {
		before, after := Owner(ip, rest), Owner(ip, ns)
		if before != after && after != gone {
			t.Fatalf("%s moved from %s to %s when %s joined", ip, before, after, gone)
		}
	}
}

func TestAssign(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	old := now.Add(-time.Hour)
	const settle = 5 * time.Second
	all := Policy{Name: "all", LoadBalancerIPs: true}
	lb := netip.MustParseAddr("10.0.0.200")
	want := []Want{{IP: lb, Service: "default/web", Labels: map[string]string{"app": "web"}}}

	owner := func(pols []Policy, ws []Want, ms []Member) string {
		t.Helper()
		got := Assign(pols, ws, ms, now, settle)
		return got[ws[0].IP]
	}
	member := func(name string, since time.Time, eligible bool, labels ...string) Member {
		m := Member{Name: name, Since: since, Eligible: eligible, Labels: map[string]string{}}
		for i := 0; i+1 < len(labels); i += 2 {
			m.Labels[labels[i]] = labels[i+1]
		}
		return m
	}

	t.Run("rendezvous over eligible members", func(t *testing.T) {
		ms := []Member{member("a", old, true), member("b", old, true), member("c", old, true)}
		if got, w := owner([]Policy{all}, want, ms), Owner(lb, []string{"a", "b", "c"}); got != w {
			t.Errorf("owner %q, want %q", got, w)
		}
		// Make the owner ineligible: another one takes over.
		first := owner([]Policy{all}, want, ms)
		for i := range ms {
			if ms[i].Name == first {
				ms[i].Eligible = false
			}
		}
		if got := owner([]Policy{all}, want, ms); got == first || got == "" {
			t.Errorf("ineligible %s still owns (got %q)", first, got)
		}
	})

	t.Run("settle time", func(t *testing.T) {
		w := Owner(lb, []string{"a", "b"})
		other := "a"
		if w == "a" {
			other = "b"
		}
		// The rendezvous winner just joined: the settled member keeps it.
		ms := []Member{member(w, now.Add(-time.Second), true), member(other, old, true)}
		if got := owner([]Policy{all}, want, ms); got != other {
			t.Errorf("unsettled %s took the IP from settled %s (got %q)", w, other, got)
		}
		// Once settled, the winner owns it.
		ms[0].Since = now.Add(-settle)
		if got := owner([]Policy{all}, want, ms); got != w {
			t.Errorf("settled winner: got %q, want %q", got, w)
		}
		// No settled eligible member: unsettled ones count (a fresh cluster).
		ms = []Member{member(w, now, true), member(other, now, true), member("old-but-down", old, false)}
		if got := owner([]Policy{all}, want, ms); got != w {
			t.Errorf("fresh cluster: got %q, want %q", got, w)
		}
	})

	t.Run("node selector", func(t *testing.T) {
		rackA := Policy{Name: "a", LoadBalancerIPs: true}
		rackA.NodeSelector.MatchLabels = map[string]string{"rack": "a"}
		ms := []Member{member("n1", old, true, "rack", "b"), member("n2", old, true, "rack", "a"), member("n3", old, true)}
		if got := owner([]Policy{rackA}, want, ms); got != "n2" {
			t.Errorf("owner %q, want n2, the only node rack-a selects", got)
		}
		// A settled node the policy does not select does not stop an
		// unsettled selected one from answering.
		ms[1].Since = now
		if got := owner([]Policy{rackA}, want, ms); got != "n2" {
			t.Errorf("owner %q, want unsettled n2", got)
		}
	})

	t.Run("service selector and kind", func(t *testing.T) {
		ms := []Member{member("a", old, true), member("b", old, true)}
		red := Policy{Name: "red", LoadBalancerIPs: true}
		red.ServiceSelector.MatchLabels = map[string]string{"app": "red"}
		if got := Assign([]Policy{red}, want, ms, now, settle); len(got) != 0 {
			t.Errorf("unselected service got owners %v", got)
		}
		ext := Policy{Name: "ext", ExternalIPs: true}
		if got := Assign([]Policy{ext}, want, ms, now, settle); len(got) != 0 {
			t.Errorf("LB IP assigned by an externalIPs-only policy: %v", got)
		}
		w2 := []Want{{IP: lb, Labels: want[0].Labels, Kind: ExternalIP}}
		if got := Assign([]Policy{ext}, w2, ms, now, settle); got[lb] == "" {
			t.Error("external IP not assigned by an externalIPs policy")
		}
		if got := Assign(nil, want, ms, now, settle); len(got) != 0 {
			t.Errorf("no policy should announce nothing, got %v", got)
		}
	})

	t.Run("local", func(t *testing.T) {
		p := Policy{Name: "eth", LoadBalancerIPs: true, InterfacePatterns: []string{"^eth"}}
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		ms := []Member{member("a", old, true), member("b", old, true)}
		ws := []Want{{IP: lb}, {IP: netip.MustParseAddr("fd00::200")}}
		owners := Assign([]Policy{p}, ws, ms, now, settle)
		for _, m := range ms {
			got := Local(m, []Policy{p}, ws, owners, []string{"lo", "eth1", "eth0", "vx"})
			for _, w := range ws {
				ifs, ok := got[w.IP]
				if ok != (owners[w.IP] == m.Name) {
					t.Errorf("%s: Local has %s = %v, owner is %s", m.Name, w.IP, ok, owners[w.IP])
				}
				if ok && !slices.Equal(ifs, []string{"eth0", "eth1"}) {
					t.Errorf("%s: %s on %v", m.Name, w.IP, ifs)
				}
			}
		}
	})
}
