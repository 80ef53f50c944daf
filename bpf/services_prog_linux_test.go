//go:build linux

package bpf

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"
)

// l4Packet is an Ethernet/IPv4 frame carrying a TCP SYN (proto 6) or a UDP
// datagram (17) with valid checksums; udpNoCsum leaves a UDP checksum of 0.
func l4Packet(src, dst netip.AddrPort, proto byte, udpNoCsum bool) []byte {
	var l4 []byte
	payload := []byte("fabric")
	if proto == 6 {
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint32(l4[4:], 1)
		l4[12], l4[13] = 5<<4, 0x02 // SYN
		binary.BigEndian.PutUint16(l4[14:], 65535)
	} else {
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(payload)))
	}
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	l4 = append(l4, payload...)
	if proto == 6 || !udpNoCsum {
		off := 16
		if proto == 17 {
			off = 6
		}
		binary.BigEndian.PutUint16(l4[off:], l4Checksum(src.Addr(), dst.Addr(), proto, l4))
	}
	return ipv4Packet(src.Addr(), dst.Addr(), proto, l4)
}

func l4Checksum(src, dst netip.Addr, proto byte, seg []byte) uint16 {
	sum := csum(0, src.AsSlice())
	sum = csum(sum, dst.AsSlice())
	sum += uint32(proto) + uint32(len(seg))
	return fold(csum(sum, seg))
}

// checkIPv4L4 verifies the IPv4 header checksum and the L4 checksum of an
// Ethernet/IPv4 frame and returns its addresses and ports.
func checkIPv4L4(t *testing.T, frame []byte) (src, dst netip.AddrPort) {
	t.Helper()
	ip := frame[14:34]
	if fold(csum(0, ip)) != 0 {
		t.Errorf("IPv4 header checksum does not verify: % x", ip)
	}
	total := int(binary.BigEndian.Uint16(ip[2:]))
	seg := frame[34 : 14+total]
	s, d := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	sum := csum(0, s.AsSlice())
	sum = csum(sum, d.AsSlice())
	sum += uint32(ip[9]) + uint32(len(seg))
	udpNone := ip[9] == 17 && binary.BigEndian.Uint16(seg[6:]) == 0
	if !udpNone && fold(csum(sum, seg)) != 0 {
		t.Errorf("L4 (proto %d) checksum does not verify", ip[9])
	}
	return netip.AddrPortFrom(s, binary.BigEndian.Uint16(seg[0:])), netip.AddrPortFrom(d, binary.BigEndian.Uint16(seg[2:]))
}

// geneveFrom wraps an inner frame as node 10.77.0.2 sends it to 10.77.0.1
// with the VNI (the sender's identity).
// loMAC is the loopback device's address, where BPF_PROG_TEST_RUN runs
// skb programs.
var loMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

func geneveFrom(inner []byte, vni uint32) []byte {
	ip := make([]byte, 20)
	ip[0], ip[6], ip[8], ip[9] = 0x45, 0x40, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+8+len(inner)))
	copy(ip[12:], netip.MustParseAddr("10.77.0.2").AsSlice())
	copy(ip[16:], netip.MustParseAddr("10.77.0.1").AsSlice())
	binary.BigEndian.PutUint16(ip[10:], fold(csum(0, ip)))
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], 50000)
	binary.BigEndian.PutUint16(udp[2:], 6081)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+8+len(inner)))
	gnv := []byte{0, 0, 0x65, 0x58, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	// To lo's address (all zeros): BPF_PROG_TEST_RUN runs the program as
	// if on lo, and the underlay program ignores frames for other hosts.
	b := ethHeader(loMAC, host2, 0x0800)
	b = append(append(append(append(b, ip...), udp...), gnv...), inner...)
	return b
}

func rrTable(backends, size int) []uint16 {
	t := make([]uint16, size)
	for i := range t {
		t[i] = uint16(i % backends)
	}
	return t
}

var (
	client   = netip.MustParseAddrPort("10.210.1.10:40000")
	fe       = netip.MustParseAddrPort("10.96.0.10:80")
	remoteBE = netip.MustParseAddrPort("10.210.2.10:8080")
	localBE  = netip.MustParseAddrPort("10.210.1.11:8080")
)

// TestServiceDNATRoot: a workload's packet to a frontend leaves with the
// backend as destination and valid checksums, locally and encapsulated; a
// UDP datagram without checksum keeps none.
func TestServiceDNATRoot(t *testing.T) {
	udpFE := netip.MustParseAddrPort("10.96.0.10:53")
	d := progFixtureWith(t, []Service{
		{Frontend: fe, Proto: ProtoTCP, Backends: []Backend{{remoteBE}}, Maglev: rrTable(1, 7)},
		{Frontend: udpFE, Proto: ProtoUDP, Backends: []Backend{{localBE}}, Maglev: rrTable(1, 7)},
	})

	ret, out := run(t, d.lxc.LxcIngress, l4Packet(client, fe, 6, false))
	if ret != tcActRedirect {
		t.Fatalf("TCP to frontend: verdict %d; want redirect", ret)
	}
	g, err := parseGeneve(out)
	if err != nil {
		t.Fatalf("TCP to a remote backend: %v", err)
	}
	src, dst := checkIPv4L4(t, g.inner)
	if src != client || dst != remoteBE {
		t.Errorf("TCP after DNAT: %s → %s; want %s → %s", src, dst, client, remoteBE)
	}

	for _, noCsum := range []bool{false, true} {
		ret, out = run(t, d.lxc.LxcIngress, l4Packet(client, udpFE, 17, noCsum))
		if ret != tcActRedirect {
			t.Fatalf("UDP to frontend: verdict %d; want redirect", ret)
		}
		src, dst = checkIPv4L4(t, out)
		if src != client || dst != localBE {
			t.Errorf("UDP after DNAT: %s → %s; want %s → %s", src, dst, client, localBE)
		}
		if got := binary.BigEndian.Uint16(out[34+6:]); noCsum && got != 0 {
			t.Errorf("UDP without checksum got checksum %#x", got)
		}
	}

	svcs, err := d.Services()
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 2 {
		t.Fatalf("Services() = %+v; want 2", svcs)
	}
	for _, s := range svcs {
		if len(s.Backends) != 1 || len(s.Maglev) != 7 || (s.Frontend != fe && s.Frontend != udpFE) {
			t.Errorf("Services() read back %+v", s)
		}
	}
}

// TestServiceReverseNATRoot: the remote backend's reply, arriving over
// Geneve, reaches the client from the frontend with valid checksums.
func TestServiceReverseNATRoot(t *testing.T) {
	d := progFixtureWith(t, []Service{
		{Frontend: fe, Proto: ProtoTCP, Backends: []Backend{{remoteBE}}, Maglev: rrTable(1, 7)},
	})
	if ret, _ := run(t, d.lxc.LxcIngress, l4Packet(client, fe, 6, false)); ret != tcActRedirect {
		t.Fatalf("TCP to frontend: verdict %d; want redirect", ret)
	}
	reply := l4Packet(remoteBE, client, 6, false)
	reply[14+20+13] = 0x12 // SYN-ACK
	seg := reply[34:]
	binary.BigEndian.PutUint16(seg[16:], 0)
	binary.BigEndian.PutUint16(seg[16:], l4Checksum(remoteBE.Addr(), client.Addr(), 6, seg))
	// The same frame addressed to another host's MAC (a switch flooding
	// it) is left to the stack, which drops it: not served twice.
	other := geneveFrom(reply, 2000)
	copy(other[0:6], hostMAC)
	if ret, out := run(t, d.underlay.UnderlayIngress, other); ret != 0 || !bytes.Equal(out, other) {
		t.Errorf("frame for another host: verdict %d (want 0, TC_ACT_OK) and changed: %v", ret, !bytes.Equal(out, other))
	}
	ret, out := run(t, d.underlay.UnderlayIngress, geneveFrom(reply, 2000))
	if ret != tcActRedirect {
		drops, _ := d.Drops()
		t.Fatalf("reply: verdict %d; want redirect (drops %v)", ret, drops)
	}
	src, dst := checkIPv4L4(t, out)
	if src != fe || dst != client {
		t.Errorf("reply after reverse NAT: %s → %s; want %s → %s", src, dst, fe, client)
	}
}

// TestServiceNoBackendRoot: a frontend without backends drops, counted and
// reported with its own reason.
func TestServiceNoBackendRoot(t *testing.T) {
	d := progFixtureWith(t, []Service{{Frontend: fe, Proto: ProtoTCP}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := d.Flows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ret, _ := run(t, d.lxc.LxcIngress, l4Packet(client, fe, 6, false)); ret != tcActShot {
		t.Fatalf("TCP to a frontend without backends: verdict %d; want drop", ret)
	}
	drops, err := d.Drops()
	if err != nil {
		t.Fatal(err)
	}
	if drops["no_service_backend"] != 1 {
		t.Errorf("drops %v; want no_service_backend 1", drops)
	}
	if _, ok := drops[""]; ok {
		t.Errorf("drops %v name a counter that is no drop", drops)
	}
	select {
	case f := <-ch:
		if !f.Dropped || f.Reason != "no_service_backend" || f.Dst != fe {
			t.Errorf("flow %+v; want a drop to %s with reason no_service_backend", f, fe)
		}
	case <-time.After(3 * time.Second):
		t.Error("no flow event for the drop")
	}
}
