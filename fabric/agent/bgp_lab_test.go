package agent_test

// BGP lab tests: FRR as the top-of-rack router between two racks, every
// agent a BGP speaker. Pods in different racks reach each other only through
// the routes the nodes announce; a load-balancer IP served by several nodes
// is spread over them by ECMP; a dead node's routes are withdrawn. They need
// root and FRR.

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fabric-net/fabric/bgp/frr"
	"github.com/fabric-net/fabric/fabric/lab"
	"github.com/fabric-net/fabric/fabric/lab/labtest"
)

const bgpPool = `apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: routed}
spec:
  blocks: [{cidr: 10.97.0.0/29}]
`

func TestLabBGP(t *testing.T) {
	labtest.SkipUnlessAvailable(t)
	labtest.SkipUnlessCNI(t, labtest.Binary(t))
	if _, err := os.Stat(frr.Daemons + "/bgpd"); err != nil {
		t.Skip("needs FRR (bash .ci/deps.sh installs it)")
	}
	// n1 and n3 in rack 1 (10.99.1.0/24), n2 in rack 2 (10.100.1.0/24).
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 3, Racks: 2, BGP: true, Mode: "native"})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	nodes := []string{"c1-n1", "c1-n2", "c1-n3"}
	ips := map[string]netip.Addr{}
	for _, n := range nodes {
		w, err := l.AddWorkload(ctx, n, "web-"+n[3:], "app=web")
		if err != nil {
			t.Fatal(err)
		}
		ips[n] = ipv4Of(t, w)
	}

	// FRR learns every node's pod CIDRs, in both families.
	cidrs := map[string][]string{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := l.Client("c1-n1").Status(ctx)
		if err == nil {
			for _, nc := range st.NodeCIDRs {
				cidrs[nc.Node] = nc.CIDRs
			}
		}
		missing := routerMissing(t, l, cidrs, nodes)
		if len(cidrs) == len(nodes) && missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("FRR has not learned every pod CIDR after 30s: %s", missing)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// Pods in different racks reach each other: only the routes learned
	// over BGP lead from one rack's pods to the other's.
	// The nodes learn them from FRR a moment after FRR has them.
	waitProbe(t, ctx, l, "web-n1", ips["c1-n2"], true)
	waitProbe(t, ctx, l, "web-n2", ips["c1-n3"], true)
	if st, err := l.Client("c1-n2").BGP(ctx); err != nil || st.Established != len(st.Peers) || len(st.Learned) == 0 {
		t.Errorf("c1-n2's BGP: %+v (%v), want every session established and routes learned", st, err)
	}

	// A load-balancer IP with externalTrafficPolicy Local, served by n1 and
	// n2 (n3's backend is gone), is announced by those two alone and
	// spread over them by ECMP.
	c := l.Client("c1-n1")
	if _, err := c.ApplyLBPools(ctx, []byte(bgpPool)); err != nil {
		t.Fatal(err)
	}
	if err := l.DelWorkload(ctx, "web-n3"); err != nil {
		t.Fatal(err)
	}
	infos, err := c.ApplyServices(ctx, []byte(strings.Replace(webService, "  selector:", "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector:", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if len(infos[0].LoadBalancerIPs) != 1 {
		t.Fatalf("service got load-balancer IPs %v (%v)", infos[0].LoadBalancerIPs, infos[0].Conditions)
	}
	lbip := netip.MustParseAddr(infos[0].LoadBalancerIPs[0])
	host := netip.PrefixFrom(lbip, 32).String()
	deadline = time.Now().Add(20 * time.Second)
	for {
		routes, err := l.RouterRoutes("ipv4")
		if err == nil && multipaths(routes[host]) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("FRR has not 2 multipaths for %s after 20s: %+v (%v)", host, routes[host], err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// zebra installs FRR's choice into the router's kernel a moment later.
	for {
		out, err := l.Exec(ctx, lab.RouterMember, "ip", "-j", "route", "show", host)
		if err == nil && strings.Count(string(out), `"gateway"`) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the router's kernel route to %s has not 2 next hops: %s (%v)", host, out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	res := who(t, ctx, l, lab.ExtMember, netip.AddrPortFrom(lbip, 80), 40, 0)
	got := spread(res)
	t.Logf("40 connections from outside to %s: %v", lbip, got)
	if got[""] > 0 || got[ips["c1-n1"].String()] == 0 || got[ips["c1-n2"].String()] == 0 {
		t.Errorf("outside → %s: %v (errors %v), want every connection answered, by both backends", lbip, got, whoErrors(res))
	}

	// Kill n2's agent: its sessions drop and FRR withdraws its routes.
	if err := l.Kill("c1-n2", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	n2cidr := cidrs["c1-n2"][0]
	for {
		routes, err := l.RouterRoutes("ipv4")
		if err == nil && len(routes[n2cidr]) == 0 && multipaths(routes[host]) <= 1 {
			break
		}
		if time.Since(killed) > 15*time.Second {
			t.Fatalf("15s after killing c1-n2's agent FRR still has %s: %+v / %s: %+v", n2cidr, routes[n2cidr], host, routes[host])
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("FRR withdrew c1-n2's routes %s after its agent was killed", time.Since(killed).Round(time.Millisecond))
	// Once zebra has the kernel route down to one next hop, outside
	// traffic goes to n1 alone.
	for {
		out, err := l.Exec(ctx, lab.RouterMember, "ip", "-j", "route", "show", host)
		if err == nil && strings.Count(string(out), `"gateway"`) <= 1 {
			break
		}
		if time.Since(killed) > 15*time.Second {
			t.Fatalf("the router's kernel route to %s keeps c1-n2: %s", host, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	res = who(t, ctx, l, lab.ExtMember, netip.AddrPortFrom(lbip, 80), 10, 0)
	if got := spread(res); got[""] > 0 || got[ips["c1-n1"].String()] != 10 {
		t.Errorf("after c1-n2 died, outside → %s: %v, want all 10 on c1-n1's backend", lbip, got)
	}
}

func multipaths(ps []frr.Path) int {
	n := 0
	for _, p := range ps {
		if p.Multipath || p.Best {
			n++
		}
	}
	return n
}

// routerMissing names the pod CIDRs FRR lacks, "" when it has them all.
func routerMissing(t *testing.T, l *lab.Lab, cidrs map[string][]string, nodes []string) string {
	t.Helper()
	have := map[string]bool{}
	for _, afi := range []string{"ipv4", "ipv6"} {
		routes, err := l.RouterRoutes(afi)
		if err != nil {
			return err.Error()
		}
		for p := range routes {
			have[p] = true
		}
	}
	var missing []string
	for _, n := range nodes {
		if len(cidrs[n]) == 0 {
			missing = append(missing, n+": no CIDR yet")
		}
		for _, c := range cidrs[n] {
			if !have[c] {
				missing = append(missing, n+" "+c)
			}
		}
	}
	b, _ := json.Marshal(missing)
	if len(missing) == 0 {
		return ""
	}
	return string(b)
}

// The demo `make lab` runs: a service, a policy and load-balancer IPs
// reached from outside both ways, here in VXLAN mode over two racks.
func TestLabDemo(t *testing.T) {
	labtest.SkipUnlessAvailable(t)
	labtest.SkipUnlessCNI(t, labtest.Binary(t))
	if _, err := os.Stat(frr.Daemons + "/bgpd"); err != nil {
		t.Skip("needs FRR (bash .ci/deps.sh installs it)")
	}
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 3, Racks: 2, BGP: true, Mode: "vxlan"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := l.Demo(ctx)
	var b strings.Builder
	rep.WriteText(&b)
	t.Logf("demo:\n%s", b.String())
	if err != nil || !rep.OK() || len(rep.Steps) != 7 {
		t.Fatalf("demo failed (%v, %d steps)", err, len(rep.Steps))
	}
}
