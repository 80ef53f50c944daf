package policy

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, that errors always say
// something, and that whatever parses compiles and traces without panic.
// Crashing inputs found by the fuzzer land in testdata/fuzz/FuzzParse and are
// replayed by `go test`.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n}\nspec:\n  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}], ports: [{port: 80, endPort: 90}]}]\n",
		"apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: c}\nspec:\n  endpointSelector: {matchExpressions: [{key: a, operator: NotIn, values: [b]}]}\n  egressDeny: [{toEntities: [world], icmps: [{fields: [{type: 8}]}]}]\n  egress: [{toCIDRSet: [{cidr: '2001:db8::/32', except: ['2001:db8::/64']}]}]\n",
		"a: &a [x]\nb: *a\n",
		"---\n---\n",
	} {
		f.Add([]byte(s))
	}
	w := newWorld(f)
	eps := []Endpoint{w.endpoint("deathstar"), w.endpoint("other")}
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := Parse(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("error without a message")
			}
			if ps != nil {
				t.Fatal("policies returned with an error")
			}
			return
		}
		Compile(ps, eps, w.ids, nil)
		Trace(ps, w.end("tiefighter"), w.end("deathstar"), 80, ProtoTCP, w.ids)
	})
}
