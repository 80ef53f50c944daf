package agent_test

// Policy lab tests: Cilium's policy YAML, applied through the local API and
// enforced by every node's datapath on identities. They need root.

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/lab"
	"github.com/fabric-net/fabric/fabric/lab/labtest"
)

// The demo from Cilium's documentation, on the lab's probe port (7777)
// instead of 80: only the empire may reach the deathstar.
const deathstarPolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: rule1
  namespace: default
spec:
  description: L3-L4 policy to restrict deathstar access to empire ships only
  endpointSelector:
    matchLabels:
      org: empire
      class: deathstar
  ingress:
  - fromEndpoints:
    - matchLabels:
        org: empire
    toPorts:
    - ports:
      - port: "7777"
        protocol: TCP
`

// probe runs `fabric lab probe` inside a workload and reports whether the
// target echoed.
func probe(t *testing.T, ctx context.Context, l *lab.Lab, from, proto string, to netip.Addr) bool {
	t.Helper()
	out, _ := l.Exec(ctx, from, l.Spec().Binary, "lab", "probe", "-o", "json", "--timeout", "700ms",
		"--"+proto, netip.AddrPortFrom(to, lab.ProbePort).String())
	var o lab.ProbeOutcome
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &o); err != nil {
		t.Fatalf("probe output %q: %v", out, err)
	}
	return o.OK
}

func TestLabPolicyDeathstar(t *testing.T) {
	labtest.SkipUnlessAvailable(t)
	labtest.SkipUnlessCNI(t, labtest.Binary(t))
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 2, Mode: "vxlan"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := "k8s:io.kubernetes.pod.namespace=default"
	add := func(node, name, labels string) netip.Addr {
		w, err := l.AddWorkload(ctx, node, name, labels+","+ns)
		if err != nil {
			t.Fatal(err)
		}
		for _, ip := range w.IPs {
			if ip.Is4() {
				return ip
			}
		}
		t.Fatalf("%s has no IPv4 address", name)
		return netip.Addr{}
	}
	deathstar := add("c1-n2", "deathstar", "org=empire,class=deathstar")
	add("c1-n1", "tiefighter", "org=empire,class=tiefighter")
	add("c1-n1", "xwing", "org=alliance,class=xwing")
	add("c1-n2", "xwing-local", "org=alliance,class=xwing")

	// Before any policy everything is allowed.
	for _, from := range []string{"tiefighter", "xwing", "xwing-local"} {
		if !probe(t, ctx, l, from, "tcp", deathstar) {
			t.Fatalf("%s cannot reach the deathstar before any policy", from)
		}
	}

	c := l.Client("c1-n1")
	before := time.Now()
	infos, err := c.ApplyPolicies(ctx, []byte(deathstarPolicy))
	if err != nil {
		t.Fatal(err)
	}
	applied := time.Now()
	t.Logf("applied %s/%s", infos[0].Namespace, infos[0].Name)
	// The deathstar's node programs it into its datapath at once: its
	// next Apply follows the write on another node within milliseconds.
	for {
		st, err := l.Client("c1-n2").Status(ctx)
		if err == nil && st.Datapath.LastApply.After(before) {
			t.Logf("policy programmed on c1-n2 %s after the apply was sent to c1-n1 (%s of it the apply's own round trip)",
				st.Datapath.LastApply.Sub(before).Round(time.Millisecond), applied.Sub(before).Round(time.Millisecond))
			break
		}
		if time.Since(applied) > 2*time.Second {
			t.Fatalf("c1-n2's datapath not programmed 2s after the apply (last apply %v)", st.Datapath.LastApply)
		}
		time.Sleep(2 * time.Millisecond)
	}
	// Enforced everywhere quickly: the xwing on the other node is cut off.
	for probe(t, ctx, l, "xwing", "tcp", deathstar) {
		if time.Since(applied) > 5*time.Second {
			t.Fatal("policy not enforced 5s after apply")
		}
	}
	t.Logf("xwing cut off %s after apply (probe timeout 700ms included)", time.Since(applied).Round(time.Millisecond))

	cases := []struct {
		from, proto string
		want        bool
	}{
		{"tiefighter", "tcp", true},   // empire, allowed port: the reply comes back
		{"xwing", "tcp", false},       // alliance, other node
		{"xwing-local", "tcp", false}, // alliance, same node
		{"tiefighter", "udp", false},  // empire, but only TCP is allowed
	}
	for _, tc := range cases {
		if got := probe(t, ctx, l, tc.from, tc.proto, deathstar); got != tc.want {
			t.Errorf("%s → deathstar %s: allowed=%v, want %v", tc.from, tc.proto, got, tc.want)
		}
	}
	drops, err := l.Client("c1-n2").Drops(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if drops["policy"] == 0 {
		t.Errorf("no policy drop counted on the deathstar's node: %v", drops)
	}

	// The same through the deathstar service, as in Cilium's demo: its
	// cluster IP on port 80 leads to the deathstar's 7777, and policy
	// judges the backend it reached.
	svc, err := c.ApplyServices(ctx, []byte(`apiVersion: v1
kind: Service
metadata: {name: deathstar, namespace: default, labels: {app.kubernetes.io/name: deathstar}}
spec:
  type: ClusterIP
  selector: {org: empire, class: deathstar}
  ports: [{port: 80, protocol: TCP, targetPort: 7777}]
`))
	if err != nil {
		t.Fatal(err)
	}
	waitBackends(t, ctx, l, "c1-n1", "default/deathstar", 1)
	landing := netip.AddrPortFrom(netip.MustParseAddr(svc[0].ClusterIP), 80)
	if r := who(t, ctx, l, "tiefighter", landing, 3, 0); r[0].Error != "" || r[0].Server != netip.AddrPortFrom(deathstar, lab.ProbePort).String() {
		t.Errorf("tiefighter → deathstar service %s: %+v, want an answer from the deathstar", landing, r[0])
	}
	if r := who(t, ctx, l, "xwing", landing, 1, 0); r[0].Error == "" {
		t.Errorf("xwing → deathstar service %s: answered by %s, want a policy drop", landing, r[0].Server)
	}
	// The xwing's node saw the connection leave for the service and
	// names it; the deathstar's node dropped it.
	var viaService bool
	err = l.Client("c1-n1").Flows(ctx, api.FlowFilter{Labels: "class=xwing"}, false, func(f api.Flow) error {
		if f.Service == landing.String() && f.Dest.IP == deathstar.String() && f.Direction == "egress" {
			viaService = true
		}
		return nil
	})
	if err != nil || !viaService {
		t.Errorf("no flow on c1-n1 of the xwing to the deathstar through service %s (%v)", landing, err)
	}

	// `fabric observe` on the deathstar's node shows the xwing's drop with
	// its reason, identities and labels.
	var seen []api.Flow
	err = l.Client("c1-n2").Flows(ctx, api.FlowFilter{Verdict: "dropped", Labels: "class=xwing"}, false, func(f api.Flow) error {
		seen = append(seen, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range seen {
		if f.Reason == "policy" && f.Dest.Port == lab.ProbePort && f.Dest.IP == deathstar.String() &&
			strings.Contains(f.Dest.Labels, "class=deathstar") && strings.Contains(f.Source.Labels, "org=alliance") {
			found = true
		}
	}
	if !found {
		t.Errorf("no policy drop of an xwing flow to the deathstar in the node's flows: %+v", seen)
	}

	// The trace says the same, and names the rule.
	tr, err := c.TracePolicy(ctx, traceReq("org=alliance,class=xwing,"+ns, "org=empire,class=deathstar,"+ns))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Verdict != "deny" || !strings.Contains(tr.Reason+tr.Ingress.Reason, "rule1") {
		t.Errorf("trace xwing → deathstar: %+v", tr)
	}
	tr, err = c.TracePolicy(ctx, traceReq("org=empire,class=tiefighter,"+ns, "org=empire,class=deathstar,"+ns))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Verdict != "allow" {
		t.Errorf("trace tiefighter → deathstar: %+v", tr)
	}

	// A deny beats the allow; deleting both restores access.
	deny := `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: no-tiefighters, namespace: default}
spec:
  endpointSelector: {matchLabels: {class: deathstar}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {class: tiefighter}}]
`
	if _, err := c.ApplyPolicies(ctx, []byte(deny)); err != nil {
		t.Fatal(err)
	}
	waitProbe(t, ctx, l, "tiefighter", deathstar, false)
	for _, name := range []string{"rule1", "no-tiefighters"} {
		if err := c.DeletePolicy(ctx, "CiliumNetworkPolicy", "default", name); err != nil {
			t.Fatal(err)
		}
	}
	waitProbe(t, ctx, l, "xwing", deathstar, true)
}

func TestLabPolicyEgressAndCIDR(t *testing.T) {
	labtest.SkipUnlessAvailable(t)
	labtest.SkipUnlessCNI(t, labtest.Binary(t))
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 2, Mode: "native"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ips := map[string]netip.Addr{}
	for _, w := range []struct{ node, name, labels string }{
		{"c1-n1", "client", "app=client"}, {"c1-n2", "db", "app=db"}, {"c1-n2", "web", "app=web"},
	} {
		wl, err := l.AddWorkload(ctx, w.node, w.name, w.labels)
		if err != nil {
			t.Fatal(err)
		}
		ips[w.name] = wl.IPs[0]
	}
	c := l.Client("c1-n2")
	egress := `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: client-to-web-only}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "7777", protocol: ANY}]}]
`
	if _, err := c.ApplyPolicies(ctx, []byte(egress)); err != nil {
		t.Fatal(err)
	}
	waitProbe(t, ctx, l, "client", ips["db"], false)
	if !probe(t, ctx, l, "client", "tcp", ips["web"]) || !probe(t, ctx, l, "client", "udp", ips["web"]) {
		t.Error("client cannot reach web, which its egress policy allows (replies must pass)")
	}
	// The db is not selected by any policy and can still reach the client:
	// egress enforcement is the client's, and it does not stop replies.
	if !probe(t, ctx, l, "db", "tcp", ips["web"]) {
		t.Error("db → web blocked, though no policy selects either for that direction")
	}

	// CIDR rules: the lab's router (10.99.1.1) is outside the cluster. It
	// routes the pod pool back through c1-n1, where the client runs.
	if out, err := l.Exec(ctx, lab.RouterMember, "ip", "route", "add", "10.201.0.0/16", "via", "10.99.1.11"); err != nil {
		t.Fatalf("route the pod pool on the router: %v: %s", err, out)
	}
	ping := func() bool {
		_, err := l.Exec(ctx, "client", "ping", "-c", "1", "-W", "1", "10.99.1.1")
		return err == nil
	}
	waitPing := func(want bool, why string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for ping() != want {
			if time.Now().After(deadline) {
				t.Fatalf("client → router (10.99.1.1) ping: allowed never became %v: %s", want, why)
			}
		}
	}
	waitPing(false, "the client's egress allows only web")
	apply := func(y string) {
		t.Helper()
		if _, err := c.ApplyPolicies(ctx, []byte(y)); err != nil {
			t.Fatal(err)
		}
	}
	apply(`apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: underlay-but-router}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toCIDRSet: [{cidr: 10.99.0.0/16, except: [10.99.1.1/32]}]
`)
	time.Sleep(300 * time.Millisecond)
	waitPing(false, "the router is carved out of the CIDR by except")
	apply(`apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: router}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toCIDR: [10.99.1.1/32]
`)
	waitPing(true, "toCIDR 10.99.1.1/32 allows it")
	apply(`apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: no-router-subnet}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egressDeny:
  - toCIDR: [10.99.1.0/24]
`)
	waitPing(false, "egressDeny toCIDR 10.99.1.0/24 beats the allow")
	if drops, err := l.Client("c1-n1").Drops(ctx); err != nil || drops["policy"] == 0 {
		t.Errorf("c1-n1 counts no policy drop (%v, err %v)", drops, err)
	}
	// Still nothing else: the web stays reachable, the db does not.
	if !probe(t, ctx, l, "client", "tcp", ips["web"]) || probe(t, ctx, l, "client", "tcp", ips["db"]) {
		t.Error("CIDR rules changed what the client reaches inside the cluster")
	}
}

func traceReq(from, to string) api.TraceRequest {
	return api.TraceRequest{From: api.TraceEnd{Labels: from}, To: api.TraceEnd{Labels: to}, Port: 7777, Proto: "tcp"}
}

// waitProbe waits until a TCP probe from a workload gives want.
func waitProbe(t *testing.T, ctx context.Context, l *lab.Lab, from string, to netip.Addr, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for probe(t, ctx, l, from, "tcp", to) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s → %s: allowed never became %v", from, to, want)
		}
	}
}
