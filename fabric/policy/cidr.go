package policy

import "net/netip"

// carve returns the smallest set of prefixes covering p minus excepts, so a
// datapath that keys on longest-prefix match needs no "except" notion. An
// allow for 10.0.0.0/8 except 10.1.0.0/16 becomes allows for the eight
// sibling prefixes around the hole; a deny entry for the hole would be
// wrong, since it would override other rules that allow it.
func carve(p netip.Prefix, excepts []netip.Prefix) []netip.Prefix {
	var overlapping []netip.Prefix
	for _, e := range excepts {
		if e.Overlaps(p) {
			if e.Bits() <= p.Bits() {
				return nil // the hole covers p entirely
			}
			overlapping = append(overlapping, e)
		}
	}
	if len(overlapping) == 0 {
		return []netip.Prefix{p}
	}
	lo, hi := halves(p)
	return append(carve(lo, overlapping), carve(hi, overlapping)...)
}

// halves splits p into its two children one bit longer.
func halves(p netip.Prefix) (lo, hi netip.Prefix) {
	bits := p.Bits() + 1
	lo = netip.PrefixFrom(p.Addr(), bits)
	b := p.Addr().AsSlice()
	i := p.Bits()
	b[i/8] |= 0x80 >> (i % 8)
	a, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(a, bits)
}

// inCIDRPeer reports whether addr is in the peer's CIDR and outside its
// exceptions.
func inCIDRPeer(p Peer, addr netip.Addr) bool {
	if !addr.IsValid() || !p.CIDR.Contains(addr.Unmap()) {
		return false
	}
	for _, e := range p.Except {
		if e.Contains(addr.Unmap()) {
			return false
		}
	}
	return true
}
