package agent_test

// Service lab tests: Kubernetes Service YAML applied through the local API,
// cluster IPs allocated through the store, and every node's datapath
// balancing connections over the backends with Maglev. They need root.

import (
	"context"
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/lab"
	"github.com/fabric-net/fabric/fabric/lab/labtest"
)

const webService = `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector:
    app: web
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: 7777
  - name: dns
    protocol: UDP
    port: 53
    targetPort: 7777
`

const stickyService = `apiVersion: v1
kind: Service
metadata:
  name: sticky
  namespace: default
spec:
  selector:
    app: web
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 60
  ports:
  - port: 8080
    targetPort: 7777
`

// who runs `fabric lab probe --who` in a workload: n connections to addr,
// each held for hold and asked again.
func who(t *testing.T, ctx context.Context, l *lab.Lab, from string, addr netip.AddrPort, n int, hold time.Duration) []lab.WhoResult {
	t.Helper()
	args := []string{l.Spec().Binary, "lab", "probe", "-o", "json", "--timeout", "2s",
		"--who", strconv.Itoa(n), "--tcp", addr.String()}
	if hold > 0 {
		args = append(args, "--hold", hold.String())
	}
	out, _ := l.Exec(ctx, from, args...)
	var res []lab.WhoResult
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r lab.WhoResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("probe --who output %q: %v", out, err)
		}
		res = append(res, r)
	}
	return res
}

// whoErrors counts the distinct errors of failed connections, for the log
// of a test that failed.
func whoErrors(res []lab.WhoResult) map[string]int {
	m := map[string]int{}
	for _, r := range res {
		if r.Error != "" {
			m[r.Error]++
		}
	}
	return m
}

// spread counts connections per backend IP; failed ones under "".
func spread(res []lab.WhoResult) map[string]int {
	m := map[string]int{}
	for _, r := range res {
		if r.Error != "" {
			m[""]++
			continue
		}
		ap, err := netip.ParseAddrPort(r.Server)
		if err != nil {
			m[""]++
			continue
		}
		m[ap.Addr().String()]++
	}
	return m
}

func ipv4Of(t *testing.T, w lab.Workload) netip.Addr {
	t.Helper()
	for _, ip := range w.IPs {
		if ip.Is4() {
			return ip
		}
	}
	t.Fatalf("%s has no IPv4 address", w.Name)
	return netip.Addr{}
}

func TestLabServices(t *testing.T) {
	labtest.SkipUnlessAvailable(t)
	labtest.SkipUnlessCNI(t, labtest.Binary(t))
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 2, Mode: "vxlan"})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ns := ",k8s:io.kubernetes.pod.namespace=default"
	backends := map[string]netip.Addr{}
	for _, b := range []struct{ node, name string }{{"c1-n1", "web-1"}, {"c1-n2", "web-2"}, {"c1-n2", "web-3"}} {
		w, err := l.AddWorkload(ctx, b.node, b.name, "app=web"+ns)
		if err != nil {
			t.Fatal(err)
		}
		backends[b.name] = ipv4Of(t, w)
	}
	if _, err := l.AddWorkload(ctx, "c1-n1", "client", "app=client"+ns); err != nil {
		t.Fatal(err)
	}
	c1 := l.Client("c1-n1")

	// Bad input is refused with the field named, and nothing is stored.
	_, err := c1.ApplyServices(ctx, []byte(strings.Replace(webService, "port: 80", "port: 80000", 1)))
	if err == nil || !strings.Contains(err.Error(), "spec.ports[0].port") {
		t.Fatalf("a port out of range: err = %v, want one naming spec.ports[0].port", err)
	}

	infos, err := c1.ApplyServices(ctx, []byte(webService))
	if err != nil {
		t.Fatal(err)
	}
	cip, err := netip.ParseAddr(infos[0].ClusterIP)
	if err != nil || !netip.MustParsePrefix("10.96.0.0/16").Contains(cip) {
		t.Fatalf("cluster IP %q is not from the service CIDR 10.96.0.0/16", infos[0].ClusterIP)
	}
	// Applying again keeps the cluster IP.
	again, err := c1.ApplyServices(ctx, []byte(webService))
	if err != nil || again[0].ClusterIP != infos[0].ClusterIP {
		t.Fatalf("re-apply: cluster IP %v (err %v), want %s kept", again, err, cip)
	}
	// A second service gets another address; asking for a held one conflicts.
	taken := strings.Replace(strings.Replace(webService, "name: web\n", "name: web2\n", 1), "spec:\n", "spec:\n  clusterIP: "+cip.String()+"\n", 1)
	if _, err := c1.ApplyServices(ctx, []byte(taken)); err == nil || !strings.Contains(err.Error(), "spec.clusterIP") {
		t.Fatalf("a held cluster IP: err = %v, want a conflict naming spec.clusterIP", err)
	}
	frontend := netip.AddrPortFrom(cip, 80)

	// Wait until both nodes program the three backends.
	waitBackends(t, ctx, l, "c1-n1", "default/web", 3)
	waitBackends(t, ctx, l, "c1-n2", "default/web", 3)

	// Every backend gets a near-uniform share of many connections.
	res := who(t, ctx, l, "client", frontend, 300, 0)
	got := spread(res)
	t.Logf("300 connections to %s: %v", frontend, got)
	if got[""] > 0 {
		t.Errorf("%d connections failed: %+v", got[""], firstError(res))
	}
	for name, ip := range backends {
		if n := got[ip.String()]; n < 60 || n > 140 {
			t.Errorf("backend %s (%s) got %d of 300 connections, want about 100", name, ip, n)
		}
	}
	// UDP through the same service.
	if out, err := l.Exec(ctx, "client", l.Spec().Binary, "lab", "probe", "--udp", netip.AddrPortFrom(cip, 53).String()); err != nil {
		t.Errorf("UDP through the service: %v: %s", err, out)
	}
	// Hairpin: a backend reaches itself through its own service.
	for range 10 {
		if r := who(t, ctx, l, "web-1", frontend, 1, 0); r[0].Error != "" {
			t.Fatalf("hairpin from web-1: %s", r[0].Error)
		}
	}

	// NodePort from a host outside the cluster (the segment's client), on
	// either node's address: backends on this node and the other one.
	np, err := c1.ApplyServices(ctx, []byte(strings.Replace(strings.Replace(webService, "name: web\n", "name: web-np\n", 1),
		"spec:\n", "spec:\n  type: NodePort\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	nodePort := np[0].Ports[0].NodePort
	if nodePort < 30000 || nodePort > 32767 {
		t.Fatalf("node port %d is outside 30000-32767", nodePort)
	}
	waitBackends(t, ctx, l, "c1-n2", "default/web-np", 3)
	for _, node := range []string{"10.99.1.11", "10.99.1.12"} {
		addr := netip.AddrPortFrom(netip.MustParseAddr(node), nodePort)
		got := spread(who(t, ctx, l, lab.ClientMember(1), addr, 30, 0))
		t.Logf("30 connections from outside to node port %s: %v", addr, got)
		if got[""] > 0 || len(got) < 2 {
			t.Errorf("outside → %s: %v, want every connection answered, by several backends", addr, got)
		}
	}

	// Affinity: every connection of one client goes to one backend.
	if _, err := c1.ApplyServices(ctx, []byte(stickyService)); err != nil {
		t.Fatal(err)
	}
	waitBackends(t, ctx, l, "c1-n1", "default/sticky", 3)
	sticky := netip.AddrPortFrom(serviceIP(t, ctx, c1, "default/sticky"), 8080)
	// The first connection picks the backend; the next ones (here 30 at
	// once) follow it. Connections racing the very first one may not: the
	// choice is recorded by the first packet that finishes.
	first := spread(who(t, ctx, l, "client", sticky, 1, 0))
	if got := spread(who(t, ctx, l, "client", sticky, 30, 0)); len(got) != 1 || len(first) != 1 || got[firstKey(boolKeys(first))] != 30 {
		t.Errorf("ClientIP affinity: the first connection went to %v, the next 30 to %v; want one backend for all", first, got)
	}

	// Established connections keep their backend when another one goes.
	held := make(chan []lab.WhoResult, 1)
	go func() { held <- who(t, ctx, l, "client", frontend, 30, 3*time.Second) }()
	time.Sleep(1500 * time.Millisecond)
	if err := l.DelWorkload(ctx, "web-3"); err != nil {
		t.Fatal(err)
	}
	removed := backends["web-3"].String()
	kept, moved := 0, 0
	for _, r := range <-held {
		ap, _ := netip.ParseAddrPort(r.Server)
		if ap.Addr().String() == removed {
			continue // its backend is gone: failing is right
		}
		if r.Error != "" || r.Again != r.Server {
			moved++
			t.Errorf("a connection on %s broke or moved when web-3 went: %+v", r.Server, r)
			continue
		}
		kept++
	}
	t.Logf("removing web-3: %d established connections on other backends kept theirs, %d did not", kept, moved)
	waitBackends(t, ctx, l, "c1-n1", "default/web", 2)
	if got := spread(who(t, ctx, l, "client", frontend, 60, 0)); got[removed] != 0 || got[""] != 0 {
		t.Errorf("after web-3 went: %v, want no connection to %s and none failed", got, removed)
	}

	// A node gossip declares dead loses its backends within about a second:
	// its agent is killed, so n1 must stop choosing web-2 although its
	// pinned datapath would still forward.
	if err := l.Kill("c1-n2", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	gone := backends["web-2"].String()
	for {
		got := spread(who(t, ctx, l, "client", frontend, 20, 0))
		if got[gone] == 0 {
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("10s after killing c1-n2's agent, its backend %s still gets connections: %v", gone, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("backend on the killed node c1-n2 left the service %s after the kill", time.Since(killed).Round(time.Millisecond))

	if err := c1.DeleteService(ctx, "default", "web"); err != nil {
		t.Fatal(err)
	}
	if err := c1.DeleteService(ctx, "default", "web"); err == nil {
		t.Error("deleting a deleted service: no error")
	}
}

func firstError(res []lab.WhoResult) lab.WhoResult {
	for _, r := range res {
		if r.Error != "" {
			return r
		}
	}
	return lab.WhoResult{}
}

func serviceIP(t *testing.T, ctx context.Context, c *api.Client, key string) netip.Addr {
	t.Helper()
	svcs, err := c.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs {
		if s.Namespace+"/"+s.Name == key {
			return netip.MustParseAddr(s.ClusterIP)
		}
	}
	t.Fatalf("no service %s", key)
	return netip.Addr{}
}

// waitBackends waits until node's agent uses n backends (per service port
// counted once) for the service's cluster IP.
func waitBackends(t *testing.T, ctx context.Context, l *lab.Lab, node, key string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		svcs, err := l.Client(node).Services(ctx)
		if err == nil {
			for _, s := range svcs {
				if s.Namespace+"/"+s.Name != key {
					continue
				}
				addrs := map[string]bool{}
				for _, b := range s.Backends {
					addrs[b.Addr] = true
				}
				if len(addrs) == n {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: service %s has not %d backends after 20s (%v)", node, key, n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func boolKeys(m map[string]int) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}
