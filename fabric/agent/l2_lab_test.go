package agent_test

// L2 announcement lab tests: load-balancer IPs from a pool on the nodes'
// own segment, answered over ARP and NDP by exactly one node chosen from
// gossip's members, reached by a client on that segment, and taken over
// when the owner dies or loses its link. They need root.

import (
	"context"
	"encoding/json"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fabric-net/fabric/fabric/lab"
	"github.com/fabric-net/fabric/fabric/lab/labtest"
)

const l2Pool = `apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: segment}
spec:
  blocks:
  - {start: 10.99.1.200, stop: 10.99.1.201}
  - {cidr: "fd99:1::200/127"}
`

const l2Policy = `apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: segment}
spec:
  interfaces: ["^eth0$"]
  loadBalancerIPs: true
  externalIPs: true
`

const l2Service = `apiVersion: v1
kind: Service
metadata: {name: front, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: front}
  ports: [{port: 80, protocol: TCP, targetPort: 7777}]
`

// macsOf runs arping (IPv4) or ndisc6 (IPv6) from the client and returns
// the distinct MACs that answered.
func macsOf(t *testing.T, ctx context.Context, l *lab.Lab, ip netip.Addr) map[string]bool {
	t.Helper()
	var argv []string
	if ip.Is4() {
		argv = []string{"arping", "-c", "3", "-w", "2", "-I", "eth0", ip.String()}
	} else {
		argv = []string{"ndisc6", "-m", "-n", "-r", "3", "-w", "300", ip.String(), "eth0"}
	}
	out, _ := l.Exec(ctx, lab.ClientMember(1), argv...)
	macs := map[string]bool{}
	for _, f := range strings.Fields(strings.ToLower(string(out))) {
		f = strings.Trim(f, "[]()")
		if len(f) == 17 && strings.Count(f, ":") == 5 {
			macs[f] = true
		}
	}
	return macs
}

// nodeMAC returns the MAC of a node's eth0.
func nodeMAC(t *testing.T, ctx context.Context, l *lab.Lab, node string) string {
	t.Helper()
	out, err := l.Exec(ctx, node, "ip", "-j", "link", "show", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show eth0 on %s: %s", node, out)
	}
	return strings.ToLower(links[0].Address)
}

func l2Owner(t *testing.T, ctx context.Context, l *lab.Lab, nodes []string, ip netip.Addr) string {
	t.Helper()
	owner := ""
	for _, n := range nodes {
		st, err := l.Client(n).L2Status(ctx)
		if err != nil {
			continue
		}
		for _, o := range st.Owned {
			if o.IP == ip.String() {
				if owner != "" {
					t.Errorf("%s is announced by %s and %s", ip, owner, n)
				}
				owner = n
			}
		}
	}
	return owner
}

func TestLabL2Announcements(t *testing.T) {
	labtest.SkipUnlessAvailable(t)
	labtest.SkipUnlessCNI(t, labtest.Binary(t))
	for _, tool := range []string{"arping", "ndisc6"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (bash .ci/deps.sh installs it)", tool)
		}
	}
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 3, Mode: "vxlan",
		AgentConfig: map[string]any{"l2Announcements": true}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	nodes := []string{"c1-n1", "c1-n2", "c1-n3"}
	for _, n := range nodes {
		if _, err := l.AddWorkload(ctx, n, "front-"+n[3:], "app=front"); err != nil {
			t.Fatal(err)
		}
	}
	c := l.Client("c1-n1")
	if _, err := c.ApplyLBPools(ctx, []byte(l2Pool)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ApplyL2Policies(ctx, []byte(l2Policy)); err != nil {
		t.Fatal(err)
	}
	// One service on IPv4 from the pool, one asking for an IPv6 address.
	front6 := strings.Replace(l2Service, "name: front, namespace: default}", "name: front6, namespace: default, annotations: {lbipam.cilium.io/ips: \"fd99:1::200\"}}", 1)
	var v4, v6 netip.Addr
	for _, y := range []string{l2Service, front6} {
		infos, err := c.ApplyServices(ctx, []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range infos[0].LoadBalancerIPs {
			ip := netip.MustParseAddr(s)
			if ip.Is4() {
				v4 = ip
			} else {
				v6 = ip
			}
		}
	}
	if !v4.IsValid() || v6 != netip.MustParseAddr("fd99:1::200") {
		t.Fatalf("services got load-balancer IPs %v and %v, want one from the pool and fd99:1::200", v4, v6)
	}

	// Pool conflicts and exhaustion give clear statuses.
	taken := strings.Replace(strings.Replace(l2Service, "name: front", "name: thief", 1), "spec:\n", "spec:\n  loadBalancerIP: "+v4.String()+"\n", 1)
	got, err := c.ApplyServices(ctx, []byte(taken))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(got[0].Conditions, " "), "RequestedIPUnavailable") {
		t.Errorf("a held address asked for: conditions %v, want RequestedIPUnavailable", got[0].Conditions)
	}
	more := strings.Replace(l2Service, "name: front", "name: more", 1)
	for _, name := range []string{"more", "more2"} {
		got, err = c.ApplyServices(ctx, []byte(strings.Replace(more, "name: more", "name: "+name, 1)))
		if err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(strings.Join(got[0].Conditions, " "), "PoolExhausted") {
		t.Errorf("third IPv4 service of a two-address pool: conditions %v, want PoolExhausted", got[0].Conditions)
	}

	// Exactly one node answers for each address, and the client reaches
	// the service through it.
	macs := map[string]string{}
	for _, n := range nodes {
		macs[nodeMAC(t, ctx, l, n)] = n
	}
	var owner string
	deadline := time.Now().Add(15 * time.Second)
	for {
		owner = l2Owner(t, ctx, l, nodes, v4)
		if owner != "" && l2Owner(t, ctx, l, nodes, v6) != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no node announces the load-balancer IPs after 15s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, ip := range []netip.Addr{v4, v6} {
		seen := macsOf(t, ctx, l, ip)
		if len(seen) != 1 {
			t.Fatalf("%s is answered by %d MACs (%v), want exactly one", ip, len(seen), seen)
		}
		for m := range seen {
			t.Logf("%s answered by %s (%s)", ip, m, macs[m])
			if macs[m] == "" {
				t.Errorf("%s answered by %s, which is no node's eth0", ip, m)
			}
		}
	}
	reach := func(ip netip.Addr) bool {
		r := who(t, ctx, l, lab.ClientMember(1), netip.AddrPortFrom(ip, 80), 1, 0)
		return r[0].Error == ""
	}
	if !reach(v4) || !reach(v6) {
		svcs, _ := l.Client(owner).Services(ctx)
		drops, _ := l.Client(owner).Drops(ctx)
		neigh, _ := l.Exec(ctx, lab.ClientMember(1), "ip", "neigh")
		r := who(t, ctx, l, lab.ClientMember(1), netip.AddrPortFrom(v4, 80), 1, 0)
		t.Fatalf("the client cannot reach the service on %s / %s: %+v\nservices on %s: %+v\ndrops: %v\nclient neighbours: %s", v4, v6, r, owner, svcs, drops, neigh)
	}

	// The owner dies: its agent is killed and its link cut (a dead node
	// forwards nothing; an agent killed alone would leave its pinned
	// datapath serving). Another node takes over, tells the client by
	// gratuitous ARP / unsolicited NA, and the client's connections resume.
	if err := l.Kill(owner, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := l.LinkDown(owner); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for !reach(v4) {
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("10s after killing %s's agent, %s is still unreachable", owner, v4)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s reachable again %s after killing the owner %s", v4, time.Since(killed).Round(time.Millisecond), owner)
	alive := []string{}
	for _, n := range nodes {
		if n != owner {
			alive = append(alive, n)
		}
	}
	owner2 := l2Owner(t, ctx, l, alive, v4)
	if owner2 == "" {
		t.Fatalf("after the kill, no node announces %s", v4)
	}
	if seen := macsOf(t, ctx, l, v4); len(seen) != 1 || macs[firstKey(seen)] != owner2 {
		t.Errorf("after the kill %s is answered by %v, want %s alone", v4, seen, owner2)
	}
	if !reach(v6) {
		t.Errorf("after the kill, %s is unreachable", v6)
	}

	// Take the new owner's link down: the last node takes over.
	if err := l.LinkDown(owner2); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	var owner3 string
	for {
		st, err := l.Client(owner2).L2Status(ctx)
		gaveUp := err == nil && len(st.Owned) == 0
		if gaveUp {
			if owner3 = l2Owner(t, ctx, l, alive, v4); owner3 != "" && owner3 != owner2 && reach(v4) {
				break
			}
		}
		if time.Since(down) > 10*time.Second {
			t.Fatalf("10s after %s lost its link: it gave up its addresses: %v (%+v); new owner %q", owner2, gaveUp, st, owner3)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s moved from %s to %s and was reachable again %s after %s lost its link", v4, owner2, owner3,
		time.Since(down).Round(time.Millisecond), owner2)
	if seen := macsOf(t, ctx, l, v4); len(seen) != 1 || macs[firstKey(seen)] != owner3 {
		t.Errorf("after the link loss %s is answered by %v, want %s alone", v4, seen, owner3)
	}
}

func firstKey(m map[string]bool) string {
	for k := range m {
		return k
	}
	return ""
}
