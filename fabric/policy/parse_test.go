package policy

import (
	"errors"
	"strings"
	"testing"
)

func TestParseMultiDocAndList(t *testing.T) {
	ps := mustParse(t, `
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a, namespace: ns1}
specs:
- endpointSelector: {matchLabels: {app: a}}
  ingress: [{}]
- endpointSelector: {matchLabels: {app: b}}
  egress: [{toEntities: [world]}]
---
---
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: b}
  spec: {podSelector: {}}
`)
	if len(ps) != 2 {
		t.Fatalf("got %d policies", len(ps))
	}
	a, b := ps[0], ps[1]
	if a.Kind != KindCiliumNetworkPolicy || a.Namespace != "ns1" || len(a.Rules) != 2 ||
		a.Rules[0].Origin != "ns1/a: specs[0].ingress[0]" || a.Rules[1].Origin != "ns1/a: specs[1].egress[0]" {
		t.Errorf("a: %+v", a)
	}
	if len(a.Rules[0].Peers) != 0 {
		t.Errorf("ingress: [{}] must allow nothing, got peers %v", a.Rules[0].Peers)
	}
	if got := a.Rules[0].Selector.String(); got != "app=a,k8s:io.kubernetes.pod.namespace=ns1" {
		t.Errorf("selector %q", got)
	}
	if b.Kind != KindNetworkPolicy || b.Namespace != "default" || len(b.Warnings) != 1 || len(b.Rules) != 1 || b.Rules[0].Direction != Ingress {
		t.Errorf("b: %+v", b)
	}
	if len(a.Source) == 0 {
		t.Error("source not kept")
	}
}

func TestParseSelectorExpressions(t *testing.T) {
	ps := mustParse(t, `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: sel}
spec:
  endpointSelector:
    matchLabels: {"any:tier": web}
    matchExpressions:
    - {key: env, operator: In, values: [prod, stage]}
    - {key: k8s:debug, operator: DoesNotExist}
    - {key: team, operator: Exists}
    - {key: zone, operator: NotIn, values: [b]}
  ingress: [{}]
`)
	sel := ps[0].Rules[0].Selector
	if got := sel.String(); got != "env in (prod,stage),!k8s:debug,team,tier=web,zone notin (b)" {
		t.Errorf("selector %q", got)
	}
	for labels, want := range map[string]bool{
		"k8s:tier=web,env=prod,team=x":               true,
		"container:tier=web,env=stage,team=x,zone=a": true,
		"tier=web,env=prod,team=x,zone=b":            false,
		"tier=web,env=prod,team=x,k8s:debug=1":       false,
		"tier=web,env=prod,team=x,container:debug=1": true, // k8s:debug only
		"tier=web,env=dev,team=x":                    false,
		"tier=web,env=prod":                          false,
	} {
		if got := sel.Matches(mustLabels(t, labels)); got != want {
			t.Errorf("%s: %v, want %v", labels, got, want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cnp := func(spec string) string {
		return "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: d}\nspec:\n" + spec
	}
	np := func(spec string) string {
		return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: d}\nspec:\n" + spec
	}
	for _, c := range []struct {
		name, doc string
		want      []string
	}{
		{"port name", cnp("  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: eighty}]}]}]"),
			[]string{`line 6: spec.ingress[0].toPorts[0].ports[0].port: "eighty" is not a port number or name: use 1-65535`}},
		{"port range", cnp("  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: 70000}]}]}]"), []string{"ports[0].port", "use 1-65535"}},
		{"endPort below", cnp("  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: 90, endPort: 80}]}]}]"), []string{"ports[0].endPort", "below port 90"}},
		{"protocol", cnp("  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: 80, protocol: TPC}]}]}]"), []string{"ports[0].protocol", `"TPC" is not a protocol`}},
		{"typo field", cnp("  endpointSelector: {}\n  ingres: [{}]"), []string{`spec.ingres: unknown field "ingres": did you mean "ingress"?`}},
		{"typo rule field", cnp("  endpointSelector: {}\n  ingress: [{fromEndpoint: [{}]}]"), []string{`spec.ingress[0].fromEndpoint`, `did you mean "fromEndpoints"`}},
		{"egress field in ingress", cnp("  endpointSelector: {}\n  ingress: [{toEndpoints: [{}]}]"), []string{`spec.ingress[0].toEndpoints: unknown field`}},
		{"selector typo", cnp("  endpointSelector: {matchLabel: {a: b}}"), []string{`spec.endpointSelector.matchLabel`, `"matchLabels"`}},
		{"operator", cnp("  endpointSelector: {matchExpressions: [{key: a, operator: in, values: [x]}]}"), []string{`matchExpressions[0].operator: "in" is not an operator`}},
		{"in without values", cnp("  endpointSelector: {matchExpressions: [{key: a, operator: In}]}"), []string{`matchExpressions[0].values: operator In needs at least one value`}},
		{"entity", cnp("  endpointSelector: {}\n  ingress: [{fromEntities: [wrold]}]"), []string{`spec.ingress[0].fromEntities[0]: "wrold" is not an entity`}},
		{"cidr", cnp("  endpointSelector: {}\n  egress: [{toCIDR: [10.0.0.0/33]}]"), []string{`spec.egress[0].toCIDR[0]: "10.0.0.0/33" is not a CIDR`}},
		{"except outside", cnp("  endpointSelector: {}\n  egress: [{toCIDRSet: [{cidr: 10.0.0.0/8, except: [11.0.0.0/16]}]}]"), []string{`toCIDRSet[0].except[0]: 11.0.0.0/16 is not inside 10.0.0.0/8`}},
		{"fqdn", cnp("  endpointSelector: {}\n  egress: [{toFQDNs: [{matchName: x.com}]}]"), []string{`spec.egress[0].toFQDNs: not supported yet`}},
		{"deny l7", cnp("  endpointSelector: {}\n  ingressDeny: [{toPorts: [{ports: [{port: 80}], rules: {http: [{}]}}]}]"), []string{`spec.ingressDeny[0].toPorts[0].rules: deny rules cannot carry L7 rules`}},
		{"l7 typo", cnp("  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: 80}], rules: {htp: [{}]}}]}]"), []string{`rules.htp: unknown field`, `"http"`}},
		{"no selector", cnp("  ingress: [{}]"), []string{`spec.endpointSelector: missing`}},
		{"node selector", cnp("  nodeSelector: {}"), []string{`spec.nodeSelector: host policies are not supported yet`}},
		{"no spec", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}", []string{`spec: missing`}},
		{"no name", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nspec: {endpointSelector: {}}", []string{`metadata.name: missing`}},
		{"kind", "apiVersion: v1\nkind: Pod", []string{`kind: "Pod" is not a policy kind`}},
		{"api version", "apiVersion: cilium.io/v1\nkind: CiliumNetworkPolicy", []string{`apiVersion: "cilium.io/v1" does not go with kind CiliumNetworkPolicy: use cilium.io/v2`}},
		{"not yaml", "a: [", []string{"not valid YAML"}},
		{"not a mapping", "- a\n- b", []string{"expected a mapping"}},
		{"icmp type", cnp("  endpointSelector: {}\n  ingress: [{icmps: [{fields: [{type: Ping}]}]}]"), []string{`icmps[0].fields[0].type: "Ping" is not an ICMP type`}},
		{"np peer", np("  podSelector: {}\n  ingress: [{from: [{}]}]"), []string{`spec.ingress[0].from[0]: empty peer`}},
		{"np ipBlock mixed", np("  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]"), []string{`from[0].ipBlock: ipBlock cannot be combined`}},
		{"np protocol", np("  podSelector: {}\n  egress: [{ports: [{protocol: ANY}]}]"), []string{`spec.egress[0].ports[0].protocol: "ANY" is not a protocol: use TCP, UDP or SCTP`}},
		{"np policyTypes", np("  podSelector: {}\n  policyTypes: [ingress]"), []string{`spec.policyTypes[0]: "ingress" is not a policy type`}},
		{"np no podSelector", np("  ingress: []"), []string{`spec.podSelector: missing`}},
		{"duplicate field", cnp("  endpointSelector: {}\n  endpointSelector: {}"), []string{`spec.endpointSelector: field given twice`}},
		{"second document", cnp("  endpointSelector: {}") + "\n---\n" + cnp("  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: x}]}]}]"),
			[]string{`document 2, line 12: spec.egress[0].toPorts[0].ports[0].port`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ps, err := Parse([]byte(c.doc))
			if err == nil {
				t.Fatalf("no error; parsed %+v", ps)
			}
			if ps != nil {
				t.Errorf("policies returned with an error: %+v", ps)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Errorf("error %T is not a *ParseError", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestParseAliasBomb(t *testing.T) {
	doc := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for i := range 12 {
		name := string(rune('b' + i))
		doc += name + ": &" + name + " [" + strings.Repeat("*"+prev+", ", 9) + "*" + prev + "]\n"
		prev = name
	}
	doc += "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec:\n  endpointSelector: {matchExpressions: [{key: k, operator: In, values: *" + prev + "}]}\n"
	if _, err := Parse([]byte(doc)); err == nil {
		t.Fatal("alias bomb parsed")
	}
}
