package bpf

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestCompileServices(t *testing.T) {
	fe := netip.MustParseAddrPort("10.96.0.10:80")
	be := []Backend{{netip.MustParseAddrPort("10.1.0.1:8080")}, {netip.MustParseAddrPort("10.1.0.2:8080")}}
	good := Service{Frontend: fe, Proto: ProtoTCP, Backends: be, Maglev: []uint16{0, 1, 0, 1, 0, 1, 0},
		AffinityTimeout: 1500 * time.Millisecond, External: true}
	out, err := compileServices([]Service{good, {Frontend: fe, Proto: ProtoUDP}})
	if err != nil || len(out) != 2 {
		t.Fatalf("valid services: %v, %d compiled", err, len(out))
	}
	if out[0].svc.AffinitySec != 2 || out[0].svc.Flags != lbSvcExternal || out[0].svc.TableSize != 7 || out[0].svc.Backends != 2 {
		t.Errorf("compiled %+v", out[0].svc)
	}
	ids := map[uint32]lbBackend{1: out[0].backends[0], 2: out[0].backends[1]}
	table := make([]uint32, len(good.Maglev))
	for i, idx := range good.Maglev {
		table[i] = uint32(idx) + 1
	}
	back := serviceOf(out[0].key, out[0].svc, table, ids)
	if back.Frontend != fe || len(back.Backends) != 2 || back.Backends[1] != be[1] || back.AffinityTimeout != 2*time.Second || !back.External {
		t.Errorf("serviceOf = %+v", back)
	}

	mut := func(f func(*Service)) Service {
		s := good
		s.Backends = append([]Backend(nil), good.Backends...)
		s.Maglev = append([]uint16(nil), good.Maglev...)
		f(&s)
		return s
	}
	cases := map[string]struct {
		svcs []Service
		want string
	}{
		"bad proto":      {[]Service{mut(func(s *Service) { s.Proto = ProtoICMP })}, "protocol 1"},
		"no port":        {[]Service{mut(func(s *Service) { s.Frontend = netip.AddrPortFrom(fe.Addr(), 0) })}, "port is 0"},
		"family":         {[]Service{mut(func(s *Service) { s.Backends[1].Addr = netip.MustParseAddrPort("[fd00::1]:80") })}, "family"},
		"index":          {[]Service{mut(func(s *Service) { s.Maglev[3] = 2 })}, "backend index 2"},
		"short table":    {[]Service{mut(func(s *Service) { s.Maglev = s.Maglev[:1] })}, "1 slots for 2 backends"},
		"table, no be":   {[]Service{mut(func(s *Service) { s.Backends = nil })}, "no backends"},
		"duplicate":      {[]Service{good, good}, "listed twice"},
		"backend port 0": {[]Service{mut(func(s *Service) { s.Backends[0].Addr = netip.AddrPortFrom(s.Backends[0].Addr.Addr(), 0) })}, "port 0"},
		"affinity":       {[]Service{mut(func(s *Service) { s.AffinityTimeout = -time.Second })}, "affinity"},
	}
	for name, c := range cases {
		out, err := compileServices(c.svcs)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v; want one mentioning %q", name, err, c.want)
		}
		if name == "duplicate" && len(out) != 1 {
			t.Errorf("duplicate: %d compiled; want the first kept", len(out))
		}
	}
}
