package lbipam

import (
	"net/netip"
	"os"
	"strings"
	"testing"
)

func TestParseCiliumExamples(t *testing.T) {
	data, err := os.ReadFile("testdata/cilium-pools.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pools, err := ParsePools(data)
	if err != nil {
		t.Fatalf("ParsePools: %v", err)
	}
	if len(pools) != 3 {
		t.Fatalf("got %d pools, want 3", len(pools))
	}
	blue, red, yellow := pools[0], pools[1], pools[2]
	if blue.Name != "blue-pool" || len(blue.Blocks) != 4 {
		t.Fatalf("blue = %+v", blue)
	}
	if blue.Blocks[0].CIDR != netip.MustParsePrefix("10.0.10.0/24") || blue.Blocks[1].CIDR != netip.MustParsePrefix("2004::/64") {
		t.Errorf("blue cidr blocks = %v, %v", blue.Blocks[0], blue.Blocks[1])
	}
	if r := blue.Blocks[2].span(); r.from != netip.MustParseAddr("20.0.20.100") || r.to != netip.MustParseAddr("20.0.20.200") {
		t.Errorf("blue range = %v", r)
	}
	if r := blue.Blocks[3].span(); r.from != r.to || r.from != netip.MustParseAddr("1.2.3.4") {
		t.Errorf("start without stop should be one address, got %v", r)
	}
	// 256 + 2^64 (capped) + 101 + 1.
	if got := blue.size(); got != ^uint64(0) {
		t.Errorf("blue size = %d, want capped", got)
	}
	if !blue.ServiceSelector.Matches(map[string]string{"color": "blue"}) || blue.ServiceSelector.Matches(map[string]string{"color": "red"}) {
		t.Error("blue selector does not select by matchLabels")
	}

	if !red.ReserveFirstLastIPs || len(red.Exclude) != 2 {
		t.Fatalf("red = %+v", red)
	}
	// 256 - first - last - 4 excluded.
	if got := red.size(); got != 250 {
		t.Errorf("red size = %d, want 250", got)
	}
	for _, s := range []string{"20.0.10.0", "20.0.10.255", "20.0.10.5", "20.0.10.11"} {
		if red.offers(netip.MustParseAddr(s)) {
			t.Errorf("red offers %s", s)
		}
	}
	if !red.offers(netip.MustParseAddr("20.0.10.1")) {
		t.Error("red does not offer 20.0.10.1")
	}

	if !yellow.Disabled {
		t.Error("yellow not disabled")
	}
	sel := yellow.ServiceSelector
	ns := map[string]string{LabelServiceNamespace: "default"}
	if !sel.Matches(ns) {
		t.Error("yellow should select an unlabelled service with a namespace")
	}
	if sel.Matches(map[string]string{LabelServiceNamespace: "default", "color": "red"}) || sel.Matches(map[string]string{LabelServiceNamespace: "default", "legacy": ""}) || sel.Matches(nil) {
		t.Error("yellow selects what NotIn/DoesNotExist/Exists should refuse")
	}
}

func TestParseListAndDeprecatedCIDRs(t *testing.T) {
	pools, err := ParsePools([]byte(`
apiVersion: v1
kind: List
items:
- apiVersion: cilium.io/v2alpha1
  kind: CiliumLoadBalancerIPPool
  metadata: {name: old, uid: 1234, resourceVersion: "7", creationTimestamp: "2024-01-01T00:00:00Z"}
  spec:
    cidrs: [{cidr: 192.168.0.0/30}]
  status:
    conditions: []
- apiVersion: cilium.io/v2
  kind: CiliumLoadBalancerIPPool
  metadata: {name: six}
  spec: {blocks: [{start: "2001:db8::10", stop: "2001:db8::1f"}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(pools) != 2 || pools[0].Blocks[0].CIDR.String() != "192.168.0.0/30" || pools[1].size() != 16 {
		t.Fatalf("pools = %+v", pools)
	}
	if pools[0].ServiceSelector.Matches(nil) != true {
		t.Error("a pool without selector must select every service")
	}
}

func TestParseErrors(t *testing.T) {
	const head = "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: p}\n"
	tests := []struct {
		name, yaml string
		want       []string // every substring must be in the error
	}{
		{"unknown spec field", head + "spec:\n  blocks: [{cidr: 10.0.0.0/24}]\n  serviceSelecter: {}\n",
			[]string{"line 6", "spec.serviceSelecter", "unknown field", `did you mean "serviceSelector"`}},
		{"unknown block field", head + "spec:\n  blocks:\n  - cdir: 10.0.0.0/24\n",
			[]string{"spec.blocks[0].cdir", "known fields are cidr, start, stop"}},
		{"bad cidr", head + "spec: {blocks: [{cidr: 10.0.0.0/33}]}\n", []string{"spec.blocks[0].cidr", "not a CIDR", "10.0.10.0/24"}},
		{"host bits", head + "spec: {blocks: [{cidr: 10.0.0.5/24}]}\n", []string{"spec.blocks[0]", "write 10.0.0.0/24"}},
		{"stop below start", head + "spec: {blocks: [{start: 10.0.0.9, stop: 10.0.0.1}]}\n", []string{"spec.blocks[0]", "swap them"}},
		{"mixed families", head + "spec: {blocks: [{start: 10.0.0.1, stop: '2001:db8::1'}]}\n", []string{"different families"}},
		{"cidr and start", head + "spec: {blocks: [{cidr: 10.0.0.0/24, start: 10.0.0.1}]}\n", []string{"either a cidr or a start/stop"}},
		{"empty blocks", head + "spec: {blocks: []}\n", []string{"spec.blocks is empty"}},
		{"no spec", head, []string{"spec: is missing"}},
		{"no name", "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {}\nspec: {blocks: [{cidr: 10.0.0.0/24}]}\n", []string{"metadata.name", "is missing"}},
		{"bad name", "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: Blue/Pool}\nspec: {blocks: [{cidr: 10.0.0.0/24}]}\n", []string{"DNS subdomain"}},
		{"wrong kind", "apiVersion: cilium.io/v2\nkind: CiliumBGPPeeringPolicy\nmetadata: {name: p}\nspec: {}\n", []string{"kind", "CiliumBGPPeeringPolicy", "only CiliumLoadBalancerIPPool"}},
		{"wrong version", "apiVersion: cilium.io/v1\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: p}\nspec: {blocks: [{cidr: 10.0.0.0/24}]}\n", []string{"apiVersion", "cilium.io/v2alpha1"}},
		{"cidrs in v2", head + "spec: {cidrs: [{cidr: 10.0.0.0/24}]}\n", []string{"spec.cidrs", "unknown field"}},
		{"allowFirstLastIPs", head + "spec: {allowFirstLastIPs: maybe, blocks: [{cidr: 10.0.0.0/24}]}\n", []string{"spec.allowFirstLastIPs", `"Yes"`, `"No"`}},
		{"disabled", head + "spec: {disabled: sometimes, blocks: [{cidr: 10.0.0.0/24}]}\n", []string{"spec.disabled", "true or false"}},
		{"In without values", head + "spec:\n  blocks: [{cidr: 10.0.0.0/24}]\n  serviceSelector: {matchExpressions: [{key: a, operator: In}]}\n", []string{"matchExpressions[0]", "at least one value"}},
		{"bad operator", head + "spec:\n  blocks: [{cidr: 10.0.0.0/24}]\n  serviceSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}\n", []string{"matchExpressions[0].operator", "In, NotIn, Exists or DoesNotExist"}},
		{"bad exclude", "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: p, annotations: {lbipam.fabric.io/exclude: '10.0.0.5,,x'}}\nspec: {blocks: [{cidr: 10.0.0.0/24}]}\n", []string{"lbipam.fabric.io/exclude", "empty entry"}},
		{"exclude outside", "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: p, annotations: {lbipam.fabric.io/exclude: '10.9.0.5'}}\nspec: {blocks: [{cidr: 10.0.0.0/24}]}\n", []string{"outside every block", "excludes nothing"}},
		{"unknown fabric annotation", "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: p, annotations: {lbipam.fabric.io/exlude: '10.0.0.5'}}\nspec: {blocks: [{cidr: 10.0.0.0/24}]}\n", []string{"lbipam.fabric.io/exlude", "unknown Fabric annotation"}},
		{"overlap within", head + "spec: {blocks: [{cidr: 10.0.0.0/24}, {start: 10.0.0.200, stop: 10.0.1.5}]}\n", []string{"spec.blocks[0] 10.0.0.0/24 and spec.blocks[1]", "overlap"}},
		{"overlap between", head + "spec: {blocks: [{cidr: 10.0.0.0/24}]}\n---\n" + strings.Replace(head, "name: p", "name: q", 1) + "spec: {blocks: [{cidr: 10.0.0.128/25}]}\n",
			[]string{`pools "p" (spec.blocks[0] 10.0.0.0/24) and "q" (spec.blocks[0] 10.0.0.128/25) overlap`}},
		{"duplicate name", head + "spec: {blocks: [{cidr: 10.0.0.0/24}]}\n---\n" + head + "spec: {blocks: [{cidr: 10.1.0.0/24}]}\n", []string{`pool "p" is defined twice`}},
		{"not a mapping", "- a\n- b\n", []string{"document 1", "not a mapping"}},
		{"syntax", "spec: [\n", []string{"document 1", "fix the YAML syntax"}},
		{"second document", head + "spec: {blocks: [{cidr: 10.0.0.0/24}]}\n---\n" + head + "spec: {blocks: [{cidr: nope}]}\n", []string{"document 2, line 9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePools([]byte(tt.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestServiceAnnotations(t *testing.T) {
	ips, key, err := ServiceAnnotations(map[string]string{
		CiliumAnnotationIPs:        "10.0.10.5, 2001:db8::5",
		CiliumAnnotationSharingKey: "web",
	})
	if err != nil || len(ips) != 2 || ips[1] != netip.MustParseAddr("2001:db8::5") || key != "web" {
		t.Fatalf("got %v %q %v", ips, key, err)
	}
	if _, _, err := ServiceAnnotations(map[string]string{AnnotationSharingKey: "a", CiliumAnnotationSharingKey: "b"}); err == nil {
		t.Error("conflicting sharing keys accepted")
	}
	if _, _, err := ServiceAnnotations(map[string]string{CiliumAnnotationIPsLegacy: "10.0.0.300"}); err == nil || !strings.Contains(err.Error(), "io.cilium/lb-ipam-ips") {
		t.Errorf("bad address: %v", err)
	}
}

func FuzzParsePools(f *testing.F) {
	if data, err := os.ReadFile("testdata/cilium-pools.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: p, annotations: {lbipam.fabric.io/exclude: '10.0.0.1-10.0.0.3'}}\nspec: {allowFirstLastIPs: 'No', blocks: [{cidr: 10.0.0.0/30}, {start: '::1'}]}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("kind: List\nitems: [{}, 1, [a]]\n"))
	f.Add([]byte("apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: &m {name: p}\nspec: {blocks: [*m]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pools, err := ParsePools(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("error without a message")
			}
			return
		}
		for _, p := range pools {
			if err := p.Validate(); err != nil {
				t.Fatalf("parsed pool fails Validate: %v", err)
			}
			p.size()
			for _, f := range []Family{IPv4, IPv6} {
				for _, a := range p.free(f, nil, 4) {
					if !p.offers(a) {
						t.Fatalf("free returned %s, which %q does not offer", a, p.Name)
					}
				}
			}
		}
		if err := CheckOverlaps(pools); err != nil {
			t.Fatalf("parsed pools overlap: %v", err)
		}
	})
}

func FuzzServiceAnnotations(f *testing.F) {
	f.Add("10.0.0.1,2001:db8::1", "key")
	f.Add(",", "")
	f.Fuzz(func(t *testing.T, ips, key string) {
		_, _, err := ServiceAnnotations(map[string]string{CiliumAnnotationIPs: ips, AnnotationSharingKey: key})
		if err != nil && err.Error() == "" {
			t.Fatal("error without a message")
		}
	})
}
