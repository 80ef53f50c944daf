// Package l2announce owns L2 announcements of load-balancer and external
// IPs on segments without BGP: which policies select which services, nodes
// and interfaces (Cilium's CiliumL2AnnouncementPolicy), which one node
// answers for each IP (lease-free rendezvous hashing over the members the
// caller says are alive), and the per-node responder that answers ARP and
// NDP for the IPs this node owns and announces them when it takes them over.
//
// It does not know where membership comes from (the agent feeds it from
// gossip), nor how traffic to the IPs is then served (the datapath).
package l2announce

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"

	"github.com/fabric-net/fabric/fabric/lbipam"
)

// Kind and APIVersion of the policy objects ParsePolicies accepts.
const (
	Kind       = "CiliumL2AnnouncementPolicy"
	APIVersion = "cilium.io/v2alpha1"
)

// Policy is one CiliumL2AnnouncementPolicy. The zero selectors select
// everything, as in Cilium; a policy with neither LoadBalancerIPs nor
// ExternalIPs selects no IP.
type Policy struct {
	Name string `json:"name"`
	// ServiceSelector chooses the services whose IPs are announced.
	ServiceSelector lbipam.Selector `json:"serviceSelector,omitzero"`
	// NodeSelector chooses the nodes that may announce them.
	NodeSelector lbipam.Selector `json:"nodeSelector,omitzero"`
	// InterfacePatterns are regular expressions on interface names; empty
	// means every interface but the loopback.
	InterfacePatterns []string `json:"interfaces,omitempty"`
	ExternalIPs       bool     `json:"externalIPs,omitempty"`
	LoadBalancerIPs   bool     `json:"loadBalancerIPs,omitempty"`

	// compiled holds InterfacePatterns compiled, set by Validate.
	compiled []*regexp.Regexp
}

// IPKind says where a service's IP comes from; policies choose kinds.
type IPKind uint8

const (
	LoadBalancerIP IPKind = iota // status.loadBalancer, e.g. from lbipam
	ExternalIP                   // spec.externalIPs
)

func (k IPKind) String() string {
	if k == ExternalIP {
		return "external"
	}
	return "loadbalancer"
}

// Want is one IP that should be answered for, with what policies select on.
type Want struct {
	IP netip.Addr
	// Service names the service for logs, e.g. "default/web".
	Service string
	Labels  map[string]string
	Kind    IPKind
}

// Validate checks the policy and compiles its interface patterns. Policies
// from ParsePolicies are already valid; one built in Go must be validated
// before Interfaces is called on it.
func (p *Policy) Validate() error {
	if p.Name == "" {
		return errors.New("l2announce: policy name (metadata.name) is empty; give the policy a name")
	}
	if err := p.ServiceSelector.Validate(); err != nil {
		return fmt.Errorf("l2announce: policy %q: spec.serviceSelector.%w", p.Name, err)
	}
	if err := p.NodeSelector.Validate(); err != nil {
		return fmt.Errorf("l2announce: policy %q: spec.nodeSelector.%w", p.Name, err)
	}
	p.compiled = nil // a fresh slice: copies of p may share the old one
	for i, pat := range p.InterfacePatterns {
		re, err := regexp.Compile(pat)
		if err != nil {
			return fmt.Errorf("l2announce: policy %q: spec.interfaces[%d] %q is not a regular expression (%v); write e.g. ^eth[0-9]+$", p.Name, i, pat, err)
		}
		p.compiled = append(p.compiled, re)
	}
	return nil
}

// SelectsService tells whether the policy's serviceSelector matches labels.
func (p Policy) SelectsService(labels map[string]string) bool {
	return p.ServiceSelector.Matches(labels)
}

// SelectsNode tells whether the policy's nodeSelector matches labels.
func (p Policy) SelectsNode(labels map[string]string) bool {
	return p.NodeSelector.Matches(labels)
}

// SelectsIP tells whether the policy announces w: its service is selected
// and the policy covers w's kind of IP.
func (p Policy) SelectsIP(w Want) bool {
	switch w.Kind {
	case LoadBalancerIP:
		if !p.LoadBalancerIPs {
			return false
		}
	case ExternalIP:
		if !p.ExternalIPs {
			return false
		}
	default:
		return false
	}
	return p.SelectsService(w.Labels)
}

// Interfaces returns the names in available that the policy announces on,
// in available's order. Patterns match anywhere in the name, as Cilium's
// do: write ^eth[0-9]+$ to match whole names. No patterns means every
// interface but lo.
func (p Policy) Interfaces(available []string) []string {
	res := p.compiled
	if len(res) != len(p.InterfacePatterns) {
		// Built in Go and not validated: compile what compiles rather
		// than announce everywhere.
		res = nil
		for _, pat := range p.InterfacePatterns {
			if re, err := regexp.Compile(pat); err == nil {
				res = append(res, re)
			}
		}
		if len(res) == 0 && len(p.InterfacePatterns) > 0 {
			return nil
		}
	}
	var out []string
	for _, name := range available {
		if slices.Contains(out, name) {
			continue
		}
		if len(res) == 0 {
			if name != "lo" {
				out = append(out, name)
			}
			continue
		}
		for _, re := range res {
			if re.MatchString(name) {
				out = append(out, name)
				break
			}
		}
	}
	return out
}
