//go:build linux

package bpf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

const (
	tcActOK       = 0
	tcActShot     = 2
	tcActRedirect = 7
)

var (
	wlMAC   = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 0x01}
	hostMAC = net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 0x01}
	wl2MAC  = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 0x02}
	host2   = net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 0x02}
)

// progFixture opens a Geneve-mode datapath in its own namespace with the
// loopback as underlay: BPF_PROG_TEST_RUN runs skb programs as if they came
// in on lo (ifindex 1), so the sending endpoint's host side is lo.
func progFixture(t *testing.T) *Datapath {
	t.Helper()
	return progFixtureWith(t, nil)
}

// progFixtureWith is progFixture with services in the state.
func progFixtureWith(t *testing.T, svcs []Service) *Datapath {
	t.Helper()
	pin := newPinDir(t)
	ns := newNetNS(t, "prog")
	ipn(t, ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	out := ipn(t, ns, "-o", "link", "show", "v0")
	v0, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(out, ":", 2)[0]))
	if err != nil {
		t.Fatalf("ifindex of v0 from %q: %v", out, err)
	}
	var d *Datapath
	err = inNS(ns, func() error {
		var err error
		d, err = Open(Config{PinDir: pin, Mode: ModeGeneve, UnderlayIfName: "lo",
			UnderlayIPv4: netip.MustParseAddr("10.77.0.1"), GenevePort: 6081})
		if err != nil {
			return err
		}
		return d.Apply(State{
			Endpoints: []Endpoint{
				{IPs: []netip.Addr{netip.MustParseAddr("10.210.1.10"), netip.MustParseAddr("fd00:210:1::10")},
					HostIfIndex: 1, MAC: wlMAC, HostMAC: hostMAC, Identity: 1000},
				{IPs: []netip.Addr{netip.MustParseAddr("10.210.1.11")}, HostIfIndex: v0, MAC: wl2MAC, HostMAC: host2, Identity: 1001},
			},
			IPCache: []IPCacheEntry{
				{Prefix: netip.MustParsePrefix("10.210.2.0/24"), Node: netip.MustParseAddr("10.77.0.2")},
				{Prefix: netip.MustParsePrefix("10.210.2.10/32"), Identity: 2000, Node: netip.MustParseAddr("10.77.0.2")},
			},
			Services: svcs,
		})
	})
	if err != nil {
		t.Fatalf("open datapath: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Destroy(); err != nil {
			t.Errorf("destroy: %v", err)
		}
	})
	return d
}

func run(t *testing.T, p *ebpf.Program, in []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(in)+512)
	opts := ebpf.RunOptions{Data: in, DataOut: out}
	ret, err := p.Run(&opts)
	if err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret, opts.DataOut
}

func ethHeader(dst, src net.HardwareAddr, proto uint16) []byte {
	b := append(append([]byte{}, dst...), src...)
	return binary.BigEndian.AppendUint16(b, proto)
}

func arpRequest(sha net.HardwareAddr, spa, tpa netip.Addr) []byte {
	b := ethHeader(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, sha, 0x0806)
	b = append(b, 0, 1, 0x08, 0, 6, 4, 0, 1)
	b = append(b, sha...)
	b = append(b, spa.AsSlice()...)
	b = append(b, make([]byte, 6)...)
	return append(b, tpa.AsSlice()...)
}

// ipv4Packet is an Ethernet frame with an IPv4 header (valid checksum) and
// payload.
func ipv4Packet(src, dst netip.Addr, proto byte, payload []byte) []byte {
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(payload)))
	copy(ip[12:], src.AsSlice())
	copy(ip[16:], dst.AsSlice())
	binary.BigEndian.PutUint16(ip[10:], fold(csum(0, ip)))
	return append(append(ethHeader(hostMAC, wlMAC, 0x0800), ip...), payload...)
}

func icmpEcho() []byte {
	return []byte{8, 0, 0xf7, 0xff, 0, 0, 0, 0, 'f', 'a', 'b', 'r', 'i', 'c', 0, 0}
}

func TestLXCAnswersARPRoot(t *testing.T) {
	d := progFixture(t)
	wl, gw := netip.MustParseAddr("10.210.1.10"), netip.MustParseAddr("10.210.1.1")
	ret, out := run(t, d.lxc.LxcIngress, arpRequest(wlMAC, wl, gw))
	if ret != tcActRedirect {
		t.Fatalf("ARP request: verdict %d; want redirect (%d)", ret, tcActRedirect)
	}
	want := ethHeader(wlMAC, hostMAC, 0x0806)
	want = append(want, 0, 1, 0x08, 0, 6, 4, 0, 2)
	want = append(want, hostMAC...)
	want = append(want, gw.AsSlice()...)
	want = append(want, wlMAC...)
	want = append(want, wl.AsSlice()...)
	if !bytes.Equal(out[:len(want)], want) {
		t.Errorf("ARP reply\n got % x\nwant % x", out[:len(want)], want)
	}
	// Duplicate address detection for its own address is not answered.
	if ret, _ := run(t, d.lxc.LxcIngress, arpRequest(wlMAC, wl, wl)); ret != tcActOK {
		t.Errorf("ARP for the sender's own address: verdict %d; want pass (%d)", ret, tcActOK)
	}
}

func TestLXCAnswersNeighbourSolicitationRoot(t *testing.T) {
	d := progFixture(t)
	src, target := netip.MustParseAddr("fd00:210:1::10"), netip.MustParseAddr("fd00:210:1::1")
	// NS to the solicited-node address of the target, with a source
	// link-layer address option.
	dst := netip.MustParseAddr("ff02::1:ff00:1")
	icmp := []byte{135, 0, 0, 0, 0, 0, 0, 0}
	icmp = append(icmp, target.AsSlice()...)
	icmp = append(icmp, 1, 1)
	icmp = append(icmp, wlMAC...)
	pkt := ethHeader(net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 1}, wlMAC, 0x86dd)
	pkt = append(pkt, 0x60, 0, 0, 0, 0, byte(len(icmp)), 58, 255)
	pkt = append(pkt, src.AsSlice()...)
	pkt = append(pkt, dst.AsSlice()...)
	pkt = append(pkt, icmp...)

	ret, out := run(t, d.lxc.LxcIngress, pkt)
	if ret != tcActRedirect {
		t.Fatalf("NS: verdict %d; want redirect", ret)
	}
	if len(out) != 14+40+32 {
		t.Fatalf("NA is %d bytes; want %d", len(out), 14+40+32)
	}
	if !bytes.Equal(out[0:6], wlMAC) || !bytes.Equal(out[6:12], hostMAC) {
		t.Errorf("NA MACs: dst %x src %x", out[0:6], out[6:12])
	}
	ip := out[14:54]
	if got := netip.AddrFrom16([16]byte(ip[8:24])); got != target {
		t.Errorf("NA source %s; want %s", got, target)
	}
	if got := netip.AddrFrom16([16]byte(ip[24:40])); got != src {
		t.Errorf("NA destination %s; want %s", got, src)
	}
	na := out[54:]
	if na[0] != 136 || na[4] != 0xe0 || !bytes.Equal(na[8:24], target.AsSlice()) || na[24] != 2 || !bytes.Equal(na[26:32], hostMAC) {
		t.Errorf("NA body % x", na)
	}
	// The checksum over the pseudo-header and the message must verify.
	sum := csum(0, ip[8:40])
	sum += uint32(len(na)) + 58
	if got := fold(csum(sum, na)); got != 0 {
		t.Errorf("NA checksum does not verify (residue %#x)", got)
	}
}

func TestLXCRoutingDecisionRoot(t *testing.T) {
	d := progFixture(t)
	wl := netip.MustParseAddr("10.210.1.10")

	// Same node: MACs of the destination endpoint, redirected.
	ret, out := run(t, d.lxc.LxcIngress, ipv4Packet(wl, netip.MustParseAddr("10.210.1.11"), 1, icmpEcho()))
	if ret != tcActRedirect || !bytes.Equal(out[0:6], wl2MAC) || !bytes.Equal(out[6:12], host2) {
		t.Errorf("local: verdict %d, MACs %x→%x; want redirect to %s from %s", ret, out[6:12], out[0:6], wl2MAC, host2)
	}

	// Outside the cluster: the node's stack.
	if ret, _ := run(t, d.lxc.LxcIngress, ipv4Packet(wl, netip.MustParseAddr("192.0.2.1"), 1, icmpEcho())); ret != tcActOK {
		t.Errorf("outside the cluster: verdict %d; want pass", ret)
	}
	// A source that is not the endpoint's: dropped.
	if ret, _ := run(t, d.lxc.LxcIngress, ipv4Packet(netip.MustParseAddr("10.210.1.99"), netip.MustParseAddr("10.210.2.10"), 1, icmpEcho())); ret != tcActShot {
		t.Errorf("spoofed source: verdict %d; want drop", ret)
	}

	// Remote (pod CIDR of node 10.77.0.2): Geneve encapsulation.
	in := ipv4Packet(wl, netip.MustParseAddr("10.210.2.33"), 1, icmpEcho())
	ret, out = run(t, d.lxc.LxcIngress, in)
	if ret != tcActRedirect {
		t.Fatalf("remote: verdict %d; want redirect", ret)
	}
	g, err := parseGeneve(out)
	if err != nil {
		t.Fatalf("remote: %v\n% x", err, out)
	}
	if g.outerDst != netip.MustParseAddr("10.77.0.2") || g.outerSrc != netip.MustParseAddr("10.77.0.1") || g.vni != 1000 {
		t.Errorf("remote: outer %s→%s vni %d; want 10.77.0.1→10.77.0.2 vni 1000", g.outerSrc, g.outerDst, g.vni)
	}
	if !bytes.Equal(g.inner, in) {
		t.Errorf("inner frame\n got % x\nwant % x", g.inner, in)
	}

	// The receiving side: feed a Geneve packet for this node into the
	// underlay program; it must come out decapsulated for the endpoint.
	enc := append([]byte{}, out...)
	copy(enc[0:6], loMAC)                                         // to lo, where BPF_PROG_TEST_RUN puts the program; not to another host
	copy(enc[14+12:], netip.MustParseAddr("10.77.0.2").AsSlice()) // from the other node
	copy(enc[14+16:], netip.MustParseAddr("10.77.0.1").AsSlice()) // to us
	binary.BigEndian.PutUint16(enc[14+10:], 0)
	binary.BigEndian.PutUint16(enc[14+10:], fold(csum(0, enc[14:34])))
	copy(enc[14+50+16:], netip.MustParseAddr("10.210.1.11").AsSlice()) // inner destination
	ret, dec := run(t, d.underlay.UnderlayIngress, enc)
	if ret != tcActRedirect {
		drops, _ := d.Drops()
		t.Fatalf("decap: verdict %d; want redirect (drops %v)", ret, drops)
	}
	if len(dec) != len(in) || !bytes.Equal(dec[0:6], wl2MAC) || binary.BigEndian.Uint16(dec[12:]) != 0x0800 {
		t.Errorf("decapsulated frame % x", dec)
	}
	seen, err := d.IngressSeen()
	if err != nil {
		t.Fatal(err)
	}
	if seen[[2]uint32{1000, 1001}] == 0 {
		t.Errorf("ingress_seen %v lacks {1000 1001}", seen)
	}
}

type geneve struct {
	outerSrc, outerDst netip.Addr
	srcPort, dstPort   uint16
	vni                uint32
	inner              []byte // the inner Ethernet frame
}

// parseGeneve decodes an Ethernet/IPv4/UDP/Geneve frame and checks what the
// datapath promises about it: valid IPv4 checksum, DF, TTL 64, no Geneve
// options, Transparent Ethernet Bridging.
func parseGeneve(b []byte) (geneve, error) {
	var g geneve
	if len(b) < 14+20+8+8+14 || binary.BigEndian.Uint16(b[12:]) != 0x0800 {
		return g, fmt.Errorf("not an IPv4 frame")
	}
	ip := b[14:34]
	if ip[0] != 0x45 || ip[9] != 17 {
		return g, fmt.Errorf("outer IP: version/ihl %#x proto %d", ip[0], ip[9])
	}
	if fold(csum(0, ip)) != 0 {
		return g, fmt.Errorf("outer IPv4 checksum does not verify")
	}
	if ip[6]&0x40 == 0 || ip[8] != 64 {
		return g, fmt.Errorf("outer IP: flags %#x ttl %d; want DF, 64", ip[6], ip[8])
	}
	g.outerSrc, g.outerDst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	udp := b[34:42]
	g.srcPort, g.dstPort = binary.BigEndian.Uint16(udp[0:]), binary.BigEndian.Uint16(udp[2:])
	if g.dstPort != 6081 {
		return g, fmt.Errorf("UDP destination port %d; want 6081", g.dstPort)
	}
	gnv := b[42:50]
	if gnv[0] != 0 || binary.BigEndian.Uint16(gnv[2:]) != 0x6558 {
		return g, fmt.Errorf("geneve header % x: want version 0, no options, protocol 0x6558", gnv)
	}
	g.vni = uint32(gnv[4])<<16 | uint32(gnv[5])<<8 | uint32(gnv[6])
	g.inner = b[50:]
	return g, nil
}
