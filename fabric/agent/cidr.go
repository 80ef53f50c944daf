package agent

import (
	"net/netip"
	"slices"

	"github.com/fabric-net/fabric/bpf"
	"github.com/fabric-net/fabric/fabric/identity"
	"github.com/fabric-net/fabric/fabric/policy"
)

// CIDR peers are enforced the way identities are: every prefix a policy
// names (after its exceptions are carved out) gets a node-local identity,
// and the ipcache maps the prefix to it, so the datapath's longest-prefix
// lookup resolves an outside address to the most specific prefix any policy
// names. The identities live in cluster 0 above the reserved numbers, which
// no cluster allocates and which never travel between nodes: they stand for
// addresses outside the cluster, and only the node that resolved them uses
// them.
const (
	cidrIdentityBase = 0x8000
	cidrIdentityMax  = 0xffff
)

// cidrSet is the prefixes of one compilation with their identities.
type cidrSet struct {
	prefixes []netip.Prefix // sorted
	ids      []uint32       // parallel to prefixes
}

// cidrIdentities collects every prefix the compiled policies name and
// numbers them in a stable order.
func cidrIdentities(compiled map[string]policy.EndpointPolicy) cidrSet {
	seen := map[netip.Prefix]bool{}
	for _, ep := range compiled {
		for _, e := range ep.Entries {
			if e.CIDR.IsValid() {
				seen[e.CIDR.Masked()] = true
			}
		}
	}
	var s cidrSet
	for p := range seen {
		s.prefixes = append(s.prefixes, p)
	}
	slices.SortFunc(s.prefixes, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	if len(s.prefixes) > cidrIdentityMax-cidrIdentityBase+1 {
		// Far beyond any real policy set; the rest stay unenforced
		// rather than aliasing another identity.
		s.prefixes = s.prefixes[:cidrIdentityMax-cidrIdentityBase+1]
	}
	for i := range s.prefixes {
		s.ids = append(s.ids, uint32(cidrIdentityBase+i))
	}
	return s
}

// covered returns the identities a rule on p must hold for: p's own and
// those of the more specific prefixes inside it, which the longest match
// prefers. A rule on a /0 also holds for the world identity, which
// addresses no prefix covers resolve to.
func (s cidrSet) covered(p netip.Prefix) []uint32 {
	p = p.Masked()
	var out []uint32
	for i, q := range s.prefixes {
		if q.Addr().Is4() == p.Addr().Is4() && q.Bits() >= p.Bits() && p.Contains(q.Addr()) {
			out = append(out, s.ids[i])
		}
	}
	if p.Bits() == 0 {
		out = append(out, uint32(identity.World))
	}
	return out
}

// all returns every CIDR identity: an entity "world" rule holds for each,
// since they all stand for outside addresses.
func (s cidrSet) all() []uint32 { return s.ids }

// cidrIPCache returns the ipcache entries of the set. A prefix the cluster
// already has an entry for (a node's pod CIDR, an endpoint, a node
// address) keeps the cluster's: a CIDR rule does not select cluster members.
// A prefix inside a pod CIDR keeps that node as its tunnel endpoint, so
// traffic to it still crosses the overlay.
func cidrIPCache(s cidrSet, cluster []bpf.IPCacheEntry) []bpf.IPCacheEntry {
	have := map[netip.Prefix]bool{}
	for _, e := range cluster {
		have[e.Prefix.Masked()] = true
	}
	var out []bpf.IPCacheEntry
	for i, p := range s.prefixes {
		if have[p] {
			continue
		}
		e := bpf.IPCacheEntry{Prefix: p, Identity: s.ids[i]}
		best := -1
		for _, c := range cluster {
			if c.Node.IsValid() && c.Prefix.Bits() < p.Bits() && c.Prefix.Contains(p.Addr()) && c.Prefix.Bits() > best {
				best, e.Node = c.Prefix.Bits(), c.Node
			}
		}
		out = append(out, e)
	}
	return out
}
