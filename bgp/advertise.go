package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// Advertisement is one prefix the node announces.
type Advertisement struct {
	// Prefix is a pod CIDR, or a load-balancer IP as a /32 or /128. Host
	// bits are cleared.
	Prefix netip.Prefix
	// NextHop is the address peers should forward to. The zero value means
	// the speaker's own address on each session, which is what a node
	// announcing its own pods wants. An IPv6 prefix sent over an IPv4
	// session needs an explicit IPv6 next hop.
	NextHop netip.Addr
	// Communities are attached on top of Config.Communities.
	Communities []string
}

// advertised is one prefix as handed to gobgp: attrs identifies its
// attributes so that an unchanged prefix is not sent again.
type advertised struct {
	attrs string
	path  *api.Path
}

// Advertise makes the set of announced prefixes equal to advs: prefixes not
// announced yet are sent, prefixes whose next hop or communities changed are
// re-sent, prefixes missing from advs are withdrawn. Calling it again with
// the same set sends nothing. The work is linear in len(advs) plus the size
// of the change, so 100k prefixes are fine. Before Start the set is kept and
// announced when the speaker starts.
func (s *Speaker) Advertise(advs []Advertisement) error {
	want, err := s.buildPaths(advs)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("bgp: advertise: speaker is closed")
	}
	if !s.started {
		s.adv = want
		return nil
	}
	ctx := context.Background()
	var errs []error
	// Withdraw first, so a prefix moving between address families or a
	// shrinking set never briefly exceeds what a peer's max-prefix allows.
	for p, old := range s.adv {
		if _, ok := want[p]; ok {
			continue
		}
		if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: old.path.Family, Path: old.path}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw %s: %w", p, err))
			continue
		}
		delete(s.adv, p)
	}
	added := 0
	for p, a := range want {
		if old, ok := s.adv[p]; ok && old.attrs == a.attrs {
			continue
		}
		// AddPath of a prefix already announced replaces it (implicit
		// withdraw), so a changed next hop needs no explicit withdrawal.
		if err := s.addPath(ctx, p, a); err != nil {
			errs = append(errs, err)
			continue
		}
		added++
	}
	if added > 0 || len(errs) > 0 {
		s.log.Debug("bgp advertisements reconciled", "prefixes", len(s.adv), "sent", added, "errors", len(errs))
	}
	return errors.Join(errs...)
}

func (s *Speaker) addPath(ctx context.Context, p netip.Prefix, a advertised) error {
	if _, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: a.path}); err != nil {
		return fmt.Errorf("bgp: announce %s: %w", p, err)
	}
	s.adv[p] = a
	return nil
}

// attrSet is the serialized attributes shared by every prefix with the same
// next hop and communities, built once per distinct set: 100k pod routes
// with one next hop cost one serialization, not 100k.
type attrSet struct {
	key    string
	common [][]byte // everything but the next hop (IPv4) / MP_REACH (IPv6)
	nextV4 []byte   // NEXT_HOP attribute for IPv4 prefixes
}

// buildPaths validates advs and turns them into gobgp paths keyed by prefix.
func (s *Speaker) buildPaths(advs []Advertisement) (map[netip.Prefix]advertised, error) {
	want := make(map[netip.Prefix]advertised, len(advs))
	sets := make(map[string]*attrSet)
	for i, a := range advs {
		if !a.Prefix.IsValid() {
			return nil, fmt.Errorf("bgp: advertisements[%d].prefix: %v is not a prefix: use e.g. 10.1.0.0/24 or 192.0.2.10/32", i, a.Prefix)
		}
		if a.Prefix.Addr().Is4In6() {
			return nil, fmt.Errorf("bgp: advertisements[%d].prefix: %s is IPv4-mapped: write it as an IPv4 prefix", i, a.Prefix)
		}
		p := a.Prefix.Masked()
		nh := a.NextHop.Unmap()
		if a.NextHop.IsValid() && p.Addr().Is4() && !nh.Is4() {
			return nil, fmt.Errorf("bgp: advertisements[%d].nextHop: %s for IPv4 prefix %s: use an IPv4 next hop or leave it empty", i, a.NextHop, p)
		}
		if a.NextHop.IsValid() && p.Addr().Is6() && !nh.Is6() {
			return nil, fmt.Errorf("bgp: advertisements[%d].nextHop: %s for IPv6 prefix %s: use an IPv6 next hop or leave it empty", i, a.NextHop, p)
		}
		if _, dup := want[p]; dup {
			return nil, fmt.Errorf("bgp: advertisements[%d].prefix: %s is listed twice: list each prefix once", i, p)
		}
		set, err := s.attrSetFor(sets, nh, a.Communities)
		if err != nil {
			return nil, fmt.Errorf("bgp: advertisements[%d].%w", i, err)
		}
		path, err := set.path(p, nh)
		if err != nil {
			return nil, fmt.Errorf("bgp: advertisements[%d]: %w", i, err)
		}
		want[p] = advertised{attrs: set.key, path: path}
	}
	return want, nil
}

func (s *Speaker) attrSetFor(sets map[string]*attrSet, nh netip.Addr, extra []string) (*attrSet, error) {
	key := nh.String() + "|" + strings.Join(extra, ",")
	if set, ok := sets[key]; ok {
		return set, nil
	}
	comms, err := parseCommunities(extra)
	if err != nil {
		return nil, err
	}
	all := append(slices.Clone(s.comms), comms...)
	var std []uint32
	var large []*bgp.LargeCommunity
	seenStd := map[uint32]bool{}
	seenLarge := map[Community]bool{}
	for _, c := range all {
		if c.Large {
			if !seenLarge[c] {
				seenLarge[c] = true
				large = append(large, bgp.NewLargeCommunity(c.A, c.B, c.C))
			}
			continue
		}
		if v := c.standard(); !seenStd[v] {
			seenStd[v] = true
			std = append(std, v)
		}
	}
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if len(std) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(std))
	}
	if len(large) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeLargeCommunities(large))
	}
	if s.cfg.LocalPref != 0 {
		attrs = append(attrs, bgp.NewPathAttributeLocalPref(s.cfg.LocalPref))
	}
	set := &attrSet{key: key}
	for _, a := range attrs {
		b, err := a.Serialize()
		if err != nil {
			return nil, fmt.Errorf("communities: serialize %s: %w", a, err)
		}
		set.common = append(set.common, b)
	}
	v4 := "0.0.0.0" // gobgp puts the session's local address in place of an unspecified next hop
	if nh.Is4() {
		v4 = nh.String()
	}
	b, err := bgp.NewPathAttributeNextHop(v4).Serialize()
	if err != nil {
		return nil, fmt.Errorf("nextHop: serialize %s: %w", v4, err)
	}
	set.nextV4 = b
	sets[key] = set
	return set, nil
}

// path builds the gobgp path for p with this attribute set. It passes the
// wire encoding (NlriBinary, PattrsBinary) rather than protobuf Any values:
// gobgp decodes it directly, which is several times cheaper at 100k paths.
func (set *attrSet) path(p netip.Prefix, nh netip.Addr) (*api.Path, error) {
	if p.Addr().Is4() {
		nlri := bgp.NewIPAddrPrefix(uint8(p.Bits()), p.Addr().String())
		b, err := nlri.Serialize()
		if err != nil {
			return nil, fmt.Errorf("serialize prefix %s: %w", p, err)
		}
		attrs := make([][]byte, 0, len(set.common)+1)
		attrs = append(append(attrs, set.common...), set.nextV4)
		return &api.Path{Family: familyV4, NlriBinary: b, PattrsBinary: attrs}, nil
	}
	nlri := bgp.NewIPv6AddrPrefix(uint8(p.Bits()), p.Addr().String())
	b, err := nlri.Serialize()
	if err != nil {
		return nil, fmt.Errorf("serialize prefix %s: %w", p, err)
	}
	v6 := "::"
	if nh.Is6() {
		v6 = nh.String()
	}
	mp, err := bgp.NewPathAttributeMpReachNLRI(v6, []bgp.AddrPrefixInterface{nlri}).Serialize()
	if err != nil {
		return nil, fmt.Errorf("serialize next hop %s for %s: %w", v6, p, err)
	}
	attrs := make([][]byte, 0, len(set.common)+1)
	attrs = append(append(attrs, set.common...), mp)
	return &api.Path{Family: familyV6, NlriBinary: b, PattrsBinary: attrs}, nil
}
