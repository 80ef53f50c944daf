package bpf

import (
	"errors"
	"fmt"
	"net/netip"
)

// The map keys and values below mirror the structs of include/common.h
// byte for byte (TestKeyLayoutMatchesBTF checks them against the compiled
// objects). Integers are in host byte order, addresses in network order.

const (
	familyV4 = 4
	familyV6 = 6
)

// vniBits is what the overlays carry of an identity (the 24-bit VNI).
const vniBits = 24

type endpointKey struct {
	Addr   [16]byte
	Family uint8
	Pad    [3]uint8
}

type endpointInfo struct {
	Ifindex  uint32
	Identity uint32
	MAC      [6]byte
	HostMAC  [6]byte
	Flags    uint32
}

type ipcacheKey struct {
	Prefixlen uint32 // 32 (the family word) + the prefix's bits
	Family    uint8
	Pad       [3]uint8
	Addr      [16]byte
}

type remoteInfo struct {
	Identity   uint32
	Flags      uint16
	NodeFamily uint8
	Pad        uint8
	Node       [16]byte
}

type seenKey struct {
	Src, Dst uint32
}

// addrBytes returns a's family and its bytes as the C side stores them:
// IPv4 in the first four bytes.
func addrBytes(a netip.Addr) (family uint8, b [16]byte) {
	a = a.Unmap()
	if a.Is4() {
		v4 := a.As4()
		copy(b[:], v4[:])
		return familyV4, b
	}
	return familyV6, a.As16()
}

func endpointKeyOf(a netip.Addr) endpointKey {
	f, b := addrBytes(a)
	return endpointKey{Addr: b, Family: f}
}

// ipcacheKeyOf returns the LPM key of p, masked, with IPv4-mapped prefixes
// stored as IPv4 so that they match IPv4 packets.
func ipcacheKeyOf(p netip.Prefix) ipcacheKey {
	addr, bits := p.Addr(), p.Bits()
	if addr.Is4In6() {
		addr, bits = addr.Unmap(), max(bits-96, 0)
	}
	p = netip.PrefixFrom(addr, bits).Masked()
	f, b := addrBytes(p.Addr())
	return ipcacheKey{Prefixlen: uint32(32 + p.Bits()), Family: f, Addr: b}
}

func remoteInfoOf(e IPCacheEntry) remoteInfo {
	r := remoteInfo{Identity: e.Identity}
	if e.Node.IsValid() {
		r.NodeFamily, r.Node = addrBytes(e.Node)
	}
	return r
}

// addrOf is the inverse of addrBytes.
func addrOf(family uint8, b [16]byte) netip.Addr {
	if family == familyV4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

// entryOf is the inverse of ipcacheKeyOf and remoteInfoOf.
func entryOf(k ipcacheKey, v remoteInfo) IPCacheEntry {
	e := IPCacheEntry{
		Prefix:   netip.PrefixFrom(addrOf(k.Family, k.Addr), int(k.Prefixlen)-32),
		Identity: v.Identity,
	}
	if v.NodeFamily != 0 {
		e.Node = addrOf(v.NodeFamily, v.Node)
	}
	return e
}

// desired is the content of every map for one State.
type desired struct {
	endpoints map[endpointKey]endpointInfo
	devices   map[uint32]endpointInfo
	ipcache   map[ipcacheKey]remoteInfo
}

// compile checks st and turns it into map contents for mode. Entries it
// rejects are left out and reported in the error; the rest is always
// returned, so that one bad record in the store does not freeze the
// datapath.
func compile(st State, mode Mode) (desired, error) {
	d := desired{
		endpoints: make(map[endpointKey]endpointInfo),
		devices:   make(map[uint32]endpointInfo),
		ipcache:   make(map[ipcacheKey]remoteInfo),
	}
	var errs []error
	for i, ep := range st.Endpoints {
		name := fmt.Sprintf("endpoint %d (ifindex %d)", i, ep.HostIfIndex)
		if len(ep.IPs) > 0 {
			name = fmt.Sprintf("endpoint %s (ifindex %d)", ep.IPs[0], ep.HostIfIndex)
		}
		switch {
		case ep.HostIfIndex <= 0:
			errs = append(errs, fmt.Errorf("%s: no host ifindex", name))
			continue
		case len(ep.MAC) != 6 || len(ep.HostMAC) != 6:
			errs = append(errs, fmt.Errorf("%s: MACs %q and %q must be 6-byte Ethernet addresses", name, ep.MAC, ep.HostMAC))
			continue
		case mode != ModeNative && ep.Identity >= 1<<vniBits:
			errs = append(errs, fmt.Errorf("%s: identity %d needs more than the %d-bit VNI of the %s overlay (the Geneve identity option is not implemented): %w",
				name, ep.Identity, vniBits, mode, ErrNotSupported))
			continue
		}
		info := endpointInfo{Ifindex: uint32(ep.HostIfIndex), Identity: ep.Identity}
		copy(info.MAC[:], ep.MAC)
		copy(info.HostMAC[:], ep.HostMAC)
		if old, dup := d.devices[info.Ifindex]; dup && old != info {
			errs = append(errs, fmt.Errorf("%s: another endpoint uses the same host interface", name))
			continue
		}
		d.devices[info.Ifindex] = info
		for _, ip := range ep.IPs {
			if !ip.IsValid() {
				errs = append(errs, fmt.Errorf("%s: invalid IP", name))
				continue
			}
			k := endpointKeyOf(ip)
			if _, dup := d.endpoints[k]; dup {
				errs = append(errs, fmt.Errorf("%s: IP %s belongs to two endpoints", name, ip))
				continue
			}
			d.endpoints[k] = info
		}
	}
	for _, e := range st.IPCache {
		if !e.Prefix.IsValid() {
			errs = append(errs, fmt.Errorf("ipcache: invalid prefix %v", e.Prefix))
			continue
		}
		if mode != ModeNative && e.Node.IsValid() && !e.Node.Unmap().Is4() {
			errs = append(errs, fmt.Errorf("ipcache %s: tunnel endpoint %s must be IPv4 in %s mode (the overlay runs over the IPv4 underlay)", e.Prefix, e.Node, mode))
			continue
		}
		k := ipcacheKeyOf(e.Prefix)
		if _, dup := d.ipcache[k]; dup {
			errs = append(errs, fmt.Errorf("ipcache: prefix %s listed twice", e.Prefix))
			continue
		}
		d.ipcache[k] = remoteInfoOf(e)
	}
	if err := errors.Join(errs...); err != nil {
		return d, fmt.Errorf("datapath state: %w", err)
	}
	return d, nil
}
