//go:build linux

package l2announce

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// segment is the test's L2 world: a bridge in its own namespace, node
// namespaces and a client namespace attached to it by veths. Nothing is
// made in the test process's own namespace.
type segment struct {
	t      *testing.T
	sfx    string
	seg    string   // namespace holding the bridge
	client string   // namespace of the asking host; its interface is eth0
	nodes  []string // node namespaces; node i's interface is ifName(i)
}

const (
	subnet4 = "10.77.0.0/24"
	subnet6 = "fd77::/64"
)

func ifName(i int) string   { return fmt.Sprintf("l2n%d", i+1) }
func peerName(i int) string { return fmt.Sprintf("p%d", i+1) }

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// ipn runs `ip -n ns ...`; never without a namespace, so the host's
// network is never touched.
func (s *segment) ipn(ns string, args ...string) string {
	s.t.Helper()
	if ns == "" {
		panic("ip command without a namespace")
	}
	out, err := run(s.t, "ip", append([]string{"-n", ns}, args...)...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func (s *segment) exec(ns string, args ...string) (string, error) {
	s.t.Helper()
	if ns == "" {
		panic("exec without a namespace")
	}
	return run(s.t, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

func newSegment(t *testing.T, nodes int) *segment {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	s := &segment{t: t, sfx: hex.EncodeToString(b)}
	s.seg = "l2seg-" + s.sfx
	s.client = "l2cli-" + s.sfx
	for i := range nodes {
		s.nodes = append(s.nodes, fmt.Sprintf("l2node%d-%s", i+1, s.sfx))
	}
	all := append([]string{s.seg, s.client}, s.nodes...)
	for _, ns := range all {
		if _, err := run(t, "ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if _, err := run(t, "ip", "netns", "delete", ns); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		// Addresses usable at once: no duplicate address detection.
		for _, k := range []string{"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"} {
			if _, err := s.exec(ns, "sysctl", "-q", "-w", k); err != nil {
				t.Fatal(err)
			}
		}
		s.ipn(ns, "link", "set", "lo", "up")
	}
	// Snooping off: the bridge must not wait for an MLD querier before
	// it forwards solicitations to the joined groups.
	s.ipn(s.seg, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	s.ipn(s.seg, "link", "set", "br0", "up")
	attach := func(ns, peer, name string, host int) {
		s.ipn(s.seg, "link", "add", peer, "type", "veth", "peer", "name", name, "netns", ns)
		s.ipn(s.seg, "link", "set", peer, "master", "br0", "up")
		s.ipn(ns, "addr", "add", fmt.Sprintf("10.77.0.%d/24", host), "dev", name)
		s.ipn(ns, "addr", "add", fmt.Sprintf("fd77::%d/64", host), "dev", name, "nodad")
		s.ipn(ns, "link", "set", name, "up")
	}
	for i, ns := range s.nodes {
		attach(ns, peerName(i), ifName(i), i+1)
	}
	attach(s.client, "pc", "eth0", 100)
	return s
}

func (s *segment) mac(i int) string {
	s.t.Helper()
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(s.ipn(s.nodes[i], "-j", "link", "show", "dev", ifName(i))), &links); err != nil || len(links) != 1 {
		s.t.Fatalf("mac of node %d: %v %v", i, links, err)
	}
	return strings.ToLower(links[0].Address)
}

// neigh is the client's neighbour entry for ip: its MAC, or "".
func (s *segment) neigh(ip netip.Addr) string {
	s.t.Helper()
	var entries []struct {
		Dst    string `json:"dst"`
		Lladdr string `json:"lladdr"`
	}
	out := s.ipn(s.client, "-j", "neigh", "show", "dev", "eth0", "to", ip.String())
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		s.t.Fatalf("parse ip -j neigh %q: %v", out, err)
	}
	for _, e := range entries {
		if e.Dst == ip.String() {
			return strings.ToLower(e.Lladdr)
		}
	}
	return ""
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

var macRE = regexp.MustCompile(`(?i)([0-9a-f]{2}(?::[0-9a-f]{2}){5})`)

// TestAnnouncerNetNS runs three nodes' announcers and a client on one
// bridge: exactly the owner answers ARP and NDP for the load-balancer IPs,
// and the client's neighbour entries follow the owner when it dies and when
// its link loses carrier.
func TestAnnouncerNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	for _, tool := range []string{"ip", "ping", "arping", "ndisc6"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed; run .ci/deps.sh", tool)
		}
	}
	s := newSegment(t, 3)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))

	names := make([]string, len(s.nodes))
	for i := range s.nodes {
		names[i] = fmt.Sprintf("node%d", i+1)
	}
	// Rendezvous order of the nodes for ip: who owns it, who next, ...
	ranking := func(ip netip.Addr) []string {
		left := slices.Clone(names)
		var out []string
		for len(left) > 0 {
			o := Owner(ip, left)
			out = append(out, o)
			left = slices.DeleteFunc(left, func(n string) bool { return n == o })
		}
		return out
	}
	lb4 := netip.MustParseAddr("10.77.0.200")
	// Pick the IPv6 address whose owners go in the same order, so the
	// same two failovers move both families.
	lb6 := netip.MustParseAddr("fd77::200")
	for !slices.Equal(ranking(lb6), ranking(lb4)) {
		lb6 = lb6.Next()
	}
	order := ranking(lb4)
	index := func(name string) int { return slices.Index(names, name) }
	t.Logf("owners in order: %v (lb4 %s, lb6 %s)", order, lb4, lb6)

	pol := Policy{Name: "l2", LoadBalancerIPs: true, InterfacePatterns: []string{"^l2n[0-9]+$"}}
	if err := pol.Validate(); err != nil {
		t.Fatal(err)
	}
	policies := []Policy{pol}
	wants := []Want{{IP: lb4, Service: "default/web"}, {IP: lb6, Service: "default/web"}}

	anns := make([]*Announcer, len(s.nodes))
	for i, ns := range s.nodes {
		a, err := NewAnnouncerInNetNS(log.With("node", names[i]), "/run/netns/"+ns)
		if err != nil {
			t.Fatal(err)
		}
		anns[i] = a
		t.Cleanup(func() { a.Close() })
	}
	since := time.Now().Add(-time.Minute)
	members := make([]Member, len(names))
	for i, n := range names {
		members[i] = Member{Name: n, Since: since, Eligible: true}
	}
	// reconcile does what the agent does on a membership change.
	reconcile := func() map[netip.Addr]string {
		t.Helper()
		owners := Assign(policies, wants, members, time.Now(), time.Second)
		for _, m := range members {
			i := index(m.Name)
			if err := anns[i].Set(Local(m, policies, wants, owners, []string{"lo", ifName(i)})); err != nil {
				t.Fatalf("%s: Set: %v", m.Name, err)
			}
		}
		return owners
	}
	owners := reconcile()
	if owners[lb4] != order[0] || owners[lb6] != order[0] {
		t.Fatalf("owners %v, want %s", owners, order[0])
	}
	// Declarative: the same state again changes nothing.
	before := anns[index(order[0])].Owned()
	reconcile()
	if after := anns[index(order[0])].Owned(); len(after) != 2 || fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("second Set changed %v into %v", before, after)
	}

	ownerMAC := s.mac(index(order[0]))
	t.Run("arping sees only the owner", func(t *testing.T) {
		out, err := s.exec(s.client, "arping", "-b", "-c", "3", "-w", "4", "-I", "eth0", lb4.String())
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		macs := map[string]int{}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "reply from") {
				macs[strings.ToLower(macRE.FindString(line))]++
			}
		}
		if len(macs) != 1 || macs[ownerMAC] == 0 {
			t.Fatalf("replies from %v, want only %s (%s)\n%s", macs, ownerMAC, order[0], out)
		}
	})
	t.Run("ndisc6 sees only the owner", func(t *testing.T) {
		out, err := s.exec(s.client, "ndisc6", "-m", "-n", "-r", "2", "-w", "400", lb6.String(), "eth0")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		macs := map[string]int{}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "Target link-layer address") {
				macs[strings.ToLower(macRE.FindString(line))]++
			}
		}
		if len(macs) != 1 || macs[ownerMAC] == 0 {
			t.Fatalf("advertisements from %v, want only %s (%s)\n%s", macs, ownerMAC, order[0], out)
		}
	})

	// The client learns both IPs in its kernel neighbour table, as a host
	// sending to the service would. The pings get no answer (no datapath
	// here); only the resolution matters.
	s.exec(s.client, "ping", "-c", "1", "-W", "0.3", lb4.String())
	s.exec(s.client, "ping", "-6", "-c", "1", "-W", "0.3", lb6.String())
	for _, ip := range []netip.Addr{lb4, lb6} {
		if got := s.neigh(ip); got != ownerMAC {
			t.Fatalf("client's neighbour entry for %s is %q, want owner %s", ip, got, ownerMAC)
		}
	}

	// waitMoved waits until the client's entries for both IPs carry mac
	// and returns how long that took from start.
	waitMoved := func(start time.Time, mac string) time.Duration {
		t.Helper()
		deadline := start.Add(3 * time.Second)
		for {
			if s.neigh(lb4) == mac && s.neigh(lb6) == mac {
				return time.Since(start)
			}
			if time.Now().After(deadline) {
				t.Fatalf("client's entries after 3s: %s → %q, %s → %q; want %s", lb4, s.neigh(lb4), lb6, s.neigh(lb6), mac)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	t.Run("owner dies", func(t *testing.T) {
		dead := index(order[0])
		start := time.Now()
		anns[dead].Close()
		members = slices.DeleteFunc(members, func(m Member) bool { return m.Name == order[0] })
		owners := reconcile()
		if owners[lb4] != order[1] {
			t.Fatalf("owner after death %v, want %s", owners, order[1])
		}
		took := waitMoved(start, s.mac(index(order[1])))
		t.Logf("failover on death: client sees %s's MAC %v after Close", order[1], took)
		if took > time.Second {
			t.Errorf("failover took %v, want under 1s", took)
		}
	})

	t.Run("owner loses carrier", func(t *testing.T) {
		cur := index(order[1])
		a := anns[cur]
		if !a.LinkUp(ifName(cur)) {
			t.Fatalf("LinkUp(%s) = false before the peer went down", ifName(cur))
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		events := make(chan bool, 16)
		if err := a.WatchLinks(ctx, func(name string, up bool) {
			if name == ifName(cur) {
				events <- up
			}
		}); err != nil {
			t.Fatal(err)
		}
		if up := <-events; !up {
			t.Fatal("first watch event says the link is down")
		}
		start := time.Now()
		s.ipn(s.seg, "link", "set", peerName(cur), "down")
		select {
		case up := <-events:
			if up {
				t.Fatal("watch reported up after the peer went down")
			}
		case <-time.After(2 * time.Second):
			t.Fatal("no link event within 2s of the peer going down")
		}
		t.Logf("carrier loss seen after %v", time.Since(start))
		if a.LinkUp(ifName(cur)) {
			t.Error("LinkUp still true without carrier")
		}
		for i := range members {
			if members[i].Name == order[1] {
				members[i].Eligible = false
			}
		}
		owners := reconcile()
		if owners[lb4] != order[2] {
			t.Fatalf("owner after carrier loss %v, want %s", owners, order[2])
		}
		if len(a.Owned()) != 0 {
			t.Errorf("ineligible node still answers for %v", a.Owned())
		}
		took := waitMoved(start, s.mac(index(order[2])))
		t.Logf("failover on carrier loss: client sees %s's MAC %v after the peer went down", order[2], took)
		if took > time.Second {
			t.Errorf("failover took %v, want under 1s", took)
		}

		// The link coming back is reported too.
		s.ipn(s.seg, "link", "set", peerName(cur), "up")
		select {
		case up := <-events:
			if !up {
				t.Fatal("watch reported down after the peer came up")
			}
		case <-time.After(2 * time.Second):
			t.Fatal("no link event within 2s of the peer coming up")
		}
	})

	t.Run("given up is not answered", func(t *testing.T) {
		last := index(order[2])
		if err := anns[last].Set(nil); err != nil {
			t.Fatal(err)
		}
		out, err := s.exec(s.client, "arping", "-b", "-c", "1", "-w", "1", "-I", "eth0", lb4.String())
		if err == nil || strings.Contains(out, "reply from") {
			t.Fatalf("someone still answers for %s:\n%s", lb4, out)
		}
	})
}
