package policy

import (
	"fmt"
	"net/netip"
)

// Kinds of policy documents Parse accepts.
const (
	KindCiliumNetworkPolicy            = "CiliumNetworkPolicy"
	KindCiliumClusterwideNetworkPolicy = "CiliumClusterwideNetworkPolicy"
	KindNetworkPolicy                  = "NetworkPolicy"
)

// Labels through which Fabric represents Kubernetes namespaces; see the
// package comment.
const (
	NamespaceLabel        = "k8s:io.kubernetes.pod.namespace"
	NamespaceLabelsPrefix = "k8s:io.cilium.k8s.namespace.labels."
)

// L7Warning is the warning attached to every rule with L7 sections, prefixed
// by the rule's origin.
const L7Warning = "L7 rules are not enforced yet: the L3/L4 part of this rule is enforced, the L7 part is not"

// Policy is one parsed policy document.
type Policy struct {
	Name      string
	Namespace string // "" for clusterwide policies
	Kind      string // one of the Kind constants
	Rules     []Rule
	// Warnings are problems that did not stop parsing but the user must
	// see: unenforced L7 rules, defaulted namespaces, ignored sections.
	Warnings []string
	// Source is the document re-encoded as YAML, for display and storage.
	Source []byte
}

// Direction is the direction of traffic relative to the selected endpoint.
type Direction uint8

const (
	Ingress Direction = iota + 1
	Egress
)

func (d Direction) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

// Verdict is what happens to matching traffic. The zero value is invalid, so
// a forgotten verdict is never mistaken for one.
type Verdict uint8

const (
	Allow Verdict = iota + 1
	Deny
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Rule is one ingress or egress rule of a policy, applied to the endpoints
// its Selector matches.
type Rule struct {
	Selector  Selector
	Direction Direction
	Deny      bool
	// Peers are the other ends the rule covers. Empty: the rule covers no
	// traffic but still puts its endpoints into default deny for its
	// direction (Cilium's `ingress: [{}]`, a NetworkPolicy without rules).
	Peers []Peer
	// Ports and ICMP are the L4 traffic the rule covers; both empty means
	// all traffic, otherwise only what they list.
	Ports []PortRange
	ICMP  []ICMPType
	// HasL7 marks rules with L7 sections; only their L3/L4 part is enforced.
	HasL7 bool
	L7    []L7Rule
	// NoDefaultDeny is set by Cilium's enableDefaultDeny: false: the rule
	// adds its verdicts without putting its endpoints into default deny.
	NoDefaultDeny bool
	// Origin names the rule for traces: "ns/name: ingress[0]".
	Origin string
}

// PeerKind tells which field of a Peer is set.
type PeerKind uint8

const (
	PeerSelector PeerKind = iota + 1 // endpoints whose labels match Selector
	PeerEntity                       // a Cilium entity, see Entities
	PeerCIDR                         // addresses in CIDR but not in Except
	PeerAll                          // every peer
)

// Peer is the other end of traffic a rule covers.
type Peer struct {
	Kind     PeerKind
	Selector Selector
	Entity   string
	CIDR     netip.Prefix
	Except   []netip.Prefix
}

func (p Peer) String() string {
	switch p.Kind {
	case PeerSelector:
		return "endpoints " + p.Selector.String()
	case PeerEntity:
		return "entity " + p.Entity
	case PeerCIDR:
		s := "cidr " + p.CIDR.String()
		for _, e := range p.Except {
			s += " except " + e.String()
		}
		return s
	case PeerAll:
		return "all"
	}
	return "peer(?)"
}

// Protocol numbers (IANA) used in rules and entries.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// PortRange is an L4 protocol and port range. Proto 0 is Cilium's ANY (TCP,
// UDP and SCTP when a port is given, all traffic when not); From 0 means all
// ports, and To equals From for a single port.
type PortRange struct {
	Proto    uint8
	From, To uint16
}

// ICMPType is one ICMP (Family 4) or ICMPv6 (Family 6) message type.
type ICMPType struct {
	Family uint8
	Type   uint8
}

// L7Rule is an L7 section kept as written; Fabric does not enforce it yet.
type L7Rule struct {
	Kind string // http, kafka, dns, l7proto, terminatingTLS, originatingTLS, serverNames, listener
	Spec any    // the section as decoded from YAML
}
