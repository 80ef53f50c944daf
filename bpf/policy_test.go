package bpf

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestCompilePolicy(t *testing.T) {
	const ifx = 7
	key := func(dir Direction, id uint32, proto uint8, port uint16) policyKey {
		return policyKey{Ifindex: ifx, Identity: id, Port: port, Proto: proto, Direction: uint8(dir)}
	}
	flags, m, err := compilePolicy(ifx, EndpointPolicy{IngressEnforced: true, Entries: []PolicyEntry{
		{Direction: Ingress, Identity: 100, Proto: ProtoTCP, PortLo: 80, PortHi: 80},
		{Direction: Ingress, Identity: 100, Proto: ProtoTCP, PortLo: 8000, PortHi: 8002},
		{Direction: Ingress, Identity: 100, Proto: ProtoTCP, PortLo: 8001, PortHi: 8001, Deny: true},
		{Direction: Ingress, Identity: 100, Proto: ProtoTCP, PortLo: 8002, PortHi: 8002}, // after the range: still allow
		{Direction: Egress, Proto: ProtoICMP, PortLo: 8},                                 // PortHi 0: a single type
		{Direction: Egress, Identity: 2},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if flags != epIngressEnforced|epIngressEntries|epEgressEntries {
		t.Errorf("flags %#b", flags)
	}
	want := map[policyKey]uint8{
		key(Ingress, 100, 6, 80): verdictAllow, key(Ingress, 100, 6, 8000): verdictAllow,
		key(Ingress, 100, 6, 8001): verdictDeny, key(Ingress, 100, 6, 8002): verdictAllow,
		key(Egress, 0, 1, 8): verdictAllow, key(Egress, 2, 0, 0): verdictAllow,
	}
	if len(m) != len(want) {
		t.Errorf("%d entries; want %d: %v", len(m), len(want), m)
	}
	for k, v := range want {
		if m[k].Verdict != v {
			t.Errorf("%+v: verdict %d; want %d", k, m[k].Verdict, v)
		}
	}

	// Entries that cannot be represented fail closed.
	for _, c := range []struct {
		name      string
		e         PolicyEntry
		msg       string
		wantFlags uint32
	}{
		{"range too wide", PolicyEntry{Direction: Ingress, Proto: ProtoTCP, PortLo: 1024, PortHi: 65535}, "1024-65535", epIngressEntries},
		{"port 0 in a range", PolicyEntry{Direction: Ingress, Proto: ProtoUDP, PortHi: 53}, "port (or ICMP type) 0", epIngressEntries},
		{"backwards", PolicyEntry{Direction: Ingress, Proto: ProtoUDP, PortLo: 53, PortHi: 50}, "ends before", epIngressEntries},
		{"ports without ports", PolicyEntry{Direction: Ingress, Proto: 47, PortLo: 1}, "protocol 47 has no ports", epIngressEntries},
		{"ICMP type", PolicyEntry{Direction: Ingress, Proto: ProtoICMP, PortLo: 250, PortHi: 300}, "types end at 255", epIngressEntries},
		{"bad deny", PolicyEntry{Direction: Egress, Proto: ProtoTCP, PortLo: 1, PortHi: 65535, Deny: true}, "1-65535", epIngressEntries | epEgressEnforced},
		{"bad direction", PolicyEntry{Direction: 7, Deny: true}, "direction 7", epIngressEnforced | epEgressEnforced},
	} {
		good := PolicyEntry{Direction: Ingress, Identity: 100, Proto: ProtoTCP, PortLo: 80}
		goodEgress := PolicyEntry{Direction: Egress, Identity: 100}
		flags, m, err := compilePolicy(ifx, EndpointPolicy{Entries: []PolicyEntry{good, goodEgress, c.e}})
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %v; want one naming %q", c.name, err, c.msg)
		}
		if c.e.Deny {
			// Deny-all in the bad entry's direction: its allows are gone.
			if c.e.Direction == Egress || c.e.Direction > Egress {
				if _, ok := m[key(Egress, 100, 0, 0)]; ok {
					t.Errorf("%s: the egress allow survived a bad deny", c.name)
				}
			}
			c.wantFlags |= flags & (epIngressEntries | epEgressEntries)
		} else {
			c.wantFlags |= epEgressEntries
			if m[key(Ingress, 100, 6, 80)].Verdict != verdictAllow {
				t.Errorf("%s: the good entry was dropped", c.name)
			}
		}
		if flags != c.wantFlags {
			t.Errorf("%s: flags %#b; want %#b", c.name, flags, c.wantFlags)
		}
	}
}

func TestCompileStatePolicy(t *testing.T) {
	mac, hmac := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	ep := Endpoint{IPs: []netip.Addr{netip.MustParseAddr("10.210.1.10")}, HostIfIndex: 5, MAC: mac, HostMAC: hmac, Identity: 1000,
		Policy: EndpointPolicy{EgressEnforced: true, Entries: []PolicyEntry{{Direction: Egress, Identity: 7}}}}
	// A second record of the same endpoint (another address) adds its
	// policy, and both addresses carry the flags of both.
	ep2 := ep
	ep2.IPs = []netip.Addr{netip.MustParseAddr("fd00:210:1::10")}
	ep2.Policy = EndpointPolicy{IngressEnforced: true}
	d, err := compile(State{Endpoints: []Endpoint{ep, ep2}}, ModeVXLAN)
	if err != nil {
		t.Fatal(err)
	}
	want := uint32(epIngressEnforced | epEgressEnforced | epEgressEntries)
	for k, v := range d.endpoints {
		if v.Flags != want {
			t.Errorf("endpoint %v flags %#b; want %#b", k.Addr, v.Flags, want)
		}
	}
	if d.devices[5].Flags != want || len(d.policy) != 1 {
		t.Errorf("device flags %#b, %d policy entries", d.devices[5].Flags, len(d.policy))
	}
	for _, c := range []struct {
		v    any
		size int
	}{{policyKey{}, 12}, {policyValue{}, 4}, {ctKey{}, 40}, {ctEntry{}, 16}, {fragKey{}, 40}, {fragPorts{}, 8}} {
		if got := binary.Size(c.v); got != c.size {
			t.Errorf("%T is %d bytes; want %d", c.v, got, c.size)
		}
	}
}
