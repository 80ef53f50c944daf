package service

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/fabric-net/fabric/fabric/identity"
)

func ips(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func TestBackends(t *testing.T) {
	svc := Service{
		Name: "web", Namespace: "default",
		Selector: identity.MustParseLabels("app=web,k8s:tier=front"),
		Ports: []Port{
			{Name: "http", Port: 80, TargetPortName: "http"},
			{Name: "dns", Protocol: UDP, Port: 53},
		},
	}
	front := identity.MustParseLabels("k8s:app=web,k8s:tier=front,version=1")
	eps := []Endpoint{
		{ID: "b", Node: "n2", IPs: ips("10.0.2.5", "fd00::2:5"), Labels: front, Ports: map[string]uint16{"http": 8080}, Ready: true},
		{ID: "a", Node: "n1", IPs: ips("10.0.1.5"), Labels: front, Ports: map[string]uint16{"http": 8081}, Ready: true},
		{ID: "no-name", Node: "n1", IPs: ips("10.0.1.6"), Labels: front, Ready: true},                                                   // no "http": only dns
		{ID: "not-ready", Node: "n1", IPs: ips("10.0.1.7"), Labels: front, Ports: map[string]uint16{"http": 80}},                        // skipped
		{ID: "other-source", Node: "n1", IPs: ips("10.0.1.8"), Labels: identity.MustParseLabels("k8s:app=web,tier=front"), Ready: true}, // tier not from k8s
		{ID: "other-app", Node: "n1", IPs: ips("10.0.1.9"), Labels: identity.MustParseLabels("app=db,k8s:tier=front"), Ready: true},
		{ID: "mapped", Node: "n3", IPs: ips("::ffff:10.0.3.5"), Labels: front, Ports: map[string]uint16{"http": 8080}, Ready: true},
	}
	want := []Backend{
		{ServicePort: 80, Protocol: TCP, Addr: netip.MustParseAddr("10.0.1.5"), Port: 8081, Node: "n1", EndpointID: "a"},
		{ServicePort: 80, Protocol: TCP, Addr: netip.MustParseAddr("10.0.2.5"), Port: 8080, Node: "n2", EndpointID: "b"},
		{ServicePort: 80, Protocol: TCP, Addr: netip.MustParseAddr("10.0.3.5"), Port: 8080, Node: "n3", EndpointID: "mapped"},
		{ServicePort: 80, Protocol: TCP, Addr: netip.MustParseAddr("fd00::2:5"), Port: 8080, Node: "n2", EndpointID: "b"},
		{ServicePort: 53, Protocol: UDP, Addr: netip.MustParseAddr("10.0.1.5"), Port: 53, Node: "n1", EndpointID: "a"},
		{ServicePort: 53, Protocol: UDP, Addr: netip.MustParseAddr("10.0.1.6"), Port: 53, Node: "n1", EndpointID: "no-name"},
		{ServicePort: 53, Protocol: UDP, Addr: netip.MustParseAddr("10.0.2.5"), Port: 53, Node: "n2", EndpointID: "b"},
		{ServicePort: 53, Protocol: UDP, Addr: netip.MustParseAddr("10.0.3.5"), Port: 53, Node: "n3", EndpointID: "mapped"},
		{ServicePort: 53, Protocol: UDP, Addr: netip.MustParseAddr("fd00::2:5"), Port: 53, Node: "n2", EndpointID: "b"},
	}
	got := Backends(svc, eps)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Backends:\n got %+v\nwant %+v", got, want)
	}
	// The order of the endpoints does not matter.
	rev := make([]Endpoint, len(eps))
	for i, ep := range eps {
		rev[len(eps)-1-i] = ep
	}
	if again := Backends(svc, rev); !reflect.DeepEqual(again, want) {
		t.Errorf("Backends depends on the endpoints' order:\n%+v", again)
	}

	http := ForPort(got, svc.Ports[0])
	if len(http) != 4 {
		t.Errorf("ForPort(http) = %+v", http)
	}
	if v6 := SameFamily(http, netip.MustParseAddr("fd00:96::10")); len(v6) != 1 || v6[0].ID() != "[fd00::2:5]:8080" {
		t.Errorf("SameFamily(v6) = %+v", v6)
	}
	if v4 := SameFamily(http, netip.MustParseAddr("10.96.0.10")); len(v4) != 3 {
		t.Errorf("SameFamily(v4) = %+v", v4)
	}
	if ids := IDs(http[:2]); !reflect.DeepEqual(ids, []string{"10.0.1.5:8081", "10.0.2.5:8080"}) {
		t.Errorf("IDs = %v", ids)
	}

	// Two endpoints claiming one address serve it once, as the lower ID.
	dup := []Endpoint{
		{ID: "z", IPs: ips("10.0.9.9"), Labels: front, Ports: map[string]uint16{"http": 1}, Ready: true},
		{ID: "y", IPs: ips("10.0.9.9"), Labels: front, Ports: map[string]uint16{"http": 1}, Ready: true},
	}
	if got := ForPort(Backends(svc, dup), svc.Ports[0]); len(got) != 1 || got[0].EndpointID != "y" {
		t.Errorf("duplicate address: %+v", got)
	}
	// An empty selector selects nothing.
	if got := Backends(Service{Ports: svc.Ports}, eps); got != nil {
		t.Errorf("empty selector selected %+v", got)
	}
}

func TestBackendsFor(t *testing.T) {
	all := []Backend{
		{Addr: netip.MustParseAddr("10.0.1.5"), Port: 80, Node: "n1"},
		{Addr: netip.MustParseAddr("10.0.2.5"), Port: 80, Node: "n2"},
		{Addr: netip.MustParseAddr("10.0.1.6"), Port: 80, Node: "n1"},
	}
	tests := []struct {
		name             string
		internal, extern TrafficPolicy
		node             string
		external         bool
		want             []int // indexes into all
	}{
		{"cluster internal", Cluster, Cluster, "n1", false, []int{0, 1, 2}},
		{"cluster external", Cluster, Cluster, "n1", true, []int{0, 1, 2}},
		{"external local", Cluster, Local, "n1", true, []int{0, 2}},
		{"external local, internal traffic", Cluster, Local, "n1", false, []int{0, 1, 2}},
		{"internal local", Local, Cluster, "n2", false, []int{1}},
		{"internal local, external traffic", Local, Cluster, "n2", true, []int{0, 1, 2}},
		{"local without local backends", Local, Local, "n3", false, nil},
	}
	for _, tt := range tests {
		svc := Service{InternalPolicy: tt.internal, ExternalPolicy: tt.extern}
		got := svc.BackendsFor(tt.node, tt.external, all)
		var want []Backend
		for _, i := range tt.want {
			want = append(want, all[i])
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, want)
		}
	}
}
