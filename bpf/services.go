package bpf

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"
)

// MaxMaglevTableSize is the longest Maglev table a Service may have.
const MaxMaglevTableSize = 1 << 20

// The service maps' keys and values mirror include/lb.h.
type lbSvcKey struct {
	Addr   [16]byte
	Port   uint16
	Proto  uint8
	Family uint8
}

type lbSvc struct {
	ID          uint32
	Backends    uint32
	TableSize   uint32
	AffinitySec uint32
	Flags       uint32
	Pad         uint32
}

const lbSvcExternal = 1 << 0

type lbBackend struct {
	Addr   [16]byte
	Port   uint16
	Family uint8
	Pad    uint8
}

type lbCTEntry struct {
	LastSeen  uint64
	BackendID uint32
	NATPort   uint16
	Pad       uint16
}

// lbNAT is an external connection's translation to a backend on another
// node (lb_nat), keyed by its replies' ctKey.
type lbNAT struct {
	Frontend, Client         [16]byte
	FrontendPort, ClientPort uint16
	Pad                      uint32
	LastSeen                 uint64
}

type lbRevnat struct {
	Addr, Client [16]byte
	Port         uint16
	Flags        uint8
	Pad          uint8
}

type lbAffinityKey struct {
	SvcID  uint32
	Family uint8
	Pad    [3]uint8
	Addr   [16]byte
}

type lbAffinity struct {
	LastSeen  uint64
	BackendID uint32
	Pad       uint32
}

// compiledService is a valid Service in map form, before ids are given:
// svc lacks its ID, and table holds indexes into backends.
type compiledService struct {
	key      lbSvcKey
	svc      lbSvc
	backends []lbBackend
	table    []uint16
}

func lbBackendOf(a netip.AddrPort) lbBackend {
	f, b := addrBytes(a.Addr())
	return lbBackend{Addr: b, Port: a.Port(), Family: f}
}

// compileServices checks svcs and returns the valid ones in map form; the
// invalid ones are left out and reported, so that one bad service does not
// keep the others from the datapath.
func compileServices(svcs []Service) ([]compiledService, error) {
	var (
		out  []compiledService
		errs []error
		seen = make(map[lbSvcKey]bool)
	)
	for i, s := range svcs {
		cs, err := compileService(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %d (%s/%d): %w", i, s.Frontend, s.Proto, err))
			continue
		}
		if seen[cs.key] {
			errs = append(errs, fmt.Errorf("service %d (%s/%d): frontend listed twice; merge the backends into one Service", i, s.Frontend, s.Proto))
			continue
		}
		seen[cs.key] = true
		out = append(out, cs)
	}
	return out, errors.Join(errs...)
}

func compileService(s Service) (compiledService, error) {
	var cs compiledService
	fe := s.Frontend.Addr().Unmap()
	switch {
	case !fe.IsValid():
		return cs, errors.New("frontend address is invalid")
	case s.Frontend.Port() == 0:
		return cs, errors.New("frontend port is 0; give the service's port")
	case s.Proto != ProtoTCP && s.Proto != ProtoUDP:
		return cs, fmt.Errorf("protocol %d is not load-balanced; use TCP (%d) or UDP (%d)", s.Proto, ProtoTCP, ProtoUDP)
	case s.AffinityTimeout < 0 || s.AffinityTimeout > math.MaxUint32*time.Second:
		return cs, fmt.Errorf("affinity timeout %v is out of range 0..%v", s.AffinityTimeout, math.MaxUint32*time.Second)
	case len(s.Backends) == 0 && len(s.Maglev) != 0:
		return cs, fmt.Errorf("maglev table has %d slots but there are no backends; leave it empty", len(s.Maglev))
	case len(s.Backends) > 0 && len(s.Maglev) < len(s.Backends):
		return cs, fmt.Errorf("maglev table has %d slots for %d backends; it needs at least one slot per backend (a prime well above the backend count)",
			len(s.Maglev), len(s.Backends))
	case len(s.Maglev) > MaxMaglevTableSize:
		return cs, fmt.Errorf("maglev table has %d slots; at most %d are supported", len(s.Maglev), MaxMaglevTableSize)
	}
	f, b := addrBytes(fe)
	cs.key = lbSvcKey{Addr: b, Port: s.Frontend.Port(), Proto: s.Proto, Family: f}
	for j, be := range s.Backends {
		a := be.Addr.Addr().Unmap()
		switch {
		case !a.IsValid():
			return cs, fmt.Errorf("backend %d: invalid address", j)
		case be.Addr.Port() == 0:
			return cs, fmt.Errorf("backend %s: port 0", be.Addr)
		case a.Is4() != fe.Is4():
			return cs, fmt.Errorf("backend %s is not of the frontend's address family", be.Addr)
		}
		cs.backends = append(cs.backends, lbBackendOf(netip.AddrPortFrom(a, be.Addr.Port())))
	}
	for slot, idx := range s.Maglev {
		if int(idx) >= len(s.Backends) {
			return cs, fmt.Errorf("maglev slot %d holds backend index %d; there are %d backends", slot, idx, len(s.Backends))
		}
	}
	cs.table = s.Maglev
	cs.svc = lbSvc{Backends: uint32(len(s.Backends)), TableSize: uint32(len(s.Maglev)),
		AffinitySec: uint32((s.AffinityTimeout + time.Second - 1) / time.Second)}
	if s.External {
		cs.svc.Flags |= lbSvcExternal
	}
	return cs, nil
}

// serviceOf is the inverse of compileService: the backends come in the
// order of their first slot in the table.
func serviceOf(k lbSvcKey, v lbSvc, table []uint32, backends map[uint32]lbBackend) Service {
	s := Service{
		Frontend:        netip.AddrPortFrom(addrOf(k.Family, k.Addr), k.Port),
		Proto:           k.Proto,
		AffinityTimeout: time.Duration(v.AffinitySec) * time.Second,
		External:        v.Flags&lbSvcExternal != 0,
	}
	index := make(map[uint32]uint16)
	for _, id := range table {
		i, ok := index[id]
		if !ok {
			i = uint16(len(s.Backends))
			index[id] = i
			be := backends[id]
			s.Backends = append(s.Backends, Backend{Addr: netip.AddrPortFrom(addrOf(be.Family, be.Addr), be.Port)})
		}
		s.Maglev = append(s.Maglev, i)
	}
	return s
}
