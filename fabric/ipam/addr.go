package ipam

import (
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"
	"strings"
)

// Family is an address family. Its value is the suffix of the node index key
// ipam/nodes/<node>/<family>.
type Family string

const (
	IPv4 Family = "v4"
	IPv6 Family = "v6"
)

func familyOf(p netip.Prefix) Family {
	if p.Addr().Is4() {
		return IPv4
	}
	return IPv6
}

func familyOfAddr(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// u128 is an address as a 128-bit integer, so subnet arithmetic works the same
// for both families (IPv4 sits in the low 32 bits of the mapped form).
type u128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func (u u128) addr(is4 bool) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	a := netip.AddrFrom16(b)
	if is4 {
		return a.Unmap()
	}
	return a
}

func (u u128) add(v u128) u128 {
	lo, c := bits.Add64(u.lo, v.lo, 0)
	hi, _ := bits.Add64(u.hi, v.hi, c)
	return u128{hi, lo}
}

// shl returns i << n as a 128-bit integer.
func shl(i uint64, n int) u128 {
	switch {
	case n == 0:
		return u128{0, i}
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{i << (n - 64), 0}
	default:
		return u128{i >> (64 - n), i << n}
	}
}

// subnetCount is how many node CIDRs of length mask fit in pool, capped at
// MaxUint64 (a pool that large is never walked to its end).
func subnetCount(pool netip.Prefix, mask int) uint64 {
	d := mask - pool.Bits()
	if d >= 64 {
		return math.MaxUint64
	}
	return 1 << d
}

// nthSubnet returns the i-th node CIDR of length mask inside pool.
func nthSubnet(pool netip.Prefix, mask int, i uint64) netip.Prefix {
	a := pool.Addr()
	base := toU128(a)
	return netip.PrefixFrom(base.add(shl(i, a.BitLen()-mask)).addr(a.Is4()), mask)
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	host := a.BitLen() - p.Bits()
	// ones = 2^host - 1 as 128 bits.
	var ones u128
	switch {
	case host >= 128:
		ones = u128{math.MaxUint64, math.MaxUint64}
	case host >= 64:
		ones = u128{1<<(host-64) - 1, math.MaxUint64}
	default:
		ones = u128{0, 1<<host - 1}
	}
	return toU128(a).add(ones).addr(a.Is4())
}

// GatewayOf is the address reserved in a node CIDR for the node itself: the
// first host address (x.y.z.1 in a /24). The network address below it (and, in
// IPv4, the broadcast address at the top) is never handed out either.
func GatewayOf(p netip.Prefix) netip.Addr {
	return p.Masked().Addr().Next()
}

// firstEndpointAddr and lastEndpointAddr bound the addresses endpoints get.
func firstEndpointAddr(p netip.Prefix) netip.Addr { return GatewayOf(p).Next() }

func lastEndpointAddr(p netip.Prefix) netip.Addr {
	l := lastAddr(p)
	if l.Is4() {
		return l.Prev() // broadcast
	}
	return l
}

// cidrKeyName turns a CIDR into the last element of its store key: the '/' of
// the prefix length would otherwise look like a key path separator.
func cidrKeyName(p netip.Prefix) string { return strings.ReplaceAll(p.String(), "/", "_") }

func parseCIDRKeyName(s string) (netip.Prefix, error) {
	return netip.ParsePrefix(strings.ReplaceAll(s, "_", "/"))
}
