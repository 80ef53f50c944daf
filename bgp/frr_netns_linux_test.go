package bgp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fabric-net/fabric/bgp"
	"github.com/fabric-net/fabric/bgp/frr"
	"github.com/fabric-net/fabric/bgp/frrtest"
	"github.com/fabric-net/fabric/bgp/speakerproc"
)

// TestMain turns the test binary into a child speaker when a test started it
// inside a node's namespace (see speakerproc).
func TestMain(m *testing.M) {
	if speakerproc.IsChild() {
		os.Exit(speakerproc.Main())
	}
	os.Exit(m.Run())
}

const torConf = `frr defaults datacenter
hostname tor
router bgp 65000
 bgp router-id 10.77.0.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 bgp bestpath as-path multipath-relax
 neighbor 10.77.1.2 remote-as 65001
 neighbor 10.77.1.2 timers 3 9
 neighbor 10.77.2.2 remote-as 65002
 neighbor 10.77.2.2 timers 3 9
 neighbor fd00:77:1::2 remote-as 65001
 address-family ipv4 unicast
  network 10.99.0.0/24
  maximum-paths 8
 exit-address-family
 address-family ipv6 unicast
  neighbor fd00:77:1::2 activate
  maximum-paths 8
 exit-address-family
`

// fabricLab is FRR as a top-of-rack router in its own namespace and two
// nodes, each in a namespace linked to it by a veth pair, each running a
// child speaker.
type fabricLab struct {
	tor   *frr.Router
	torNS string
	nodes []*speakerproc.Proc
}

func startLab(t *testing.T) *fabricLab {
	t.Helper()
	frrtest.RequireRoot(t)
	if _, err := os.Stat(filepath.Join(frr.Daemons, "bgpd")); err != nil {
		t.Skip("FRR is not installed (bash .ci/deps.sh installs Debian's frr)")
	}
	l := &fabricLab{torNS: frrtest.NetNS(t, "frr")}
	sfx := frrtest.Suffix()
	nodeNS := []string{frrtest.NetNS(t, "node1"), frrtest.NetNS(t, "node2")}
	frrtest.Veth(t, l.torNS, "t1-"+sfx, []string{"10.77.1.1/24", "fd00:77:1::1/64"},
		nodeNS[0], "n1-"+sfx, []string{"10.77.1.2/24", "fd00:77:1::2/64"})
	frrtest.Veth(t, l.torNS, "t2-"+sfx, []string{"10.77.2.1/24"},
		nodeNS[1], "n2-"+sfx, []string{"10.77.2.2/24"})

	logDir := t.TempDir()
	l.tor = frrtest.Start(t, l.torNS, torConf)

	peer := func(addr string) bgp.PeerConfig {
		return bgp.PeerConfig{Address: netip.MustParseAddr(addr), RemoteASN: 65000, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second}
	}
	cfgs := []bgp.Config{
		{RouterID: netip.MustParseAddr("10.77.1.2"), LocalASN: 65001, ListenPort: -1,
			Peers: []bgp.PeerConfig{peer("10.77.1.1"), peer("fd00:77:1::1")}, Communities: []string{"65001:1", "65001:2:3"}},
		{RouterID: netip.MustParseAddr("10.77.2.2"), LocalASN: 65002, ListenPort: -1,
			Peers: []bgp.PeerConfig{peer("10.77.2.1")}},
	}
	for i, cfg := range cfgs {
		logPath := filepath.Join(logDir, fmt.Sprintf("node%d.log", i+1))
		f, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		p, err := speakerproc.Start(nodeNS[i], os.Args[0], []string{"-test.run=^$"}, cfg, t.TempDir(), f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			p.Quit()
			f.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logPath)
				t.Logf("node%d log:\n%s", i+1, b)
			}
		})
		l.nodes = append(l.nodes, p)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := l.tor.VTY("show bgp summary")
			b, _ := os.ReadFile(filepath.Join(l.tor.Dir, "bgpd.log"))
			t.Logf("frr summary:\n%s\nbgpd log:\n%s", out, b)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, n := range l.nodes {
		if err := n.WaitEstablished(ctx); err != nil {
			t.Fatalf("node%d: %v", i+1, err)
		}
	}
	return l
}

// waitFRR polls the router's table of afi until ok holds.
func (l *fabricLab) waitFRR(t *testing.T, afi, what string, ok func(map[netip.Prefix][]frr.Path) bool) map[netip.Prefix][]frr.Path {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rs, err := l.tor.Routes(afi)
		if err == nil && ok(rs) {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("frr: %s: not seen within 15s (err %v); table: %v", what, err, rs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func advertise(t *testing.T, p *speakerproc.Proc, prefixes ...string) {
	t.Helper()
	var advs []bgp.Advertisement
	for _, s := range prefixes {
		advs = append(advs, bgp.Advertisement{Prefix: netip.MustParsePrefix(s)})
	}
	if _, err := p.Advertise(advs); err != nil {
		t.Fatal(err)
	}
}

// updatesFrom reads how many UPDATE messages FRR has received from a peer.
func (l *fabricLab) updatesFrom(t *testing.T, peer string) int {
	t.Helper()
	out, err := l.tor.VTY("show bgp neighbors " + peer + " json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]struct {
		MessageStats struct {
			UpdatesRecv int `json:"updatesRecv"`
		} `json:"messageStats"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("parse neighbor json: %v", err)
	}
	return doc[peer].MessageStats.UpdatesRecv
}

func TestFRRNetNS(t *testing.T) {
	l := startLab(t)
	n1, n2 := l.nodes[0], l.nodes[1]
	pod1v4, pod1v6, pod2 := "10.244.1.0/24", "fd00:244:1::/64", "10.244.2.0/24"
	lbIP := "192.0.2.10/32"

	t.Run("PodCIDR", func(t *testing.T) {
		advertise(t, n1, pod1v4, pod1v6, lbIP)
		advertise(t, n2, pod2, lbIP)
		rs := l.waitFRR(t, "ipv4", pod1v4, func(rs map[netip.Prefix][]frr.Path) bool {
			return len(rs[netip.MustParsePrefix(pod1v4)]) == 1 && len(rs[netip.MustParsePrefix(pod2)]) == 1
		})
		if nh := rs[netip.MustParsePrefix(pod1v4)][0].NextHops; len(nh) == 0 || nh[0] != netip.MustParseAddr("10.77.1.2") {
			t.Errorf("%s next hops %v, want 10.77.1.2", pod1v4, nh)
		}
		rs6 := l.waitFRR(t, "ipv6", pod1v6, func(rs map[netip.Prefix][]frr.Path) bool {
			return len(rs[netip.MustParsePrefix(pod1v6)]) == 1
		})
		if nh := rs6[netip.MustParsePrefix(pod1v6)][0].NextHops; len(nh) == 0 || nh[0] != netip.MustParseAddr("fd00:77:1::2") {
			t.Errorf("%s next hops %v, want fd00:77:1::2 first", pod1v6, nh)
		}
		out, err := l.tor.VTY("show bgp ipv4 unicast " + pod1v4 + " json")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "65001:1") || !strings.Contains(string(out), "65001:2:3") {
			t.Errorf("communities 65001:1 and 65001:2:3 missing from FRR's path: %s", out)
		}
	})

	t.Run("Idempotent", func(t *testing.T) {
		before := l.updatesFrom(t, "10.77.1.2")
		advertise(t, n1, pod1v4, pod1v6, lbIP)
		advertise(t, n1, lbIP, pod1v6, pod1v4) // order does not matter
		time.Sleep(500 * time.Millisecond)
		if after := l.updatesFrom(t, "10.77.1.2"); after != before {
			t.Errorf("re-advertising the same set sent %d updates, want 0", after-before)
		}
	})

	t.Run("ECMP", func(t *testing.T) {
		lb := netip.MustParsePrefix(lbIP)
		rs := l.waitFRR(t, "ipv4", "two paths for "+lbIP, func(rs map[netip.Prefix][]frr.Path) bool {
			return len(rs[lb]) == 2
		})
		multi := 0
		for _, p := range rs[lb] {
			if p.Multipath || p.Best {
				multi++
			}
		}
		if multi != 2 {
			t.Errorf("paths of %s: %+v, want both best/multipath", lbIP, rs[lb])
		}
		// The kernel route in the router's namespace has both nodes as next hops.
		deadline := time.Now().Add(10 * time.Second)
		for {
			out := frrtest.IP(t, "-n", l.torNS, "-j", "route", "show", lbIP)
			var routes []struct {
				Nexthops []struct {
					Gateway string `json:"gateway"`
				} `json:"nexthops"`
			}
			json.Unmarshal(out, &routes)
			if len(routes) == 1 && len(routes[0].Nexthops) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("kernel route for %s in %s: %s, want 2 next hops", lbIP, l.torNS, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("Learned", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		has := func(rs []bgp.Route, pfx string) *bgp.Route {
			for i := range rs {
				if rs[i].Prefix == netip.MustParsePrefix(pfx) {
					return &rs[i]
				}
			}
			return nil
		}
		rs, err := n1.WaitWatched(ctx, func(rs []bgp.Route) bool { return has(rs, "10.99.0.0/24") != nil && has(rs, pod2) != nil })
		if err != nil {
			t.Fatalf("WatchRoutes of node1 never had 10.99.0.0/24 and %s: %v (last %+v)", pod2, err, rs)
		}
		r := has(rs, pod2)
		if r.NextHop != netip.MustParseAddr("10.77.1.1") || !slices.Equal(r.ASPath, []uint32{65000, 65002}) || r.Peer != netip.MustParseAddr("10.77.1.1") {
			t.Errorf("learned %s: %+v, want next hop and peer 10.77.1.1, AS path [65000 65002]", pod2, *r)
		}
		if has(rs, pod1v4) != nil {
			t.Errorf("node1's own %s reported as learned", pod1v4)
		}
		got, err := n1.Routes()
		if err != nil {
			t.Fatal(err)
		}
		if has(got, "10.99.0.0/24") == nil {
			t.Errorf("Routes() = %+v, want 10.99.0.0/24", got)
		}
	})

	t.Run("Withdraw", func(t *testing.T) {
		lb := netip.MustParsePrefix(lbIP)
		advertise(t, n1, pod1v4, pod1v6)
		l.waitFRR(t, "ipv4", "one path for "+lbIP, func(rs map[netip.Prefix][]frr.Path) bool {
			return len(rs[lb]) == 1 && rs[lb][0].NextHops[0] == netip.MustParseAddr("10.77.2.2")
		})
		advertise(t, n1, pod1v4)
		l.waitFRR(t, "ipv6", pod1v6+" withdrawn", func(rs map[netip.Prefix][]frr.Path) bool {
			_, ok := rs[netip.MustParsePrefix(pod1v6)]
			return !ok
		})
	})

	t.Run("NodeDeath", func(t *testing.T) {
		start := time.Now()
		n2.Kill()
		l.waitFRR(t, "ipv4", "routes of killed node2 withdrawn", func(rs map[netip.Prefix][]frr.Path) bool {
			_, a := rs[netip.MustParsePrefix(pod2)]
			_, b := rs[netip.MustParsePrefix(lbIP)]
			return !a && !b
		})
		t.Logf("SIGKILL of node2's speaker to withdrawal at FRR: %s", time.Since(start).Round(time.Millisecond))
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, err := n1.WaitWatched(ctx, func(rs []bgp.Route) bool {
			return !slices.ContainsFunc(rs, func(r bgp.Route) bool { return r.Prefix == netip.MustParsePrefix(pod2) })
		}); err != nil {
			t.Errorf("node1 still learns %s after node2 died: %v", pod2, err)
		}
	})
}
