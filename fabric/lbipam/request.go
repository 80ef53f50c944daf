package lbipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Service annotations Fabric reads. Cilium's names are accepted so that a
// service written for Cilium behaves the same on Fabric.
const (
	AnnotationSharingKey       = "lbipam.fabric.io/sharing-key"
	CiliumAnnotationSharingKey = "lbipam.cilium.io/sharing-key"
	CiliumAnnotationIPs        = "lbipam.cilium.io/ips"
	CiliumAnnotationIPsLegacy  = "io.cilium/lb-ipam-ips"
)

// Labels Assign adds to a request's labels before matching selectors, as
// Cilium does, so a pool can select services by namespace or name.
const (
	LabelServiceNamespace = "io.kubernetes.service.namespace"
	LabelServiceName      = "io.kubernetes.service.name"
)

// Request is what one load-balancer service asks for.
type Request struct {
	// Service is "namespace/name".
	Service string
	// Labels are the service's labels, matched against pool selectors.
	Labels map[string]string
	// RequestedIPs are the addresses the service asks for by name
	// (spec.loadBalancerIP or the ips annotations, see ServiceAnnotations).
	// Each is honoured or reported; never replaced by another address.
	RequestedIPs []netip.Addr
	// Families the service needs: IPv4, IPv6 or both (dual-stack gets one of
	// each). Families that RequestedIPs already cover get no extra address.
	// Empty means the families of RequestedIPs, or IPv4 alone when none are
	// requested (Kubernetes' single-stack default).
	Families []Family
	// SharingKey lets services of one namespace with the same key share an
	// address when their ports do not clash. Empty: the address is the
	// service's alone.
	SharingKey string
	// Ports the service listens on; only used to decide whether sharing is
	// possible.
	Ports []PortKey
}

// PortKey is one port of a service.
type PortKey struct {
	Proto string `json:"proto"` // TCP, UDP or SCTP
	Port  uint16 `json:"port"`
}

func (p PortKey) String() string { return fmt.Sprintf("%s/%d", p.Proto, p.Port) }

// ConditionType says how an assignment went.
type ConditionType string

const (
	// Assigned: Status.IPs is everything the request asked for.
	Assigned ConditionType = "Assigned"
	// RequestedIPUnavailable: a requested address is outside every pool that
	// selects the service, reserved, excluded, in a disabled pool, or held
	// by a service it cannot be shared with.
	RequestedIPUnavailable ConditionType = "RequestedIPUnavailable"
	// NoPool: no enabled pool with addresses of a needed family selects the
	// service.
	NoPool ConditionType = "NoPool"
	// PoolExhausted: every pool that could serve the service is full.
	PoolExhausted ConditionType = "PoolExhausted"
	// PoolGone: an address stays assigned although no pool contains it any
	// more (its pool was removed or shrunk). It is kept so that traffic is
	// not cut; Release the service or re-add the pool to clear it.
	PoolGone ConditionType = "PoolGone"
)

// Condition is one line of a Status.
type Condition struct {
	Type    ConditionType `json:"type"`
	Message string        `json:"message"`
}

// Status is the outcome of Assign: the addresses the service holds once the
// call returns, and why. When a request cannot be met in full, nothing is
// changed: IPs lists what the service still holds from before (possibly
// nothing) and the conditions say what is missing.
type Status struct {
	IPs        []netip.Addr `json:"ips"`
	Conditions []Condition  `json:"conditions"`
}

// Has tells whether s has a condition of type t.
func (s Status) Has(t ConditionType) bool {
	for _, c := range s.Conditions {
		if c.Type == t {
			return true
		}
	}
	return false
}

// ServiceAnnotations reads the requested addresses and the sharing key from a
// service's annotations: Cilium's lbipam.cilium.io/ips and
// io.cilium/lb-ipam-ips (comma-separated addresses), and Fabric's or Cilium's
// sharing-key annotation. Conflicting values are an error naming both.
func ServiceAnnotations(ann map[string]string) (requested []netip.Addr, sharingKey string, err error) {
	for _, k := range []string{CiliumAnnotationIPs, CiliumAnnotationIPsLegacy} {
		v, ok := ann[k]
		if !ok {
			continue
		}
		var ips []netip.Addr
		for item := range strings.SplitSeq(v, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(item))
			if err != nil {
				return nil, "", fmt.Errorf("lbipam: annotation %s: %q is not an IP address; write comma-separated addresses, e.g. 10.0.10.5,2001:db8::5", k, strings.TrimSpace(item))
			}
			ips = append(ips, a.Unmap())
		}
		if requested != nil && !sameAddrs(requested, ips) {
			return nil, "", fmt.Errorf("lbipam: annotations %s and %s ask for different addresses; keep one of them", CiliumAnnotationIPs, CiliumAnnotationIPsLegacy)
		}
		requested = ips
	}
	f, c := ann[AnnotationSharingKey], ann[CiliumAnnotationSharingKey]
	if f != "" && c != "" && f != c {
		return nil, "", fmt.Errorf("lbipam: annotations %s=%q and %s=%q differ; keep one of them", AnnotationSharingKey, f, CiliumAnnotationSharingKey, c)
	}
	sharingKey = f
	if sharingKey == "" {
		sharingKey = c
	}
	return requested, sharingKey, nil
}

func sameAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// normalize checks r and returns it with defaults filled in.
func (r Request) normalize() (Request, error) {
	ns, name, ok := strings.Cut(r.Service, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return r, fmt.Errorf("lbipam: service %q is not namespace/name; give the service as namespace/name", r.Service)
	}
	labels := make(map[string]string, len(r.Labels)+2)
	for k, v := range r.Labels {
		labels[k] = v
	}
	labels[LabelServiceNamespace] = ns
	labels[LabelServiceName] = name
	r.Labels = labels

	var reqs []netip.Addr
	for _, a := range r.RequestedIPs {
		if !a.IsValid() {
			return r, fmt.Errorf("lbipam: service %s: a requested IP is the zero address; leave it out or give a real address", r.Service)
		}
		a = a.Unmap().WithZone("")
		if !slices.Contains(reqs, a) {
			reqs = append(reqs, a)
		}
	}
	r.RequestedIPs = reqs

	var fams []Family
	for _, f := range r.Families {
		if f != IPv4 && f != IPv6 {
			return r, fmt.Errorf("lbipam: service %s: family %q is unknown; use %q or %q", r.Service, f, IPv4, IPv6)
		}
		if !slices.Contains(fams, f) {
			fams = append(fams, f)
		}
	}
	if len(fams) == 0 {
		for _, a := range reqs {
			if f := familyOf(a); !slices.Contains(fams, f) {
				fams = append(fams, f)
			}
		}
	}
	if len(fams) == 0 {
		fams = []Family{IPv4}
	}
	r.Families = fams
	for _, p := range r.Ports {
		if p.Proto == "" {
			return r, fmt.Errorf("lbipam: service %s: port %d has no protocol; give TCP, UDP or SCTP", r.Service, p.Port)
		}
	}
	return r, nil
}

func (r Request) namespace() string {
	ns, _, _ := strings.Cut(r.Service, "/")
	return ns
}
