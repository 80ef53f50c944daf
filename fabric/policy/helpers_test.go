package policy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fabric-net/fabric/fabric/identity"
)

// idents is an in-memory IdentitySource.
type idents map[uint32]identity.Labels

func (m idents) All() map[uint32]identity.Labels { return m }

// world is a small mesh: the Star Wars demo in cluster 1 namespace default,
// a pod in namespace other, and a pod of cluster 2.
type world struct {
	ids  idents
	byID map[string]uint32 // name → identity
	lbls map[string]identity.Labels
}

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{ids: idents{}, byID: map[string]uint32{}, lbls: map[string]identity.Labels{}}
	add := func(name string, cluster uint32, local uint16, labels string) {
		id, err := identity.Make(cluster, local)
		if err != nil {
			t.Fatal(err)
		}
		l := identity.MustParseLabels(labels)
		w.ids[uint32(id)], w.byID[name], w.lbls[name] = l, uint32(id), l
	}
	ns := "k8s:io.kubernetes.pod.namespace="
	add("deathstar", 1, 256, ns+"default,k8s:org=empire,k8s:class=deathstar")
	add("tiefighter", 1, 257, ns+"default,k8s:org=empire,k8s:class=tiefighter")
	add("xwing", 1, 258, ns+"default,k8s:org=alliance,k8s:class=xwing")
	add("other", 1, 259, ns+"other,k8s:org=empire,k8s:class=tiefighter,k8s:io.cilium.k8s.namespace.labels.team=red")
	add("remote", 2, 256, ns+"default,k8s:org=empire,k8s:class=tiefighter")
	for _, r := range []string{"host", "world", "remote-node", "health"} {
		id, _ := identity.ReservedByName(r)
		w.byID[r], w.lbls[r] = uint32(id), identity.MustParseLabels("reserved:"+r)
	}
	return w
}

func (w *world) end(name string) TraceEndpoint {
	return TraceEndpoint{Identity: w.byID[name], Labels: w.lbls[name]}
}

func (w *world) endpoint(name string) Endpoint {
	return Endpoint{ID: name, Identity: w.byID[name], Labels: w.lbls[name]}
}

func (w *world) trace(ps []Policy, src, dst string, port uint16, proto uint8) TraceResult {
	return Trace(ps, w.end(src), w.end(dst), port, proto, w.ids)
}

func mustParse(t testing.TB, doc string) []Policy {
	t.Helper()
	ps, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, doc)
	}
	return ps
}

func mustParseFile(t testing.TB, name string) []Policy {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return mustParse(t, string(b))
}

// lookup is the reference datapath: what a packet's verdict is under a
// compiled EndpointPolicy, for an identity peer.
func lookup(ep EndpointPolicy, dir Direction, peer uint32, port uint16, proto uint8) Verdict {
	allowed := false
	for _, e := range ep.Entries {
		if e.Direction != dir || e.CIDR.IsValid() || e.Identity != 0 && e.Identity != peer {
			continue
		}
		switch {
		case e.Proto == 0 && e.Port == 0:
		case e.Proto != proto:
			continue
		case e.Port == 0 && !e.ICMP:
		case e.Port <= port && port <= e.PortEnd:
		default:
			continue
		}
		if e.Verdict == Deny {
			return Deny
		}
		allowed = true
	}
	enforced := ep.IngressEnforced
	if dir == Egress {
		enforced = ep.EgressEnforced
	}
	if allowed || !enforced {
		return Allow
	}
	return Deny
}

func mustLabels(t testing.TB, s string) identity.Labels {
	t.Helper()
	l, err := identity.ParseLabels(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
