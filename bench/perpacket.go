package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fabric-net/fabric/bpf"
)

// TC verdicts (linux/pkt_cls.h).
const (
	tcActOK       = 0
	tcActRedirect = 7
)

// The per-packet fixture: this node (10.77.0.1) has two endpoints, one
// behind lo (BPF_PROG_TEST_RUN runs skb programs as if they came in on the
// loopback, ifindex 1, so that is where the sender must live) and one behind
// a veth; the remote endpoint 10.210.2.10 lives on node 10.77.0.2.
var (
	ppNode     = netip.MustParseAddr("10.77.0.1")
	ppPeer     = netip.MustParseAddr("10.77.0.2")
	ppLocal    = netip.MustParseAddr("10.210.1.10") // sender, behind lo
	ppLocal2   = netip.MustParseAddr("10.210.1.11") // receiver, behind v0
	ppRemote   = netip.MustParseAddr("10.210.2.10")
	ppWlMAC    = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 0x01}
	ppHostMAC  = net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 0x01}
	ppWl2MAC   = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 0x02}
	ppHost2MAC = net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 0x02}
	// ppLoMAC is lo's address: the underlay program serves only frames
	// addressed to this host, and lo stands in for the underlay.
	ppLoMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}
)

const (
	ppLocalID  = 1000
	ppLocal2ID = 1001
	ppRemoteID = 2000
	ppPayload  = 64 // TCP payload bytes: a 118-byte frame
)

// ppCase is one program on one packet, with the verdict its path ends in.
type ppCase struct {
	name, path string
	prog       *bpf.BenchProgram
	pkt        []byte
	verdict    uint32
	check      func(out []byte) error // of the packet the program leaves; nil: none
	stable     bool                   // same path when the program sees its own output (repeat > 1)
}

// benchPerPacket times the datapath's programs with BPF_PROG_TEST_RUN
// against an empty TC program, with growing ipcaches.
func benchPerPacket(ctx context.Context, o options, cl *cleanup, w io.Writer) error {
	ns, err := cl.newNetNS("pp")
	if err != nil {
		return err
	}
	if err := ipScript(
		[]string{"-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"},
		[]string{"-n", ns, "link", "set", "v0", "up"},
		[]string{"-n", ns, "link", "add", "fabric_vxlan", "type", "vxlan", "external", "dstport", "8472", "nolearning"},
		[]string{"-n", ns, "link", "set", "fabric_vxlan", "up"},
	); err != nil {
		return err
	}
	out, err := ipCmd("-n", ns, "-o", "link", "show", "v0")
	if err != nil {
		return err
	}
	v0, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(out, ":", 2)[0]))
	if err != nil {
		return fmt.Errorf("ifindex of v0 from %q: %w", out, err)
	}
	pinRoot, err := privateBPFFS(cl)
	if err != nil {
		return err
	}
	th, err := startNSThread(ns)
	if err != nil {
		return err
	}
	defer th.stop()

	// One datapath per mode, side by side in one namespace, each with its
	// own pins. Every program is only ever run through BPF_PROG_TEST_RUN.
	modes := []bpf.Mode{bpf.ModeVXLAN, bpf.ModeGeneve, bpf.ModeNative}
	dps := make(map[bpf.Mode]*bpf.Datapath)
	for _, m := range modes {
		cfg := bpf.DefaultConfig()
		cfg.PinDir, cfg.Mode, cfg.UnderlayIfName, cfg.UnderlayIPv4 = filepath.Join(pinRoot, string(m)), m, "lo", ppNode
		err := th.do(func() error {
			d, err := bpf.Open(cfg)
			if err != nil {
				return err
			}
			dps[m] = d
			return nil
		})
		if err != nil {
			return fmt.Errorf("open %s datapath in %s: %w", m, ns, err)
		}
		// Before th stops (defers run last first). On a signal the
		// namespace and the bpffs mount go instead, and every link and pin
		// with them.
		defer th.do(dps[m].Destroy)
	}

	empty, err := bpf.EmptyBenchProgram()
	if err != nil {
		return err
	}
	defer empty.Close()
	send := tcpFrame(ppHostMAC, ppWlMAC, ppLocal, ppRemote)
	cases := []*ppCase{{name: "empty", path: "`return TC_ACT_OK`", prog: empty, pkt: send, verdict: tcActOK, stable: true}}
	for _, m := range modes {
		p, err := dps[m].ProgramForBenchmark("lxc")
		if err != nil {
			return err
		}
		defer p.Close()
		c := &ppCase{name: "lxc, " + string(m), prog: p, pkt: send, verdict: tcActRedirect}
		switch m {
		case bpf.ModeVXLAN:
			c.path = "send: ipcache hit, set tunnel key, redirect to the VXLAN device"
			c.check = sameFrame(send)
			c.stable = true // the packet is not touched
		case bpf.ModeGeneve:
			c.path = "send: ipcache hit, Geneve encapsulation in eBPF, redirect_neigh"
			c.check = func(out []byte) error {
				if len(out) != len(send)+50 || binary.BigEndian.Uint16(out[14+20+2:]) != 6081 ||
					netip.AddrFrom4([4]byte(out[14+16:14+20])) != ppPeer {
					return fmt.Errorf("not a Geneve packet to %s: % x", ppPeer, out[:min(len(out), 64)])
				}
				return nil
			}
		case bpf.ModeNative:
			c.path = "send: ipcache hit, TTL decrement, redirect_neigh"
			c.check = func(out []byte) error {
				if len(out) != len(send) || out[14+8] != send[14+8]-1 {
					return fmt.Errorf("not the frame with its TTL decremented: % x", out[:min(len(out), 64)])
				}
				return nil
			}
		}
		cases = append(cases, c)
	}
	inner := tcpFrame(ppHostMAC, ppWlMAC, ppRemote, ppLocal2)
	delivered := func(out []byte) error {
		if len(out) != len(inner) || !slices.Equal(out[0:6], ppWl2MAC) || !slices.Equal(out[14:], inner[14:]) {
			return fmt.Errorf("not the inner frame for %s: % x", ppLocal2, out[:min(len(out), 64)])
		}
		return nil
	}
	for _, m := range []bpf.Mode{bpf.ModeGeneve, bpf.ModeNative} {
		p, err := dps[m].ProgramForBenchmark("underlay")
		if err != nil {
			return err
		}
		defer p.Close()
		c := &ppCase{name: "underlay, " + string(m), prog: p, verdict: tcActRedirect, check: delivered}
		if m == bpf.ModeGeneve {
			c.path = "receive: Geneve decapsulation, endpoint lookup, deliver (redirect_peer)"
			c.pkt = geneveFrame(ppPeer, ppNode, ppRemoteID, inner)
		} else {
			c.path = "receive: endpoint lookup, ipcache lookup of the source, deliver (redirect_peer)"
			c.pkt = tcpFrame(ppLoMAC, ppWlMAC, ppRemote, ppLocal2)
			c.stable = true // rewrites the MACs to what they already are after the first run
		}
		cases = append(cases, c)
	}

	type key struct {
		layout ipcacheLayout
		name   string
	}
	perCall := make(map[key][]time.Duration)
	perRepeat := make(map[key][]time.Duration)
	// Growing ipcaches around the address looked up, then the largest in
	// a prefix of its own: the control for the trie's depth.
	layouts := []ipcacheLayout{{10, true}, {10_000, true}, {100_000, true}, {100_000, false}}
	first, last := layouts[0], layouts[2]
	const chunks = 20
	for _, l := range layouts {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := l.n
		st := ppState(l, v0)
		applyStart := time.Now()
		for _, m := range modes {
			if err := th.do(func() error { return dps[m].Apply(st) }); err != nil {
				return fmt.Errorf("apply %d ipcache entries (%s): %w", n, m, err)
			}
		}
		progress("datapath: ipcache %s applied to 3 datapaths in %s", l, time.Since(applyStart).Round(time.Millisecond))
		err := th.do(func() error {
			// Every case must take its path before it is timed.
			for _, c := range cases {
				ret, out, err := c.prog.Run(c.pkt)
				if err != nil {
					return fmt.Errorf("%s: %w", c.name, err)
				}
				if ret != c.verdict {
					return fmt.Errorf("%s with %d entries: verdict %d, want %d", c.name, n, ret, c.verdict)
				}
				if c.check != nil {
					if err := c.check(out); err != nil {
						return fmt.Errorf("%s with %d entries: %w", c.name, n, err)
					}
				}
				for range 2000 { // warm-up: caches, branch predictors
					if _, _, err := c.prog.Time(c.pkt, 1); err != nil {
						return err
					}
				}
			}
			// Interleaved in chunks so that drift hits every program alike.
			per := max(o.progCalls/chunks, 1)
			for chunk := range chunks {
				for i := range cases {
					c := cases[(i+chunk)%len(cases)]
					k := key{l, c.name}
					for range per {
						ret, d, err := c.prog.Time(c.pkt, 1)
						if err != nil {
							return fmt.Errorf("%s: %w", c.name, err)
						}
						if ret != c.verdict {
							return fmt.Errorf("%s: verdict %d in the timing loop, want %d", c.name, ret, c.verdict)
						}
						perCall[k] = append(perCall[k], d)
					}
					if c.stable {
						ret, d, err := c.prog.Time(c.pkt, o.progRepeat)
						if err != nil {
							return fmt.Errorf("%s: %w", c.name, err)
						}
						if ret != c.verdict {
							return fmt.Errorf("%s: verdict %d after %d repeats, want %d", c.name, ret, o.progRepeat, c.verdict)
						}
						perRepeat[k] = append(perRepeat[k], d)
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}

	fmt.Fprintf(w, "\n## Datapath per-packet cost: BPF_PROG_TEST_RUN against an empty TC program\n\n")
	fmt.Fprintf(w, "Each program runs on a fresh copy of one %d-byte TCP/IPv4 frame per BPF_PROG_TEST_RUN call (repeat 1), "+
		"%d calls per cell in %d chunks interleaved over the programs; the time is the kernel's own measure around the program run (ns resolution). "+
		"The ipcache holds N /32 entries plus the one the packet hits (N+1 in the headers), scattered over 10.208.0.0/14, *around* the addresses looked up (10.210.x), "+
		"or, as a control, over 10.128.0.0/14, *apart* from them. "+
		"One datapath per mode is opened with `bpf.Open` in its own pin folder in one namespace, whose loopback stands in for the endpoint's veth and the underlay "+
		"(BPF_PROG_TEST_RUN runs skb programs as if they came in on it); every cell checks the verdict of every call, and once the packet the program leaves.\n\n",
		len(send), max(o.progCalls/chunks, 1)*chunks, chunks)
	fmt.Fprintf(w, "Median ns/packet, and the ratio to the empty program measured in the same chunks:\n\n| program | path |")
	for _, l := range layouts {
		fmt.Fprintf(w, " %s |", l)
	}
	fmt.Fprintf(w, " − empty, %s → %s (ns) |\n|---|---|%s---|\n", first, last, strings.Repeat("---:|", len(layouts)))
	overEmpty := func(m map[key][]time.Duration, l ipcacheLayout, name string) time.Duration {
		return medianDuration(m[key{l, name}]) - medianDuration(m[key{l, "empty"}])
	}
	for _, c := range cases {
		fmt.Fprintf(w, "| %s | %s |", c.name, c.path)
		for _, l := range layouts {
			m, base := medianDuration(perCall[key{l, c.name}]), medianDuration(perCall[key{l, "empty"}])
			fmt.Fprintf(w, " %d (%s) |", m.Nanoseconds(), ratio(float64(m), float64(base)))
		}
		fmt.Fprintf(w, " %d → %d |\n", overEmpty(perCall, first, c.name).Nanoseconds(), overEmpty(perCall, last, c.name).Nanoseconds())
	}
	fmt.Fprintf(w, "\nMeans (ns/packet), for the tail the medians hide:")
	for _, l := range layouts {
		var parts []string
		for _, c := range cases {
			parts = append(parts, fmt.Sprintf("%s %.0f", c.name, meanNanos(perCall[key{l, c.name}])))
		}
		fmt.Fprintf(w, " %s: %s.", l, strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "\n\nEvery call starts after a syscall, with the caches and branch predictors the syscall left (its mitigations flush some), "+
		"so repeat 1 shows a packet's cost in a cold-ish state, and the empty program's time is the clock reads and the test run's own work. "+
		"For the paths that stay the same when a program is handed its own output, one call with repeat %d shows the hot-loop cost, the kernel's time divided by the repeats, "+
		"median of %d calls; BPF_PROG_TEST_RUN hands every repeat the same buffer, so Geneve encapsulation would wrap its packet again and again, "+
		"decapsulation would see the inner frame, and native send would count the TTL down to the stack's time-exceeded path.\n\n",
		o.progRepeat, chunks)
	fmt.Fprintf(w, "| program (hot loop) |")
	for _, l := range layouts {
		fmt.Fprintf(w, " %s |", l)
	}
	fmt.Fprintf(w, " − empty, %s → %s (ns) |\n|---|%s---|\n", first, last, strings.Repeat("---:|", len(layouts)))
	for _, c := range cases {
		if !c.stable {
			continue
		}
		fmt.Fprintf(w, "| %s |", c.name)
		for _, l := range layouts {
			m, base := medianDuration(perRepeat[key{l, c.name}]), medianDuration(perRepeat[key{l, "empty"}])
			fmt.Fprintf(w, " %d (%s) |", m.Nanoseconds(), ratio(float64(m), float64(base)))
		}
		fmt.Fprintf(w, " %d → %d |\n", overEmpty(perRepeat, first, c.name).Nanoseconds(), overEmpty(perRepeat, last, c.name).Nanoseconds())
	}
	fmt.Fprintf(w, "\nReading it: the /32 (and /128) entries of the ipcache live in a hash (ipcache_host), which the programs look up first; "+
		"only shorter prefixes (pod CIDRs) are in the kernel LPM trie (ipcache), the fallback. A trie lookup walks one node per branching level between the root and the match, "+
		"and with /32 entries dense around the address looked up (as pod addresses are around each other) that depth grows with the log of their number; "+
		"here the trie holds no /32 at all, so the paths with an ipcache lookup (lxc send, native receive) should stay about flat from 10 to 100k entries, "+
		"around or apart, up to what a bigger hash costs in cache misses; "+
		"the Geneve receive path does no ipcache lookup and is the control for the rest. "+
		"Not measured: the VXLAN receive program (overlay) reads the tunnel key the kernel's VXLAN device attaches, which BPF_PROG_TEST_RUN cannot supply, "+
		"so every test run would take its drop path. "+
		"Noise: each call is a syscall on a shared 2-core VM and the clock has a coarse step here (medians come in steps of about 10 ns); "+
		"medians resist interrupts, means do not; differences under about 10-20 ns between cells are within the noise.\n")
	return nil
}

// ppState is the datapath state of the fixture with l's filler /32 entries
// in the ipcache besides the remote endpoint the packets go to.
func ppState(l ipcacheLayout, v0 int) bpf.State {
	st := bpf.State{
		Endpoints: []bpf.Endpoint{
			{IPs: []netip.Addr{ppLocal}, HostIfIndex: 1, MAC: ppWlMAC, HostMAC: ppHostMAC, Identity: ppLocalID},
			{IPs: []netip.Addr{ppLocal2}, HostIfIndex: v0, MAC: ppWl2MAC, HostMAC: ppHost2MAC, Identity: ppLocal2ID},
		},
		IPCache: []bpf.IPCacheEntry{{Prefix: netip.PrefixFrom(ppRemote, 32), Identity: ppRemoteID, Node: ppPeer}},
	}
	// Distinct addresses spread over 10.208.0.0/14 (2^18 of them): an odd
	// multiplier permutes the offsets, so the entries interleave with the
	// addresses looked up rather than sit in a subtree of their own.
	base := binary.BigEndian.Uint32([]byte{10, 208, 0, 0})
	if !l.around {
		base = binary.BigEndian.Uint32([]byte{10, 128, 0, 0})
	}
	for i := uint32(0); len(st.IPCache) < l.n+1; i++ {
		a := base + (i*2654435761)&(1<<18-1)
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], a)
		addr := netip.AddrFrom4(b)
		if addr == ppRemote || addr == ppLocal || addr == ppLocal2 {
			continue
		}
		st.IPCache = append(st.IPCache, bpf.IPCacheEntry{
			Prefix:   netip.PrefixFrom(addr, 32),
			Identity: 3000 + i%50_000,
			Node:     netip.AddrFrom4([4]byte{10, 77, byte(1 + i%200/100), byte(2 + i%100)}),
		})
	}
	return st
}

// privateBPFFS mounts a bpffs of its own on a temporary folder, so the
// benchmark's pins touch nothing else; the mount, and every pin with it, goes
// at cleanup.
func privateBPFFS(cl *cleanup) (string, error) {
	dir, err := os.MkdirTemp("", "fabric-bench-bpffs-")
	if err != nil {
		return "", fmt.Errorf("make bpffs folder: %w", err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("mount a bpffs on %s: %w", dir, err)
	}
	cl.add(func() {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		_ = os.Remove(dir)
	})
	return dir, nil
}

func sameFrame(want []byte) func([]byte) error {
	return func(out []byte) error {
		if !slices.Equal(out, want) {
			return errors.New("the program changed a packet it should only have redirected")
		}
		return nil
	}
}

// ipcacheLayout is how many filler entries the ipcache holds besides the
// one the packets hit, and whether they sit around the addresses looked up
// (10.208.0.0/14) or apart from them (10.128.0.0/14).
type ipcacheLayout struct {
	n      int
	around bool
}

// String names the layout in the report: "10k+1 around".
func (l ipcacheLayout) String() string {
	n := fmt.Sprintf("%d+1", l.n)
	if l.n >= 1000 && l.n%1000 == 0 {
		n = fmt.Sprintf("%dk+1", l.n/1000)
	}
	if l.around {
		return n + " around"
	}
	return n + " apart"
}

func meanNanos(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return float64(sum) / float64(len(ds))
}

// tcpFrame is an Ethernet frame with an IPv4 header (valid checksum) and a
// TCP ACK segment carrying ppPayload bytes.
func tcpFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr) []byte {
	tcp := make([]byte, 20+ppPayload)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	tcp[12], tcp[13] = 5<<4, 0x10 // data offset 5 words, ACK
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	return ipv4Frame(dstMAC, srcMAC, src, dst, 6, 0, tcp)
}

func ipv4Frame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, proto byte, fragOff uint16, payload []byte) []byte {
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(ip[6:], fragOff)
	copy(ip[12:], src.AsSlice())
	copy(ip[16:], dst.AsSlice())
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	b := append(append(slices.Clone(dstMAC), srcMAC...), 0x08, 0x00)
	return append(append(b, ip...), payload...)
}

// geneveFrame wraps inner (an Ethernet frame) as the other node's datapath
// does: outer IPv4 with DF, UDP to 6081 without checksum, an option-less
// Geneve header with the sender's identity as VNI, Transparent Ethernet
// Bridging.
func geneveFrame(from, to netip.Addr, vni uint32, inner []byte) []byte {
	gnv := []byte{0, 0, 0x65, 0x58, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	udp := make([]byte, 8, 8+len(gnv)+len(inner))
	binary.BigEndian.PutUint16(udp[0:], 0xc123)
	binary.BigEndian.PutUint16(udp[2:], 6081)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(gnv)+len(inner)))
	udp = append(append(udp, gnv...), inner...)
	return ipv4Frame(ppLoMAC, net.HardwareAddr{0x02, 0xcc, 0, 0, 0, 0x02}, from, to, 17, 0x4000, udp)
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
