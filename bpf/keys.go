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

// ipcacheHostKey keys ipcache_host, the hash of full-length entries (/32,
// /128); shorter prefixes stay in the ipcache trie (include/common.h).
type ipcacheHostKey struct {
	Family uint8
	Pad    [3]uint8
	Addr   [16]byte
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

// endpointInfo.Flags (EP_F_*).
const (
	epIngressEnforced = 1 << 0
	epEgressEnforced  = 1 << 1
	epIngressEntries  = 1 << 2
	epEgressEntries   = 1 << 3
)

type policyKey struct {
	Ifindex   uint32
	Identity  uint32 // 0: any peer
	Port      uint16 // 0: any port; the ICMP type for ICMP
	Proto     uint8  // 0: any protocol
	Direction uint8
}

const (
	verdictAllow = 1
	verdictDeny  = 2
)

type policyValue struct {
	Verdict uint8
	Pad     [3]uint8
}

// ctKey and ctEntry mirror the connection-tracking map; the Go side only
// reads them (tests, inspection).
type ctKey struct {
	Saddr, Daddr [16]byte
	Sport, Dport uint16
	Proto        uint8
	Family       uint8
	Direction    uint8
	Pad          uint8
}

type ctEntry struct {
	LastSeen uint64
	Flags    uint32
	Pad      uint32
}

type fragKey struct {
	Saddr, Daddr [16]byte
	ID           uint32
	Proto        uint8
	Family       uint8
	Pad          [2]uint8
}

type fragPorts struct {
	Sport, Dport, Port, Pad uint16
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

// fullLength reports whether k is a host entry: a /32 IPv4 or /128 IPv6
// address, which goes to ipcache_host rather than the trie.
func (k ipcacheKey) fullLength() bool {
	return k.Family == familyV4 && k.Prefixlen == 32+32 || k.Family == familyV6 && k.Prefixlen == 32+128
}

// hostKey is the ipcache_host key of a full-length trie key.
func (k ipcacheKey) hostKey() ipcacheHostKey {
	return ipcacheHostKey{Family: k.Family, Addr: k.Addr}
}

// trieKey is the inverse of ipcacheKey.hostKey.
func (h ipcacheHostKey) trieKey() ipcacheKey {
	bits := uint32(128)
	if h.Family == familyV4 {
		bits = 32
	}
	return ipcacheKey{Prefixlen: 32 + bits, Family: h.Family, Addr: h.Addr}
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
	ipcache   map[ipcacheKey]remoteInfo     // the trie: shorter prefixes only
	hosts     map[ipcacheHostKey]remoteInfo // ipcache_host: /32 and /128
	policy    map[policyKey]policyValue
	services  []compiledService
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
		hosts:     make(map[ipcacheHostKey]remoteInfo),
		policy:    make(map[policyKey]policyValue),
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
		flags, entries, err := compilePolicy(info.Ifindex, ep.Policy)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: policy: %w", name, err))
		}
		if old, dup := d.devices[info.Ifindex]; dup {
			// Records of one endpoint (the same veth, identity and MACs)
			// add up; their policies too.
			flags |= old.Flags
			old.Flags = 0
			if old != info {
				errs = append(errs, fmt.Errorf("%s: another endpoint uses the same host interface", name))
				continue
			}
		}
		info.Flags = flags
		for k, v := range entries {
			if old, ok := d.policy[k]; !ok || old.Verdict != verdictDeny {
				d.policy[k] = v
			}
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
	// The policy flags of an endpoint listed in several records are
	// those of all of them, whichever record an address came from.
	for k, v := range d.endpoints {
		v.Flags = d.devices[v.Ifindex].Flags
		d.endpoints[k] = v
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
		_, dup := d.ipcache[k]
		if k.fullLength() {
			_, dup = d.hosts[k.hostKey()]
		}
		if dup {
			errs = append(errs, fmt.Errorf("ipcache: prefix %s listed twice", e.Prefix))
			continue
		}
		if k.fullLength() {
			d.hosts[k.hostKey()] = remoteInfoOf(e)
		} else {
			d.ipcache[k] = remoteInfoOf(e)
		}
	}
	var err error
	d.services, err = compileServices(st.Services)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return d, fmt.Errorf("datapath state: %w", err)
	}
	return d, nil
}

// compilePolicy turns the policy of the endpoint behind ifindex into its
// flags and policy map entries. Entries it cannot represent are reported in
// the error and fail closed: a bad Allow is left out (what it would have
// allowed stays denied where the direction is enforced), a bad Deny turns
// its direction into deny-all (enforced, no Allow entries), since leaving
// it out could let through what it was written to stop.
func compilePolicy(ifindex uint32, p EndpointPolicy) (uint32, map[policyKey]policyValue, error) {
	var (
		flags     uint32
		errs      []error
		denyAll   [2]bool // by direction
		expanded  = make([][]policyKey, len(p.Entries))
		dirFlags  = [2][2]uint32{{epIngressEnforced, epIngressEntries}, {epEgressEnforced, epEgressEntries}}
		enforcing = [2]bool{p.IngressEnforced, p.EgressEnforced}
	)
	for i, e := range p.Entries {
		keys, err := expandEntry(ifindex, e)
		if err != nil {
			errs = append(errs, fmt.Errorf("entry %d (%s): %w", i, e, err))
			if e.Deny {
				if e.Direction <= Egress {
					denyAll[e.Direction] = true
				} else {
					denyAll = [2]bool{true, true}
				}
			}
			continue
		}
		expanded[i] = keys
	}
	out := make(map[policyKey]policyValue)
	for i, e := range p.Entries {
		if expanded[i] == nil || (!e.Deny && denyAll[e.Direction]) {
			continue
		}
		v := policyValue{Verdict: verdictAllow}
		if e.Deny {
			v.Verdict = verdictDeny
		}
		for _, k := range expanded[i] {
			if old, ok := out[k]; !ok || old.Verdict != verdictDeny {
				out[k] = v // a Deny wins over an Allow for the same key
			}
		}
		flags |= dirFlags[e.Direction][1]
	}
	for dir := range 2 {
		if enforcing[dir] || denyAll[dir] {
			flags |= dirFlags[dir][0]
		}
	}
	return flags, out, errors.Join(errs...)
}

// expandEntry returns the policy map keys of one entry: one per port of its
// range.
func expandEntry(ifindex uint32, e PolicyEntry) ([]policyKey, error) {
	if e.Direction > Egress {
		return nil, fmt.Errorf("direction %d is neither ingress (0) nor egress (1)", e.Direction)
	}
	lo, hi := e.PortLo, e.PortHi
	if hi == 0 {
		hi = lo // a single port
	}
	icmp := e.Proto == ProtoICMP || e.Proto == ProtoICMPv6
	switch {
	case lo == 0 && hi != 0:
		return nil, fmt.Errorf("range %d-%d: port (or ICMP type) 0 cannot be matched on its own; start at 1, or give 0-0 for any", lo, hi)
	case hi < lo:
		return nil, fmt.Errorf("range %d-%d ends before it starts", lo, hi)
	case int(hi)-int(lo)+1 > MaxPortRange:
		return nil, fmt.Errorf("range %d-%d spans %d ports; at most %d are supported (each is one map entry)", lo, hi, int(hi)-int(lo)+1, MaxPortRange)
	case lo != 0 && icmp && hi > 255:
		return nil, fmt.Errorf("ICMP types %d-%d: types end at 255", lo, hi)
	case lo != 0 && !icmp && e.Proto != 0 && e.Proto != ProtoTCP && e.Proto != ProtoUDP && e.Proto != ProtoSCTP:
		return nil, fmt.Errorf("protocol %d has no ports; give 0-0", e.Proto)
	}
	k := policyKey{Ifindex: ifindex, Identity: e.Identity, Proto: e.Proto, Direction: uint8(e.Direction)}
	keys := make([]policyKey, 0, int(hi)-int(lo)+1)
	for p := int(lo); p <= int(hi); p++ {
		k.Port = uint16(p)
		keys = append(keys, k)
	}
	return keys, nil
}

func (e PolicyEntry) String() string {
	verdict := "allow"
	if e.Deny {
		verdict = "deny"
	}
	peer := "any peer"
	if e.Identity != 0 {
		peer = fmt.Sprintf("identity %d", e.Identity)
	}
	return fmt.Sprintf("%s %s %s proto %d ports %d-%d", verdict, e.Direction, peer, e.Proto, e.PortLo, e.PortHi)
}
