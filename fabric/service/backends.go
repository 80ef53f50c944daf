package service

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/fabric-net/fabric/fabric/identity"
)

// Endpoint is what backend selection needs to know of a workload.
type Endpoint struct {
	ID     string
	Node   string
	IPs    []netip.Addr // one per family, usually
	Labels identity.Labels
	// Ports are the workload's named ports, for named targetPorts. An
	// endpoint without a port's target name is no backend of that port.
	Ports map[string]uint16
	Ready bool
}

// Backend is one address and port serving one service port.
type Backend struct {
	// ServicePort and Protocol name the service port (Port.Port) served.
	ServicePort uint16
	Protocol    Protocol
	Addr        netip.Addr
	Port        uint16 // the target port on Addr
	Node        string
	EndpointID  string
}

// ID is the backend's stable name, "addr:port", for Maglev.
func (b Backend) ID() string { return netip.AddrPortFrom(b.Addr, b.Port).String() }

// Backends returns the backends of every port of svc: one for each ready
// endpoint whose labels match the selector, for each of its addresses (IPv4
// and IPv6 alike; see SameFamily) and each service port whose target it has.
//
// The result is sorted by protocol, service port, family, address and port,
// so equal inputs give equal outputs on every node. An address serving one
// service port twice (two endpoints claiming one IP) is kept once, for the
// endpoint with the lowest ID. An empty selector selects nothing.
func Backends(svc Service, eps []Endpoint) []Backend {
	if svc.Selector.Len() == 0 {
		return nil
	}
	sel := svc.Selector.List()
	var out []Backend
	for _, ep := range eps {
		if !ep.Ready || !matches(sel, ep.Labels) {
			continue
		}
		for _, p := range svc.Ports {
			target, ok := p.target(ep.Ports)
			if !ok {
				continue
			}
			for _, a := range ep.IPs {
				if a = a.Unmap(); !a.IsValid() || a.IsUnspecified() {
					continue
				}
				out = append(out, Backend{ServicePort: p.Port, Protocol: p.Protocol, Addr: a.WithZone(""),
					Port: target, Node: ep.Node, EndpointID: ep.ID})
			}
		}
	}
	slices.SortFunc(out, func(a, b Backend) int {
		return cmp.Or(
			cmp.Compare(a.Protocol, b.Protocol),
			cmp.Compare(a.ServicePort, b.ServicePort),
			a.Addr.Compare(b.Addr), // IPv4 sorts before IPv6
			cmp.Compare(a.Port, b.Port),
			cmp.Compare(a.EndpointID, b.EndpointID),
		)
	})
	return slices.CompactFunc(out, func(a, b Backend) bool {
		return a.Protocol == b.Protocol && a.ServicePort == b.ServicePort && a.Addr == b.Addr && a.Port == b.Port
	})
}

// target is the backend port of p on an endpoint with the given named ports.
func (p Port) target(named map[string]uint16) (uint16, bool) {
	switch {
	case p.TargetPortName != "":
		n, ok := named[p.TargetPortName]
		return n, ok && n != 0
	case p.TargetPort != 0:
		return p.TargetPort, true
	}
	return p.Port, true
}

// matches reports whether labels carry every selector label. A selector key
// without a source matches the key from any source.
func matches(sel []identity.Label, labels identity.Labels) bool {
	have := labels.List()
	for _, s := range sel {
		if !slices.ContainsFunc(have, func(l identity.Label) bool {
			return l.Key == s.Key && l.Value == s.Value && (s.Source == "" || s.Source == "any" || s.Source == l.Source)
		}) {
			return false
		}
	}
	return true
}

// BackendsFor returns the backends of all that serve traffic arriving at
// node: external (NodePort, load-balancer and external IP traffic) follows
// ExternalPolicy, the rest InternalPolicy. Local keeps only the backends on
// node, and none when it has none, as Kubernetes: the traffic is dropped
// rather than sent across the cluster. The order of all is kept.
func (s Service) BackendsFor(node string, external bool, all []Backend) []Backend {
	policy := s.InternalPolicy
	if external {
		policy = s.ExternalPolicy
	}
	if policy != Local {
		return slices.Clone(all)
	}
	var out []Backend
	for _, b := range all {
		if b.Node == node {
			out = append(out, b)
		}
	}
	return out
}

// ForPort returns the backends of all that serve p, in order: the backend
// set of one frontend.
func ForPort(all []Backend, p Port) []Backend {
	var out []Backend
	for _, b := range all {
		if b.ServicePort == p.Port && b.Protocol == p.Protocol {
			out = append(out, b)
		}
	}
	return out
}

// SameFamily returns the backends of all of frontend's family, in order: a
// frontend forwards only to its own family (no NAT46/64).
func SameFamily(all []Backend, frontend netip.Addr) []Backend {
	is4 := frontend.Unmap().Is4()
	var out []Backend
	for _, b := range all {
		if b.Addr.Is4() == is4 {
			out = append(out, b)
		}
	}
	return out
}

// IDs returns the backends' IDs, in order, as Maglev takes them.
func IDs(bs []Backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.ID()
	}
	return out
}
