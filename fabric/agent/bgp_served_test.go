package agent

import (
	"net/netip"
	"testing"

	"github.com/fabric-net/fabric/bpf"
)

// TestServedFrontends checks what BGP may announce: external frontends
// the datapath installed with a backend, by address, whatever the port.
func TestServedFrontends(t *testing.T) {
	be := []bpf.Backend{{Addr: netip.MustParseAddrPort("10.201.1.2:80")}}
	st := bpf.State{Services: []bpf.Service{
		{Frontend: netip.MustParseAddrPort("10.97.0.1:80"), External: true, Backends: be},
		{Frontend: netip.MustParseAddrPort("10.97.0.1:443"), External: true}, // no backend, same address
		{Frontend: netip.MustParseAddrPort("10.97.0.2:80"), External: true},  // no backend at all
		{Frontend: netip.MustParseAddrPort("10.96.0.10:80"), Backends: be},   // a cluster IP
		{Frontend: netip.MustParseAddrPort("[fd97::1]:80"), External: true, Backends: be},
	}}
	got := servedFrontends(st)
	want := map[netip.Addr]bool{netip.MustParseAddr("10.97.0.1"): true, netip.MustParseAddr("fd97::1"): true}
	if len(got) != len(want) {
		t.Fatalf("servedFrontends = %v, want %v", got, want)
	}
	for ip := range want {
		if !got[ip] {
			t.Errorf("servedFrontends = %v, want %v", got, want)
		}
	}
	if n := len(servedFrontends(bpf.State{})); n != 0 {
		t.Errorf("nothing applied yet, but %d frontends served", n)
	}
}
