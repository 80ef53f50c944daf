package service

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrExhausted means every usable address of the service CIDR is in use.
var ErrExhausted = errors.New("no free cluster IP: widen the service CIDR or delete services no longer needed")

// CIDRAllocator picks cluster IPs from a service CIDR. It holds no state:
// the caller says which addresses are in use (the store, once the agent
// wires it), so two callers given the same set pick the same address and a
// conditional write decides between them.
type CIDRAllocator struct {
	cidr        netip.Prefix
	first, last netip.Addr // usable range, inclusive
}

// NewCIDRAllocator returns an allocator over cidr. The network address is
// never allocated, nor the broadcast address of an IPv4 CIDR.
func NewCIDRAllocator(cidr netip.Prefix) (CIDRAllocator, error) {
	switch {
	case !cidr.IsValid():
		return CIDRAllocator{}, errors.New("service CIDR: invalid prefix: give one such as 10.96.0.0/12 or fd00:96::/108")
	case cidr.Addr().Zone() != "" || cidr.Addr().Is4In6():
		return CIDRAllocator{}, fmt.Errorf("service CIDR %s: zoned or IPv4-mapped prefixes are not service CIDRs: give a plain IPv4 or IPv6 CIDR", cidr)
	case cidr != cidr.Masked():
		return CIDRAllocator{}, fmt.Errorf("service CIDR %s has host bits set: use %s", cidr, cidr.Masked())
	}
	a := CIDRAllocator{cidr: cidr, first: cidr.Addr().Next(), last: lastAddr(cidr)}
	if cidr.Addr().Is4() {
		a.last = a.last.Prev()
	}
	if !a.first.IsValid() || !a.last.IsValid() || a.last.Less(a.first) {
		return CIDRAllocator{}, fmt.Errorf("service CIDR %s holds no usable address: use a shorter prefix, at most /30 for IPv4 or /127 for IPv6", cidr)
	}
	return a, nil
}

// CIDR is the allocator's service CIDR.
func (a CIDRAllocator) CIDR() netip.Prefix { return a.cidr }

// Allocate returns the lowest usable address of the CIDR for which inUse is
// false, or an error wrapping ErrExhausted. inUse is called at most once per
// address in use, plus one, so its cost bounds the allocation's.
func (a CIDRAllocator) Allocate(inUse func(netip.Addr) bool) (netip.Addr, error) {
	for ip := a.first; ip.IsValid() && !a.last.Less(ip); ip = ip.Next() {
		if !inUse(ip) {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("service CIDR %s: all %s usable addresses are in use: %w", a.cidr, a.size(), ErrExhausted)
}

// Check says whether ip can be a cluster IP of this CIDR (a clusterIP given
// in a manifest): inside it and neither its network nor broadcast address.
// It does not know whether ip is in use.
func (a CIDRAllocator) Check(ip netip.Addr) error {
	if !a.cidr.Contains(ip) {
		return fmt.Errorf("cluster IP %s is outside the service CIDR %s: give an address inside it, or none to have one allocated", ip, a.cidr)
	}
	if ip.Less(a.first) || a.last.Less(ip) {
		return fmt.Errorf("cluster IP %s is the network or broadcast address of %s: give another address, or none to have one allocated", ip, a.cidr)
	}
	return nil
}

// size is the number of usable addresses, in words.
func (a CIDRAllocator) size() string {
	host := a.cidr.Addr().BitLen() - a.cidr.Bits()
	if host >= 63 {
		return fmt.Sprintf("2^%d", host)
	}
	n := uint64(1)<<host - 1 // network
	if a.cidr.Addr().Is4() {
		n-- // broadcast
	}
	return fmt.Sprint(n)
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		hostBits := max(0, min(8, (i+1)*8-p.Bits()))
		b[i] |= byte(1<<hostBits - 1)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
