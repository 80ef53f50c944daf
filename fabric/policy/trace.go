package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/fabric-net/fabric/fabric/identity"
)

// TraceEndpoint is one end of a traced flow. Give Identity, Labels or both:
// a missing one is looked up in the IdentitySource (a reserved label set such
// as "reserved:world" resolves to its reserved identity). Addr is optional
// and only matched against CIDR peers.
type TraceEndpoint struct {
	Identity uint32
	Labels   identity.Labels
	Addr     netip.Addr
}

// DirectionTrace is the verdict of one direction: the egress of the source
// or the ingress of the destination.
type DirectionTrace struct {
	Verdict Verdict
	// Enforced tells whether the subject endpoint is in default deny for
	// this direction.
	Enforced bool
	Rule     string // the deciding rule's origin; "" when decided by default
	Reason   string
}

// TraceResult is what `fabric policy trace` prints.
type TraceResult struct {
	Verdict      Verdict
	Egress       DirectionTrace // of the source
	Ingress      DirectionTrace // of the destination
	DecidingRule string         // "" when no rule decided: allowed or denied by default
	Reason       string
}

// traceEnd is a resolved TraceEndpoint.
type traceEnd struct {
	id     identity.ID
	labels identity.Labels
	addr   netip.Addr
	name   string
}

func (u universe) resolve(te TraceEndpoint) traceEnd {
	e := traceEnd{id: identity.ID(te.Identity), labels: te.Labels, addr: te.Addr}
	if e.id == 0 && te.Labels.Len() > 0 {
		if id, ok := u.lookup(te.Labels); ok {
			e.id = identity.ID(id)
		}
	}
	if te.Labels.Len() == 0 && e.id != 0 {
		e.labels, _ = u.labelsOf(uint32(e.id))
	}
	switch {
	case e.labels.Len() > 0:
		e.name = e.labels.String()
	case e.id != 0:
		// Without labels no selector matches: say so, since the verdict
		// then likely differs from the real one.
		e.name = "identity " + e.id.String() + " (labels unknown)"
	case e.addr.IsValid():
		e.name = e.addr.String()
	default:
		e.name = "an unknown peer"
	}
	return e
}

// Trace computes the verdict for a packet from src to dst on port and
// protocol proto (an IANA number; for ICMP and ICMPv6, port is the ICMP
// type). The egress of src and the ingress of dst must both allow it; in
// each direction a matching Deny rule beats any Allow rule, and an endpoint
// no policy selects for a direction is allowed by default. Trace applies the
// same rules as Compile, to labels instead of compiled entries.
func Trace(policies []Policy, src, dst TraceEndpoint, port uint16, proto uint8, idents IdentitySource) TraceResult {
	u := newUniverse(idents)
	s, d := u.resolve(src), u.resolve(dst)
	res := TraceResult{
		Egress:  traceDirection(policies, Egress, s, d, port, proto),
		Ingress: traceDirection(policies, Ingress, d, s, port, proto),
	}
	eg := "egress of " + s.name + ": " + res.Egress.Reason
	in := "ingress of " + d.name + ": " + res.Ingress.Reason
	switch {
	case res.Egress.Verdict == Deny: // the packet never leaves the source
		res.Verdict, res.DecidingRule, res.Reason = Deny, res.Egress.Rule, eg
	case res.Ingress.Verdict == Deny:
		res.Verdict, res.DecidingRule, res.Reason = Deny, res.Ingress.Rule, in
	default:
		res.Verdict, res.DecidingRule, res.Reason = Allow, cmpOr(res.Ingress.Rule, res.Egress.Rule), eg+"; "+in
	}
	return res
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func traceDirection(policies []Policy, dir Direction, subject, peer traceEnd, port uint16, proto uint8) DirectionTrace {
	clusterID := subject.id.ClusterID()
	var selecting []string
	var allows, denies []*Rule
	enforced := false
	for pi := range policies {
		for ri := range policies[pi].Rules {
			r := &policies[pi].Rules[ri]
			if r.Direction != dir || !r.Selector.Matches(subject.labels) {
				continue
			}
			selecting = append(selecting, r.Origin)
			enforced = enforced || !r.NoDefaultDeny
			if !l4Matches(r, port, proto) || !slices.ContainsFunc(r.Peers, func(p Peer) bool { return peerMatches(p, peer, clusterID) }) {
				continue
			}
			if r.Deny {
				denies = append(denies, r)
			} else {
				allows = append(allows, r)
			}
		}
	}
	byOrigin := func(a, b *Rule) int { return strings.Compare(a.Origin, b.Origin) }
	slices.SortFunc(denies, byOrigin)
	slices.SortFunc(allows, byOrigin)
	slices.Sort(selecting)
	selecting = slices.Compact(selecting)
	flow := fmt.Sprintf("%s %s on %s", map[Direction]string{Ingress: "from", Egress: "to"}[dir], peer.name, describeL4(port, proto))
	t := DirectionTrace{Enforced: enforced}
	switch {
	case len(denies) > 0:
		t.Verdict, t.Rule = Deny, denies[0].Origin
		t.Reason = fmt.Sprintf("denied by %s (deny rules win over allow rules)", t.Rule)
	case len(allows) > 0:
		t.Verdict, t.Rule = Allow, allows[0].Origin
		t.Reason = "allowed by " + t.Rule
		if allows[0].HasL7 {
			t.Reason += " (L3/L4 only: its L7 rules are not enforced yet)"
		}
	case !enforced && len(selecting) == 0:
		t.Verdict = Allow
		t.Reason = fmt.Sprintf("no policy selects it for %s: allowed by default", dir)
	case !enforced:
		t.Verdict = Allow
		t.Reason = fmt.Sprintf("allowed by default: only rules with enableDefaultDeny false select it (%s) and none matches %s", strings.Join(selecting, ", "), flow)
	default:
		t.Verdict = Deny
		t.Reason = fmt.Sprintf("denied by default: selected for %s by %s, and no rule allows %s", dir, strings.Join(selecting, ", "), flow)
	}
	return t
}

func peerMatches(p Peer, peer traceEnd, clusterID uint32) bool {
	switch p.Kind {
	case PeerAll:
		return true
	case PeerSelector:
		return p.Selector.Matches(peer.labels)
	case PeerEntity:
		if p.Entity == "cluster" && peer.id == 0 && peer.labels.Len() > 0 {
			// Labels without a known identity: a workload about to be
			// created, assumed to be in the subject's cluster.
			return true
		}
		return entityMatches(p.Entity, peer.id, clusterID)
	case PeerCIDR:
		return inCIDRPeer(p, peer.addr)
	}
	return false
}

// l4Matches mirrors ruleL4: ANY with a port covers TCP, UDP and SCTP only.
func l4Matches(r *Rule, port uint16, proto uint8) bool {
	if len(r.Ports) == 0 && len(r.ICMP) == 0 {
		return true
	}
	for _, pr := range r.Ports {
		protoOK := pr.Proto == proto ||
			pr.Proto == 0 && (pr.From == 0 || proto == ProtoTCP || proto == ProtoUDP || proto == ProtoSCTP)
		if protoOK && (pr.From == 0 || pr.From <= port && port <= pr.To) {
			return true
		}
	}
	for _, t := range r.ICMP {
		want := ProtoICMP
		if t.Family == 6 {
			want = ProtoICMPv6
		}
		if proto == want && port == uint16(t.Type) {
			return true
		}
	}
	return false
}

func describeL4(port uint16, proto uint8) string {
	name := map[uint8]string{ProtoTCP: "TCP", ProtoUDP: "UDP", ProtoSCTP: "SCTP", ProtoICMP: "ICMP", ProtoICMPv6: "ICMPv6"}[proto]
	switch {
	case proto == ProtoICMP || proto == ProtoICMPv6:
		return fmt.Sprintf("%s type %d", name, port)
	case name != "":
		return fmt.Sprintf("%d/%s", port, name)
	}
	return fmt.Sprintf("port %d of protocol %d", port, proto)
}
