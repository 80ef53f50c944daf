package l2announce

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseCiliumExamples(t *testing.T) {
	data, err := os.ReadFile("testdata/cilium-l2-policies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pols, err := ParsePolicies(data)
	if err != nil {
		t.Fatalf("ParsePolicies: %v", err)
	}
	if len(pols) != 2 || pols[0].Name != "policy1" || pols[1].Name != "rack-a" {
		t.Fatalf("got %+v", pols)
	}
	p1, rack := pols[0], pols[1]
	if !p1.ExternalIPs || !p1.LoadBalancerIPs || rack.ExternalIPs || !rack.LoadBalancerIPs {
		t.Errorf("kinds: %+v %+v", p1, rack)
	}
	if !p1.SelectsService(map[string]string{"color": "blue"}) || p1.SelectsService(map[string]string{"color": "red"}) {
		t.Error("policy1 serviceSelector")
	}
	if !p1.SelectsNode(map[string]string{"a": "b"}) || p1.SelectsNode(map[string]string{"node-role.kubernetes.io/control-plane": ""}) {
		t.Error("policy1 nodeSelector DoesNotExist")
	}
	if !rack.SelectsService(nil) {
		t.Error("no serviceSelector should select every service")
	}
	for labels, want := range map[string]bool{
		"rack=a,l2=y":          true,
		"rack=b,l2=y,zone=z1":  true,
		"rack=c,l2=y":          false,
		"rack=a":               false,
		"rack=a,l2=y,zone=dmz": false,
	} {
		if got := rack.SelectsNode(labelsOf(labels)); got != want {
			t.Errorf("rack-a SelectsNode(%s) = %v, want %v", labels, got, want)
		}
	}
	avail := []string{"lo", "eth0", "eth1", "veth0", "myeth2", "eth0"}
	if got := p1.Interfaces(avail); !slices.Equal(got, []string{"eth0", "eth1"}) {
		t.Errorf("policy1 Interfaces = %v", got)
	}
	if got := rack.Interfaces(avail); !slices.Equal(got, []string{"eth0", "eth1", "veth0", "myeth2"}) {
		t.Errorf("no interfaces should mean all but lo, got %v", got)
	}
	// Unanchored, as Cilium's patterns are.
	q := Policy{Name: "q", InterfacePatterns: []string{"eth"}}
	if err := q.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := q.Interfaces(avail); !slices.Equal(got, []string{"eth0", "eth1", "veth0", "myeth2"}) {
		t.Errorf("unanchored pattern: %v", got)
	}
}

func labelsOf(s string) map[string]string {
	out := map[string]string{}
	for kv := range strings.SplitSeq(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		out[k] = v
	}
	return out
}

func TestParseErrors(t *testing.T) {
	head := "apiVersion: cilium.io/v2alpha1\nkind: CiliumL2AnnouncementPolicy\nmetadata: {name: p}\n"
	for name, tc := range map[string]struct{ yaml, want string }{
		"typo in spec":       {head + "spec: {loadBalancerIP: true}\n", `spec.loadBalancerIP: unknown field "loadBalancerIP"; known fields are serviceSelector, nodeSelector, interfaces, externalIPs, loadBalancerIPs (did you mean "loadBalancerIPs"?)`},
		"typo in selector":   {head + "spec: {nodeSelector: {matchLabel: {a: b}}}\n", `spec.nodeSelector.matchLabel: unknown field "matchLabel"`},
		"typo in expression": {head + "spec: {serviceSelector: {matchExpressions: [{key: a, operater: In}]}}\n", `spec.serviceSelector.matchExpressions[0].operater: unknown field`},
		"bad operator":       {head + "spec: {serviceSelector: {matchExpressions: [{key: a, operator: Is}]}}\n", `matchExpressions[0].operator "Is" is unknown; use In, NotIn, Exists or DoesNotExist`},
		"In without values":  {head + "spec: {nodeSelector: {matchExpressions: [{key: a, operator: In}]}}\n", `spec.nodeSelector.matchExpressions[0]: operator In needs at least one value`},
		"bad regex":          {head + "spec: {interfaces: ['eth[0-']}\n", `spec.interfaces[0] "eth[0-" is not a regular expression`},
		"bool as string":     {head + "spec: {externalIPs: 'yes'}\n", `spec.externalIPs: is a value "yes", not a boolean; write true or false`},
		"interfaces scalar":  {head + "spec: {interfaces: eth0}\n", `spec.interfaces: is a value "eth0", not a list`},
		"wrong kind":         {"apiVersion: cilium.io/v2alpha1\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: p}\nspec: {}\n", `kind: "CiliumLoadBalancerIPPool" is not accepted here`},
		"wrong version":      {"apiVersion: cilium.io/v2\nkind: CiliumL2AnnouncementPolicy\nmetadata: {name: p}\nspec: {}\n", `apiVersion: "cilium.io/v2" is not a CiliumL2AnnouncementPolicy version; use cilium.io/v2alpha1`},
		"no name":            {"apiVersion: cilium.io/v2alpha1\nkind: CiliumL2AnnouncementPolicy\nspec: {}\n", `metadata.name: is missing`},
		"no spec":            {head, `spec: is missing`},
		"top-level typo":     {head + "sepc: {}\n", `document 1, line 4: sepc: unknown field "sepc"`},
		"second document":    {head + "spec: {}\n---\n" + head + "spec: {nodeselector: {}}\n", `document 2, line 9: spec.nodeselector: unknown field "nodeselector"; known fields are serviceSelector, nodeSelector, interfaces, externalIPs, loadBalancerIPs (did you mean "nodeSelector"?)`},
		"duplicate":          {head + "spec: {}\n---\n" + head + "spec: {}\n", `policy "p" is defined twice`},
		"list item":          {"kind: List\nitems:\n- " + strings.ReplaceAll(head, "\n", "\n  ") + "spec: {foo: 1}\n", `items[0].spec.foo: unknown field`},
		"syntax":             {"a: [\n", "fix the YAML syntax"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParsePolicies([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, tc.want)
			}
		})
	}
}

func FuzzParsePolicies(f *testing.F) {
	if data, err := os.ReadFile("testdata/cilium-l2-policies.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("apiVersion: cilium.io/v2alpha1\nkind: CiliumL2AnnouncementPolicy\nmetadata: {name: p}\nspec: {interfaces: ['^e', '('], loadBalancerIPs: true}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("kind: List\nitems: [{}, 1, [a]]\n"))
	f.Add([]byte("apiVersion: cilium.io/v2alpha1\nkind: CiliumL2AnnouncementPolicy\nmetadata: &m {name: p}\nspec: {nodeSelector: *m}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pols, err := ParsePolicies(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("error without a message")
			}
			return
		}
		for _, p := range pols {
			if err := p.Validate(); err != nil {
				t.Fatalf("parsed policy fails Validate: %v", err)
			}
			p.Interfaces([]string{"lo", "eth0", "x"})
			p.SelectsNode(map[string]string{"a": "b"})
			p.SelectsIP(Want{Labels: map[string]string{"a": "b"}})
		}
	})
}
