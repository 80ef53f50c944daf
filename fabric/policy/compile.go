package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/fabric-net/fabric/fabric/identity"
)

// Endpoint is a local endpoint to compile policy for.
type Endpoint struct {
	ID       string // unique among the endpoints given to Compile
	Identity uint32
	Labels   identity.Labels
}

// IdentitySource gives the identities selectors are expanded over.
type IdentitySource interface {
	// All returns every identity known in the mesh (all clusters) with its
	// labels. Callers only read the map. Reserved identities may be left
	// out: the well-known ones are always added.
	All() map[uint32]identity.Labels
}

// EndpointPolicy is the compiled policy of one endpoint.
type EndpointPolicy struct {
	// IngressEnforced and EgressEnforced put the direction into default
	// deny: traffic that no Allow entry matches is dropped. A direction is
	// enforced once any rule selects the endpoint for it, unless every such
	// rule came with enableDefaultDeny: false.
	IngressEnforced, EgressEnforced bool
	// Entries are sorted by direction, verdict, peer, protocol and port.
	// A Deny entry wins over every Allow entry that matches the same
	// packet, whatever their specificity; Compile already drops Allow
	// entries that a Deny entry covers.
	Entries []Entry
}

// Entry is one verdict for a peer and an L4 match.
type Entry struct {
	Direction Direction
	Verdict   Verdict
	// Identity is the peer's identity, 0 for any peer when CIDR is not
	// valid. When CIDR is valid the peer is that prefix (for an LPM map);
	// Identity is then the prefix's identity from cidrIdentity, or 0 when
	// none was given.
	Identity uint32
	CIDR     netip.Prefix
	Proto    uint8  // IANA protocol number; 0 = any
	Port     uint16 // first port, 0 = any; the ICMP type when ICMP is set
	PortEnd  uint16 // last port (Port for a single port; 0 with Port 0)
	ICMP     bool   // Port and PortEnd hold an ICMP type (Proto 1 or 58), 0 included
	Rule     string // the origin of the rule, for traces
}

// universe is every identity selectors are expanded over, sorted by number.
type universe []identEntry

type identEntry struct {
	id     uint32
	set    identity.Labels
	labels []identity.Label // set.List(), kept since matching reads it often
}

func newUniverse(idents IdentitySource) universe {
	all := map[uint32]identity.Labels{}
	if idents != nil {
		for id, l := range idents.All() {
			all[id] = l
		}
	}
	for name, id := range identity.Reserved() {
		if _, ok := all[uint32(id)]; !ok {
			all[uint32(id)] = identity.MustParseLabels(identity.SourceReserved + ":" + name)
		}
	}
	u := make(universe, 0, len(all))
	for id, l := range all {
		u = append(u, identEntry{id, l, l.List()})
	}
	slices.SortFunc(u, func(a, b identEntry) int {
		return cmp.Compare(a.id, b.id)
	})
	return u
}

// lookup finds an identity by its labels.
func (u universe) lookup(l identity.Labels) (uint32, bool) {
	for _, e := range u {
		if e.set.Equal(l) {
			return e.id, true
		}
	}
	return 0, false
}

func (u universe) labelsOf(id uint32) (identity.Labels, bool) {
	i, ok := slices.BinarySearchFunc(u, id, func(e identEntry, id uint32) int { return cmp.Compare(e.id, id) })
	if !ok {
		return identity.Labels{}, false
	}
	return u[i].set, true
}

// peerKey is the peer half of an entry.
type peerKey struct {
	id   uint32
	cidr netip.Prefix
}

// compiler caches selector expansions across endpoints: the same rules are
// met once per selected endpoint.
type compiler struct {
	u            universe
	cidrIdentity func(netip.Prefix) uint32
	selCache     map[string][]peerKey
}

func (c *compiler) peers(p Peer, clusterID uint32) []peerKey {
	switch p.Kind {
	case PeerAll:
		return []peerKey{{}}
	case PeerSelector:
		if p.Selector.IsWildcard() {
			return []peerKey{{}}
		}
		// %q keeps keys and values apart even if they hold separators,
		// which String does not: a collision would share expansions.
		key := fmt.Sprintf("%q", p.Selector.Requirements)
		if ks, ok := c.selCache[key]; ok {
			return ks
		}
		var ks []peerKey
		for _, e := range c.u {
			if p.Selector.matchList(e.labels) {
				ks = append(ks, peerKey{id: e.id})
			}
		}
		c.selCache[key] = ks
		return ks
	case PeerEntity:
		ids, all := entityIDs(p.Entity)
		if all {
			return []peerKey{{}}
		}
		var ks []peerKey
		for _, id := range ids {
			ks = append(ks, peerKey{id: uint32(id)})
		}
		if p.Entity == "cluster" {
			for _, e := range c.u {
				if id := identity.ID(e.id); !id.IsReserved() && inCluster(id, clusterID) {
					ks = append(ks, peerKey{id: e.id})
				}
			}
		}
		return ks
	case PeerCIDR:
		var ks []peerKey
		for _, pfx := range carve(p.CIDR, p.Except) {
			k := peerKey{cidr: pfx}
			if c.cidrIdentity != nil {
				k.id = c.cidrIdentity(pfx)
			}
			ks = append(ks, k)
		}
		return ks
	}
	return nil // an unknown kind covers nothing: fail closed
}

// l4 is the L4 half of an entry.
type l4 struct {
	proto     uint8
	port, end uint16
	icmp      bool
}

func ruleL4(r *Rule) []l4 {
	if len(r.Ports) == 0 && len(r.ICMP) == 0 {
		return []l4{{}}
	}
	var out []l4
	for _, pr := range r.Ports {
		if pr.Proto == 0 && pr.From != 0 {
			// ANY with a port means the port-carrying protocols, as in
			// Cilium; a wildcard protocol would also match ICMP types.
			for _, p := range []uint8{ProtoTCP, ProtoUDP, ProtoSCTP} {
				out = append(out, l4{p, pr.From, pr.To, false})
			}
			continue
		}
		out = append(out, l4{pr.Proto, pr.From, pr.To, false})
	}
	for _, t := range r.ICMP {
		p := ProtoICMP
		if t.Family == 6 {
			p = ProtoICMPv6
		}
		out = append(out, l4{p, uint16(t.Type), uint16(t.Type), true})
	}
	return out
}

// Compile computes the policy of each local endpoint: which directions are
// in default deny and the Allow and Deny entries for them. Selectors are
// expanded over idents; cidrIdentity, when not nil, gives CIDR entries an
// identity too. The result has one EndpointPolicy per endpoint ID and is
// deterministic: the same input gives the same output.
func Compile(policies []Policy, endpoints []Endpoint, idents IdentitySource, cidrIdentity func(netip.Prefix) uint32) map[string]EndpointPolicy {
	c := &compiler{u: newUniverse(idents), cidrIdentity: cidrIdentity, selCache: map[string][]peerKey{}}
	out := make(map[string]EndpointPolicy, len(endpoints))
	for _, ep := range endpoints {
		out[ep.ID] = c.endpoint(policies, ep)
	}
	return out
}

func (c *compiler) endpoint(policies []Policy, ep Endpoint) EndpointPolicy {
	list := ep.Labels.List()
	clusterID := identity.ID(ep.Identity).ClusterID()
	var res EndpointPolicy
	var entries []Entry
	for pi := range policies {
		for ri := range policies[pi].Rules {
			r := &policies[pi].Rules[ri]
			if !r.Selector.matchList(list) {
				continue
			}
			if !r.NoDefaultDeny {
				if r.Direction == Ingress {
					res.IngressEnforced = true
				} else if r.Direction == Egress {
					res.EgressEnforced = true
				}
			}
			verdict := Allow
			if r.Deny {
				verdict = Deny
			}
			ports := ruleL4(r)
			for _, p := range r.Peers {
				for _, pk := range c.peers(p, clusterID) {
					for _, l := range ports {
						entries = append(entries, Entry{Direction: r.Direction, Verdict: verdict,
							Identity: pk.id, CIDR: pk.cidr, Proto: l.proto, Port: l.port, PortEnd: l.end,
							ICMP: l.icmp, Rule: r.Origin})
					}
				}
			}
		}
	}
	res.Entries = normalize(entries, res.IngressEnforced, res.EgressEnforced)
	return res
}

// normalize drops Allow entries of directions not in default deny (they
// change nothing), duplicates, and Allow entries a Deny entry covers, then
// sorts.
func normalize(entries []Entry, ingress, egress bool) []Entry {
	entries = slices.DeleteFunc(entries, func(e Entry) bool {
		return e.Verdict == Allow && !(e.Direction == Ingress && ingress || e.Direction == Egress && egress)
	})
	slices.SortFunc(entries, compareEntries)
	entries = slices.CompactFunc(entries, func(a, b Entry) bool {
		a.Rule, b.Rule = "", ""
		return a == b // sorted by Rule last, so the first origin is kept
	})
	var denies []Entry
	for _, e := range entries {
		if e.Verdict == Deny {
			denies = append(denies, e)
		}
	}
	if len(denies) > 0 {
		entries = slices.DeleteFunc(entries, func(a Entry) bool {
			return a.Verdict == Allow && slices.ContainsFunc(denies, func(d Entry) bool { return covers(d, a) })
		})
	}
	if len(entries) == 0 {
		return nil
	}
	return entries
}

// covers reports whether every packet entry a matches also matches d.
func covers(d, a Entry) bool {
	if d.Direction != a.Direction {
		return false
	}
	switch {
	case d.Identity == 0 && !d.CIDR.IsValid(): // any peer
	case d.CIDR.IsValid() && a.CIDR.IsValid():
		if d.Identity != a.Identity || d.CIDR.Bits() > a.CIDR.Bits() || !d.CIDR.Contains(a.CIDR.Addr()) {
			return false
		}
	case !d.CIDR.IsValid() && !a.CIDR.IsValid():
		if d.Identity != a.Identity {
			return false
		}
	default:
		return false
	}
	switch {
	case d.Proto == 0 && d.Port == 0: // all traffic
		return true
	case d.Proto != a.Proto:
		return false
	case d.Port == 0 && !d.ICMP: // all ports (or types) of the protocol
		return true
	case d.ICMP != a.ICMP || a.Port == 0 && !a.ICMP:
		return false
	}
	return d.Port <= a.Port && a.PortEnd <= d.PortEnd
}

func compareEntries(a, b Entry) int {
	return cmp.Or(
		cmp.Compare(a.Direction, b.Direction),
		cmp.Compare(a.Verdict, b.Verdict),
		cmp.Compare(a.Identity, b.Identity),
		comparePrefix(a.CIDR, b.CIDR),
		cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(a.Port, b.Port),
		cmp.Compare(a.PortEnd, b.PortEnd),
		compareBool(a.ICMP, b.ICMP),
		strings.Compare(a.Rule, b.Rule),
	)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := compareBool(a.IsValid(), b.IsValid()); c != 0 || !a.IsValid() {
		return c
	}
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}
