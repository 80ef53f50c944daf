package policy

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestCompileDeathstar(t *testing.T) {
	w := newWorld(t)
	ps := mustParseFile(t, "deathstar.yaml")
	eps := []Endpoint{w.endpoint("deathstar"), w.endpoint("xwing")}
	got := Compile(ps, eps, w.ids, nil)
	rule := "default/rule1: ingress[0]"
	want := EndpointPolicy{IngressEnforced: true, Entries: []Entry{
		// org=empire in namespace default, in every cluster.
		{Direction: Ingress, Verdict: Allow, Identity: w.byID["deathstar"], Proto: ProtoTCP, Port: 80, PortEnd: 80, Rule: rule},
		{Direction: Ingress, Verdict: Allow, Identity: w.byID["tiefighter"], Proto: ProtoTCP, Port: 80, PortEnd: 80, Rule: rule},
		{Direction: Ingress, Verdict: Allow, Identity: w.byID["remote"], Proto: ProtoTCP, Port: 80, PortEnd: 80, Rule: rule},
	}}
	if !reflect.DeepEqual(got["deathstar"], want) {
		t.Errorf("deathstar:\n got %+v\nwant %+v", got["deathstar"], want)
	}
	if x := got["xwing"]; x.IngressEnforced || x.EgressEnforced || len(x.Entries) != 0 {
		t.Errorf("xwing is selected by nothing, got %+v", x)
	}
}

func TestCompileEntitiesAndCIDR(t *testing.T) {
	w := newWorld(t)
	ps := mustParse(t, `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: mix, namespace: default}
spec:
  endpointSelector: {matchLabels: {class: tiefighter}}
  egress:
  - toEntities: [world, all]
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.0.0.0/9]}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  egressDeny:
  - toEntities: [cluster]
    toPorts: [{ports: [{port: "22", protocol: TCP}]}]
`)
	cidrID := func(p netip.Prefix) uint32 { return 1 << 24 }
	got := Compile(ps, []Endpoint{w.endpoint("tiefighter")}, w.ids, cidrID)["tiefighter"]
	if !got.EgressEnforced || got.IngressEnforced {
		t.Fatalf("enforcement %+v", got)
	}
	var allowIDs, denyIDs []uint32
	var cidrs []netip.Prefix
	for _, e := range got.Entries {
		switch {
		case e.CIDR.IsValid():
			cidrs = append(cidrs, e.CIDR)
			if e.Identity != 1<<24 || e.Proto != ProtoTCP || e.Port != 443 {
				t.Errorf("cidr entry %+v", e)
			}
		case e.Verdict == Allow:
			allowIDs = append(allowIDs, e.Identity)
		default:
			denyIDs = append(denyIDs, e.Identity)
			if e.Port != 22 {
				t.Errorf("deny entry %+v", e)
			}
		}
	}
	if want := []uint32{0, 2, 9, 10}; !slices.Equal(allowIDs, want) {
		t.Errorf("allow identities %v, want %v", allowIDs, want)
	}
	// cluster: its reserved identities and cluster 1's workloads, not cluster 2's.
	want := []uint32{1, 3, 4, 5, 6, 7, 8, w.byID["deathstar"], w.byID["tiefighter"], w.byID["xwing"], w.byID["other"]}
	slices.Sort(want)
	if !slices.Equal(denyIDs, want) {
		t.Errorf("deny identities %v, want %v", denyIDs, want)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.128.0.0/9")}; !slices.Equal(cidrs, want) {
		t.Errorf("carved cidrs %v, want %v", cidrs, want)
	}
}

func TestCompileDenyCoversAllow(t *testing.T) {
	w := newWorld(t)
	ps := mustParse(t, `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: d, namespace: default}
spec:
  endpointSelector: {matchLabels: {class: deathstar}}
  ingress:
  - fromEndpoints: [{matchLabels: {class: xwing}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}, {port: "443", protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {class: xwing}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
`)
	got := Compile(ps, []Endpoint{w.endpoint("deathstar")}, w.ids, nil)["deathstar"]
	x := w.byID["xwing"]
	want := []Entry{
		{Direction: Ingress, Verdict: Allow, Identity: x, Proto: ProtoTCP, Port: 443, PortEnd: 443, Rule: "default/d: ingress[0]"},
		{Direction: Ingress, Verdict: Deny, Identity: x, Proto: ProtoTCP, Port: 80, PortEnd: 80, Rule: "default/d: ingressDeny[0]"},
	}
	if !reflect.DeepEqual(got.Entries, want) {
		t.Errorf("entries:\n got %+v\nwant %+v", got.Entries, want)
	}
}

func TestCarve(t *testing.T) {
	p := netip.MustParsePrefix
	for _, c := range []struct {
		cidr   string
		except []string
		want   []string
	}{
		{"10.0.0.0/8", nil, []string{"10.0.0.0/8"}},
		{"10.0.0.0/8", []string{"10.0.0.0/8"}, nil},
		{"10.0.0.0/30", []string{"10.0.0.1/32"}, []string{"10.0.0.0/32", "10.0.0.2/31"}},
		{"2001:db8::/32", []string{"2001:db8:8000::/33"}, []string{"2001:db8::/33"}},
	} {
		var ex []netip.Prefix
		for _, e := range c.except {
			ex = append(ex, p(e))
		}
		var got []string
		for _, g := range carve(p(c.cidr), ex) {
			got = append(got, g.String())
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("carve(%s - %v) = %v, want %v", c.cidr, c.except, got, c.want)
		}
	}
}

// TestTraceAgreesWithCompile checks, over random policies, that the verdict
// Trace gives equals what a datapath reading Compile's entries decides.
func TestTraceAgreesWithCompile(t *testing.T) {
	w := newWorld(t)
	names := []string{"deathstar", "tiefighter", "xwing", "other", "remote", "host", "world", "remote-node", "health"}
	peers := []string{
		`fromEndpoints: [{matchLabels: {org: empire}}]`,
		`fromEndpoints: [{matchExpressions: [{key: class, operator: NotIn, values: [xwing]}]}]`,
		`fromEndpoints: [{}]`,
		`fromEndpoints: [{matchLabels: {"reserved:host": ""}}]`,
		`fromEntities: [cluster]`, `fromEntities: [world, host]`, `fromEntities: [all]`, ``,
	}
	ports := []string{``, `toPorts: [{ports: [{port: "80", protocol: TCP}]}]`,
		`toPorts: [{ports: [{port: "53"}, {port: "8000", endPort: 8100, protocol: UDP}]}]`,
		`icmps: [{fields: [{type: 8}]}]`}
	kinds := []string{"ingress", "ingressDeny"}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 100 {
		doc := "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: default}\nspec:\n  endpointSelector: {}\n"
		for _, k := range kinds {
			doc += "  " + k + ":\n"
			for range 1 + rng.IntN(2) {
				doc += "  - {" + peers[rng.IntN(len(peers))] + "}\n"
				if pt := ports[rng.IntN(len(ports))]; pt != "" {
					doc = doc[:len(doc)-2] + ", " + pt + "}\n"
				}
				doc = strings.ReplaceAll(doc, "{, ", "{")
			}
		}
		ps := mustParse(t, doc)
		var eps []Endpoint
		for _, n := range []string{"deathstar", "tiefighter", "xwing", "other"} {
			eps = append(eps, w.endpoint(n))
		}
		compiled := Compile(ps, eps, w.ids, nil)
		for _, dst := range eps {
			for _, src := range names {
				for _, l := range []struct {
					port  uint16
					proto uint8
				}{{80, ProtoTCP}, {53, ProtoUDP}, {8050, ProtoUDP}, {8, ProtoICMP}, {22, ProtoTCP}} {
					tr := w.trace(ps, src, dst.ID, l.port, l.proto)
					got := lookup(compiled[dst.ID], Ingress, w.byID[src], l.port, l.proto)
					if tr.Ingress.Verdict != got {
						t.Fatalf("case %d: %s→%s %s: trace %s (%s), compiled %s\n%s\n%+v", i, src, dst.ID,
							describeL4(l.port, l.proto), tr.Ingress.Verdict, tr.Ingress.Reason, got, doc, compiled[dst.ID])
					}
				}
			}
		}
	}
}

func TestCompileDeterministic(t *testing.T) {
	w := newWorld(t)
	ps := mustParseFile(t, "deathstar.yaml")
	ps = append(ps, mustParse(t, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: default}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {}}]}]
`)...)
	eps := []Endpoint{w.endpoint("deathstar"), w.endpoint("tiefighter")}
	first := Compile(ps, eps, w.ids, nil)
	for range 20 {
		slices.Reverse(ps)
		slices.Reverse(eps)
		if got := Compile(ps, eps, w.ids, nil); !reflect.DeepEqual(got, first) {
			t.Fatalf("output changed with input order:\n%+v\n%+v", got, first)
		}
	}
}
