package agent_test

// Datapath lab tests: workloads attached by the real CNI plugin, traffic
// through the real eBPF datapath, in each mode. They need root.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fabric-net/fabric/fabric/lab"
	"github.com/fabric-net/fabric/fabric/lab/labtest"
)

func TestLabDatapathModes(t *testing.T) {
	labtest.SkipUnlessAvailable(t)
	labtest.SkipUnlessCNI(t, labtest.Binary(t))
	for _, mode := range []string{"vxlan", "geneve", "native"} {
		t.Run(mode, func(t *testing.T) { testDatapathMode(t, mode) })
	}
}

// releaseGrace is how long a dead node keeps its CIDR (and its routes) in
// these labs; the restarts below take much less.
const releaseGrace = 6 * time.Second

func testDatapathMode(t *testing.T, mode string) {
	for _, tool := range []string{"ping", "tcpdump", "iperf3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: run .ci/deps.sh", tool)
		}
	}
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 2, Workloads: 2, Mode: mode,
		AgentConfig: map[string]any{"cidrReleaseGrace": releaseGrace.String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The whole matrix: every workload to every other, ICMP/TCP/UDP, v4/v6.
	report, err := l.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !report.OK() {
		var b strings.Builder
		report.WriteText(&b)
		t.Fatalf("lab check failed:\n%s", b.String())
	}
	t.Logf("%s: %d checks passed", mode, report.Passed)

	src, dst := workloadOn(t, l, "c1-n1"), workloadOn(t, l, "c1-n2")
	srcIP, dstIP := firstV4(t, src), firstV4(t, dst)
	eps, err := l.Client("c1-n1").Endpoints(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	identityOf := map[netip.Addr]uint32{}
	mtu := 0
	for _, ep := range eps {
		for _, s := range ep.IPs {
			identityOf[netip.MustParseAddr(s)] = ep.Identity
		}
		mtu = ep.MTU
	}

	t.Run("wire", func(t *testing.T) { checkWire(t, ctx, l, mode, src.Name, srcIP, dstIP, identityOf) })
	t.Run("mtu", func(t *testing.T) { checkMTU(t, ctx, l, mode, mtu, src.Name, dst.Name, dstIP) })
	t.Run("seam", func(t *testing.T) {
		flows, err := l.Client("c1-n2").IdentityFlows(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := [2]uint32{identityOf[srcIP], identityOf[dstIP]}
		for _, f := range flows {
			if f.Source == want[0] && f.Destination == want[1] && f.Packets > 0 {
				return
			}
		}
		t.Errorf("the receiving node never resolved source identity %d for %d: %+v", want[0], want[1], flows)
	})
	t.Run("restart", func(t *testing.T) { checkRestartNoLoss(t, ctx, l, src.Name, dstIP) })
	t.Run("node-gone", func(t *testing.T) { checkNodeGone(t, ctx, l) })
}

func workloadOn(t *testing.T, l *lab.Lab, node string) lab.Workload {
	t.Helper()
	for _, w := range l.Workloads() {
		if w.Node == node {
			return w
		}
	}
	t.Fatalf("no workload on %s", node)
	return lab.Workload{}
}

func firstV4(t *testing.T, w lab.Workload) netip.Addr {
	t.Helper()
	for _, ip := range w.IPs {
		if ip.Is4() {
			return ip
		}
	}
	t.Fatalf("workload %s has no IPv4 address", w.Name)
	return netip.Addr{}
}

// checkWire captures on the receiving node's underlay and decodes what it
// sees: VXLAN or Geneve with VNI = the sender's identity, or plain IP.
func checkWire(t *testing.T, ctx context.Context, l *lab.Lab, mode, src string, srcIP, dstIP netip.Addr, identityOf map[netip.Addr]uint32) {
	filter := map[string]string{"vxlan": "udp port 8472", "geneve": "udp port 6081", "native": "icmp and host " + srcIP.String()}[mode]
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	capture, err := l.Command(cctx, "c1-n2", "tcpdump", "-i", "eth0", "-U", "-n", "-s", "256", "-c", "6", "-w", "-", filter)
	if err != nil {
		t.Fatal(err)
	}
	var pcap bytes.Buffer
	capture.Stdout = &pcap
	if err := capture.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // tcpdump needs a moment before it sees packets
	if out, err := l.Exec(ctx, src, "ping", "-c", "6", "-i", "0.1", "-W", "1", dstIP.String()); err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	_ = capture.Wait()
	frames, err := readPcap(pcap.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) == 0 {
		t.Fatalf("captured nothing with %q", filter)
	}
	sawSender := false
	for _, f := range frames {
		pkt, err := decodeUnderlay(f)
		if err != nil {
			t.Errorf("undecodable frame: %v", err)
			continue
		}
		switch mode {
		case "native":
			if pkt.encap != "" {
				t.Errorf("native mode put %s on the wire", pkt.encap)
			}
		default:
			if pkt.encap != mode {
				t.Errorf("frame is %q, want %s", pkt.encap, mode)
				continue
			}
			if want := identityOf[pkt.innerSrc]; pkt.vni != want {
				t.Errorf("%s frame from %s carries VNI %#x, want its identity %#x", mode, pkt.innerSrc, pkt.vni, want)
			}
		}
		sawSender = sawSender || pkt.innerSrc == srcIP
	}
	if !sawSender {
		t.Errorf("no captured frame from %s", srcIP)
	}
	t.Logf("%d frames decoded as %s", len(frames), mode)
}

// checkMTU: the largest unfragmented packet passes, one byte more is
// refused locally (never a silent black hole), and bulk TCP works.
func checkMTU(t *testing.T, ctx context.Context, l *lab.Lab, mode string, mtu int, src, dst string, dstIP netip.Addr) {
	want := map[string]int{"vxlan": 1450, "geneve": 1450, "native": 1500}[mode]
	if mtu != want {
		t.Errorf("workload MTU %d, want %d in %s mode", mtu, want, mode)
	}
	payload := mtu - 28
	if out, err := l.Exec(ctx, src, "ping", "-M", "do", "-c", "2", "-W", "2", "-s", strconv.Itoa(payload), dstIP.String()); err != nil {
		t.Errorf("max-size ping (%d bytes) failed: %v\n%s", payload, err, out)
	}
	out, err := l.Exec(ctx, src, "ping", "-M", "do", "-c", "1", "-W", "2", "-s", strconv.Itoa(payload+1), dstIP.String())
	if err == nil || !strings.Contains(strings.ToLower(string(out)), "message too long") {
		t.Errorf("oversized ping: want a local 'message too long', got %v\n%s", err, out)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	server, err := l.Command(sctx, dst, "iperf3", "-s", "-1", "-p", "5201")
	if err != nil {
		t.Fatal(err)
	}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = server.Wait() }()
	var cout []byte
	for range 20 { // the server needs a moment to listen
		cout, err = l.Exec(sctx, src, "iperf3", "-c", dstIP.String(), "-p", "5201", "-n", "20M")
		if err == nil || !strings.Contains(string(cout), "refused") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("bulk TCP (20 MB) failed: %v\n%s", err, cout)
	}
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// checkRestartNoLoss: kill -9 and restart each node's agent under a 10 ms
// ping; pinned maps and links keep forwarding, so nothing is lost.
func checkRestartNoLoss(t *testing.T, ctx context.Context, l *lab.Lab, src string, dstIP netip.Addr) {
	pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	ping, err := l.Command(pctx, src, "ping", "-i", "0.01", "-c", "900", "-W", "1", dstIP.String())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ping.Stdout, ping.Stderr = &out, &out
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"c1-n1", "c1-n2"} {
		time.Sleep(500 * time.Millisecond)
		if err := l.Kill(node, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if err := l.Start(node); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitReady(pctx, node); err != nil {
			t.Fatal(err)
		}
	}
	_ = ping.Wait()
	m := pingSummary.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no ping summary:\n%s", out.String())
	}
	sent, got := m[1], m[2]
	if sent != got {
		t.Errorf("lost packets across two agent restarts: %s sent, %s received", sent, got)
	}
	t.Logf("10 ms ping through kill -9 and restart of both agents: %s sent, %s received", sent, got)
	report, err := l.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !report.OK() {
		var b strings.Builder
		report.WriteText(&b)
		t.Errorf("workloads broken after restarts:\n%s", b.String())
	}
}

// checkNodeGone: a dead node keeps its routes through the grace (its
// pinned datapath still forwards; its agent may be restarting), then is
// removed from the store and from every other node's datapath; when it
// comes back it is routed to again.
func checkNodeGone(t *testing.T, ctx context.Context, l *lab.Lab) {
	gone, _ := l.Node("c1-n2")
	underlay := gone.Underlay[0].String()
	count := func() int {
		entries, err := l.Client("c1-n1").IPCache(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range entries {
			if e.Node == underlay {
				n++
			}
		}
		return n
	}
	if before := count(); before == 0 {
		t.Fatalf("c1-n1's ipcache has no entry via %s before the test", underlay)
	}
	if err := l.Kill("c1-n2", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for count() != 0 {
		if time.Since(killed) > releaseGrace+10*time.Second {
			t.Fatalf("entries via dead node %s still in c1-n1's ipcache %s after kill -9", underlay, time.Since(killed))
		}
		time.Sleep(50 * time.Millisecond)
	}
	removed := time.Since(killed)
	t.Logf("routes and ipcache entries via the dead node removed %s after kill -9 (grace %s)", removed.Round(time.Millisecond), releaseGrace)
	if removed < releaseGrace {
		t.Errorf("entries removed after %s, before the grace of %s", removed, releaseGrace)
	}
	if err := l.Start("c1-n2"); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitReady(ctx, "c1-n2"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for count() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("entries of the returned node not restored")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readPcap returns the frames of a classic pcap file with Ethernet frames.
func readPcap(b []byte) ([][]byte, error) {
	if len(b) < 24 {
		return nil, fmt.Errorf("pcap: %d bytes, no header", len(b))
	}
	var order binary.ByteOrder
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		order = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		order = binary.BigEndian
	default:
		return nil, fmt.Errorf("pcap: bad magic %x", b[:4])
	}
	if lt := order.Uint32(b[20:]); lt != 1 {
		return nil, fmt.Errorf("pcap: link type %d, want Ethernet", lt)
	}
	var frames [][]byte
	for off := 24; off+16 <= len(b); {
		n := int(order.Uint32(b[off+8:]))
		off += 16
		if off+n > len(b) {
			break
		}
		frames = append(frames, b[off:off+n])
		off += n
	}
	return frames, nil
}

type underlayPacket struct {
	encap    string // "", "vxlan" or "geneve"
	vni      uint32
	innerSrc netip.Addr
}

// decodeUnderlay decodes Ethernet/IPv4, and below UDP a VXLAN or Geneve
// header with the inner frame's source address.
func decodeUnderlay(f []byte) (underlayPacket, error) {
	var p underlayPacket
	if len(f) < 34 || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
		return p, fmt.Errorf("not Ethernet/IPv4 (%d bytes)", len(f))
	}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	src := netip.AddrFrom4([4]byte(ip[12:16]))
	if ip[9] != syscall.IPPROTO_UDP {
		p.innerSrc = src
		return p, nil
	}
	if len(ip) < ihl+8 {
		return p, fmt.Errorf("short UDP")
	}
	udp := ip[ihl:]
	payload := udp[8:]
	var inner []byte
	switch binary.BigEndian.Uint16(udp[2:]) {
	case 8472, 4789:
		if len(payload) < 8 || payload[0]&0x08 == 0 {
			return p, fmt.Errorf("bad VXLAN header")
		}
		p.encap, p.vni = "vxlan", uint32(payload[4])<<16|uint32(payload[5])<<8|uint32(payload[6])
		inner = payload[8:]
	case 6081:
		if len(payload) < 8 || payload[0]>>6 != 0 || binary.BigEndian.Uint16(payload[2:]) != 0x6558 {
			return p, fmt.Errorf("bad Geneve header")
		}
		opt := int(payload[0]&0x3f) * 4
		p.encap, p.vni = "geneve", uint32(payload[4])<<16|uint32(payload[5])<<8|uint32(payload[6])
		if len(payload) < 8+opt {
			return p, fmt.Errorf("short Geneve options")
		}
		inner = payload[8+opt:]
	default:
		p.innerSrc = src
		return p, nil
	}
	if len(inner) < 14+20 {
		return p, fmt.Errorf("short inner frame")
	}
	switch binary.BigEndian.Uint16(inner[12:]) {
	case 0x0800:
		p.innerSrc = netip.AddrFrom4([4]byte(inner[14+12 : 14+16]))
	case 0x86dd:
		if len(inner) < 14+40 {
			return p, fmt.Errorf("short inner IPv6")
		}
		p.innerSrc = netip.AddrFrom16([16]byte(inner[14+8 : 14+24]))
	}
	return p, nil
}
