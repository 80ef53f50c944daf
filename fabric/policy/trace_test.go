package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func wantVerdict(t *testing.T, got TraceResult, want Verdict, reasonHas ...string) {
	t.Helper()
	if got.Verdict != want {
		t.Errorf("verdict %s, want %s (reason: %s)", got.Verdict, want, got.Reason)
	}
	for _, s := range reasonHas {
		if !strings.Contains(got.Reason, s) {
			t.Errorf("reason %q lacks %q", got.Reason, s)
		}
	}
}

func TestTraceDeathstar(t *testing.T) {
	w := newWorld(t)
	ps := mustParseFile(t, "deathstar.yaml")
	wantVerdict(t, w.trace(ps, "tiefighter", "deathstar", 80, ProtoTCP), Allow, "allowed by default/rule1: ingress[0]")
	if r := w.trace(ps, "tiefighter", "deathstar", 80, ProtoTCP); r.DecidingRule != "default/rule1: ingress[0]" {
		t.Errorf("deciding rule %q", r.DecidingRule)
	}
	r := w.trace(ps, "xwing", "deathstar", 80, ProtoTCP)
	wantVerdict(t, r, Deny, "denied by default", "default/rule1: ingress[0]", "org=alliance", "80/TCP")
	if r.DecidingRule != "" || !r.Ingress.Enforced || r.Egress.Verdict != Allow {
		t.Errorf("xwing: %+v", r)
	}
	wantVerdict(t, w.trace(ps, "tiefighter", "deathstar", 443, ProtoTCP), Deny, "443/TCP")
	wantVerdict(t, w.trace(ps, "tiefighter", "deathstar", 80, ProtoUDP), Deny)
	// Nothing selects the xwing: it accepts anything.
	wantVerdict(t, w.trace(ps, "deathstar", "xwing", 22, ProtoTCP), Allow, "no policy selects it for ingress")
	// Same labels in another namespace or cluster: the namespace label
	// decides, not the cluster.
	wantVerdict(t, w.trace(ps, "other", "deathstar", 80, ProtoTCP), Deny)
	wantVerdict(t, w.trace(ps, "remote", "deathstar", 80, ProtoTCP), Allow)
}

func TestTraceByLabelsOnly(t *testing.T) {
	w := newWorld(t)
	ps := mustParseFile(t, "deathstar.yaml")
	src := TraceEndpoint{Labels: w.lbls["tiefighter"]}
	dst := TraceEndpoint{Identity: w.byID["deathstar"]}
	wantVerdict(t, Trace(ps, src, dst, 80, ProtoTCP, w.ids), Allow)
	// Without idents the destination's labels are unknown; the reason says so.
	wantVerdict(t, Trace(ps, src, dst, 80, ProtoTCP, nil), Allow, "identity 65792 (labels unknown)")
}

func TestTracePortSpecificity(t *testing.T) {
	w := newWorld(t)
	ps := mustParse(t, `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: ports, namespace: default}
spec:
  endpointSelector: {matchLabels: {class: deathstar}}
  ingress:
  - toPorts:
    - ports:
      - {port: 8000, endPort: 8080, protocol: TCP}
      - {port: "53"}
    icmps:
    - fields: [{type: 8, family: IPv4}, {type: EchoRequest, family: IPv6}]
`)
	for _, c := range []struct {
		port  uint16
		proto uint8
		want  Verdict
	}{
		{8000, ProtoTCP, Allow}, {8080, ProtoTCP, Allow}, {8040, ProtoTCP, Allow},
		{7999, ProtoTCP, Deny}, {8081, ProtoTCP, Deny}, {8000, ProtoUDP, Deny},
		{53, ProtoUDP, Allow}, {53, ProtoTCP, Allow}, {53, ProtoSCTP, Allow},
		{8, ProtoICMP, Allow}, {0, ProtoICMP, Deny}, {53, ProtoICMP, Deny},
		{128, ProtoICMPv6, Allow}, {8, ProtoICMPv6, Deny},
	} {
		// No peer named: every peer, world included.
		for _, src := range []string{"xwing", "world"} {
			if got := w.trace(ps, src, "deathstar", c.port, c.proto); got.Verdict != c.want {
				t.Errorf("%s %s: %s, want %s (%s)", src, describeL4(c.port, c.proto), got.Verdict, c.want, got.Reason)
			}
		}
	}
}

func TestTraceEgress(t *testing.T) {
	w := newWorld(t)
	ps := mustParse(t, `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: out, namespace: default}
spec:
  endpointSelector: {matchLabels: {class: tiefighter}}
  egress:
  - toEndpoints: [{matchLabels: {class: deathstar}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - toEntities: [world]
`)
	wantVerdict(t, w.trace(ps, "tiefighter", "deathstar", 80, ProtoTCP), Allow)
	r := w.trace(ps, "tiefighter", "xwing", 80, ProtoTCP)
	wantVerdict(t, r, Deny, "egress of", "selected for egress by default/out: egress[0], default/out: egress[1]")
	if r.Ingress.Verdict != Allow || r.Egress.Verdict != Deny {
		t.Errorf("directions: %+v", r)
	}
	wantVerdict(t, w.trace(ps, "tiefighter", "world", 443, ProtoTCP), Allow, "allowed by default/out: egress[1]")
	wantVerdict(t, w.trace(ps, "tiefighter", "host", 443, ProtoTCP), Deny)
	// The policy is on egress only: the tiefighter accepts anything.
	wantVerdict(t, w.trace(ps, "xwing", "tiefighter", 1, ProtoTCP), Allow)
}

func TestTraceEntities(t *testing.T) {
	w := newWorld(t)
	doc := func(entity string) []Policy {
		return mustParse(t, `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: ent}
spec:
  endpointSelector: {matchLabels: {class: deathstar}}
  ingress: [{fromEntities: [`+entity+`]}]
`)
	}
	for entity, allowed := range map[string][]string{
		"world":       {"world"},
		"host":        {"host"},
		"remote-node": {"remote-node"},
		"health":      {"health"},
		"cluster":     {"host", "remote-node", "health", "tiefighter", "xwing", "other"},
		"all":         {"host", "remote-node", "health", "tiefighter", "xwing", "other", "world", "remote"},
	} {
		ps := doc(entity)
		for _, src := range []string{"host", "remote-node", "health", "tiefighter", "xwing", "other", "world", "remote"} {
			want := Deny
			for _, a := range allowed {
				if a == src {
					want = Allow
				}
			}
			if got := w.trace(ps, src, "deathstar", 80, ProtoTCP); got.Verdict != want {
				t.Errorf("fromEntities %s, from %s: %s, want %s (%s)", entity, src, got.Verdict, want, got.Reason)
			}
		}
	}
}

func TestTraceCIDRExcept(t *testing.T) {
	w := newWorld(t)
	ps := mustParse(t, `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: cidr, namespace: default}
spec:
  endpointSelector: {matchLabels: {class: tiefighter}}
  egress:
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.96.0.0/12]}]
  - toCIDR: [192.0.2.7]
`)
	for addr, want := range map[string]Verdict{
		"10.1.2.3": Allow, "10.96.0.1": Deny, "10.111.255.255": Deny, "10.112.0.0": Allow,
		"192.0.2.7": Allow, "192.0.2.8": Deny, "172.16.0.1": Deny,
	} {
		dst := TraceEndpoint{Identity: w.byID["world"], Addr: netip.MustParseAddr(addr)}
		if got := Trace(ps, w.end("tiefighter"), dst, 443, ProtoTCP, w.ids); got.Verdict != want {
			t.Errorf("to %s: %s, want %s (%s)", addr, got.Verdict, want, got.Reason)
		}
	}
}

func TestTraceDenyBeatsAllow(t *testing.T) {
	w := newWorld(t)
	ps := mustParse(t, `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: allow-all}
spec:
  endpointSelector: {}
  ingress: [{fromEntities: [all]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: no-xwing, namespace: default}
spec:
  endpointSelector: {matchLabels: {class: deathstar}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {org: alliance}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
`)
	r := w.trace(ps, "xwing", "deathstar", 80, ProtoTCP)
	wantVerdict(t, r, Deny, "denied by default/no-xwing: ingressDeny[0]", "deny rules win")
	if r.DecidingRule != "default/no-xwing: ingressDeny[0]" {
		t.Errorf("deciding rule %q", r.DecidingRule)
	}
	wantVerdict(t, w.trace(ps, "xwing", "deathstar", 81, ProtoTCP), Allow, "allow-all: ingress[0]")
	wantVerdict(t, w.trace(ps, "tiefighter", "deathstar", 80, ProtoTCP), Allow)
}

func TestTraceDefaultDenyOptOut(t *testing.T) {
	w := newWorld(t)
	ps := mustParse(t, `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: deny-only, namespace: default}
spec:
  endpointSelector: {matchLabels: {class: deathstar}}
  enableDefaultDeny: {ingress: false}
  ingressDeny: [{fromEndpoints: [{matchLabels: {org: alliance}}]}]
`)
	wantVerdict(t, w.trace(ps, "xwing", "deathstar", 80, ProtoTCP), Deny)
	wantVerdict(t, w.trace(ps, "tiefighter", "deathstar", 80, ProtoTCP), Allow, "enableDefaultDeny false")
}

func TestTraceNetworkPolicy(t *testing.T) {
	w := newWorld(t)
	ps := mustParse(t, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: default}
spec:
  podSelector: {matchLabels: {class: deathstar}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {org: empire}}
    - namespaceSelector: {matchLabels: {team: red}}
    - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}
    ports: [{port: 80}, {port: 9000, endPort: 9010, protocol: UDP}]
`)
	wantVerdict(t, w.trace(ps, "tiefighter", "deathstar", 80, ProtoTCP), Allow, "default/np (NetworkPolicy): ingress[0]")
	wantVerdict(t, w.trace(ps, "tiefighter", "deathstar", 9005, ProtoUDP), Allow)
	wantVerdict(t, w.trace(ps, "tiefighter", "deathstar", 80, ProtoUDP), Deny)
	wantVerdict(t, w.trace(ps, "xwing", "deathstar", 80, ProtoTCP), Deny)
	wantVerdict(t, w.trace(ps, "other", "deathstar", 80, ProtoTCP), Allow) // namespace team=red
	wantVerdict(t, w.trace(ps, "world", "deathstar", 80, ProtoTCP), Deny)
	ip := func(a string) TraceEndpoint {
		return TraceEndpoint{Identity: w.byID["world"], Addr: netip.MustParseAddr(a)}
	}
	wantVerdict(t, Trace(ps, ip("192.0.2.1"), w.end("deathstar"), 80, ProtoTCP, w.ids), Allow)
	wantVerdict(t, Trace(ps, ip("192.0.2.200"), w.end("deathstar"), 80, ProtoTCP, w.ids), Deny)
	// policyTypes Egress with no egress rules: all egress denied.
	wantVerdict(t, w.trace(ps, "deathstar", "tiefighter", 80, ProtoTCP), Deny, "selected for egress by default/np (NetworkPolicy): policyTypes")

	nsName := mustParse(t, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-other, namespace: default}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: other}}, podSelector: {matchLabels: {class: tiefighter}}}]}]
`)
	wantVerdict(t, w.trace(nsName, "other", "deathstar", 80, ProtoTCP), Allow)
	wantVerdict(t, w.trace(nsName, "tiefighter", "deathstar", 80, ProtoTCP), Deny)
	wantVerdict(t, w.trace(nsName, "deathstar", "xwing", 80, ProtoTCP), Deny)  // podSelector {} selects the whole namespace
	wantVerdict(t, w.trace(nsName, "deathstar", "other", 80, ProtoTCP), Allow) // other namespace: not selected
}

func TestTraceNamespaces(t *testing.T) {
	w := newWorld(t)
	ps := mustParse(t, `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: ns, namespace: other}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{}]
  - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: default, class: xwing}}]
`)
	// The policy lives in "other": it selects only the pod there.
	wantVerdict(t, w.trace(ps, "tiefighter", "deathstar", 80, ProtoTCP), Allow, "no policy selects it")
	wantVerdict(t, w.trace(ps, "other", "other", 80, ProtoTCP), Allow, "other/ns: ingress[0]")
	// fromEndpoints {} means the policy's namespace, not everything.
	wantVerdict(t, w.trace(ps, "tiefighter", "other", 80, ProtoTCP), Deny)
	wantVerdict(t, w.trace(ps, "world", "other", 80, ProtoTCP), Deny)
	// Naming the namespace label reaches across.
	wantVerdict(t, w.trace(ps, "xwing", "other", 80, ProtoTCP), Allow, "other/ns: ingress[1]")
}

func TestTraceL7(t *testing.T) {
	w := newWorld(t)
	ps := mustParseFile(t, "deathstar_l7.yaml")
	if len(ps) != 1 || len(ps[0].Rules) != 1 {
		t.Fatalf("parsed %+v", ps)
	}
	p, r := ps[0], ps[0].Rules[0]
	if !r.HasL7 || len(r.L7) != 1 || r.L7[0].Kind != "http" || r.L7[0].Spec == nil {
		t.Errorf("L7 not kept: %+v", r)
	}
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "default/rule1: ingress[0]: "+L7Warning) {
		t.Errorf("warnings %q", p.Warnings)
	}
	wantVerdict(t, w.trace(ps, "tiefighter", "deathstar", 80, ProtoTCP), Allow, "L7 rules are not enforced")
	wantVerdict(t, w.trace(ps, "xwing", "deathstar", 80, ProtoTCP), Deny)
	wantVerdict(t, w.trace(ps, "tiefighter", "deathstar", 8080, ProtoTCP), Deny)
}
