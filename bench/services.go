package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabric-net/fabric/bpf"
)

// The services benchmark: Fabric's eBPF service load balancing against the
// two ways kube-proxy programs the kernel, iptables and nftables, in the same
// run. Filler services sit in 10.100.0.0/14 with backends in 10.104.0.0/14;
// the service every packet and connection goes to is svcTarget.
var (
	svcTarget     = netip.MustParseAddrPort("10.96.0.10:80")
	svcExtra      = netip.MustParseAddrPort("10.97.0.1:80") // the one added and removed
	svcBackendPrt = uint16(8080)
)

const (
	fillerTable = 251 // Maglev slots of a filler service: small, so 100k fit
	targetTable = 251
)

// benchServices runs the three service benchmarks; one failing does not
// stop the others, and the error names which failed.
func benchServices(ctx context.Context, o options, cl *cleanup, w io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: creates network namespaces, loads eBPF programs and netfilter rules")
	}
	fmt.Fprintf(w, "| iptables | %s |\n| nftables | %s |\n", toolVersion("iptables-restore", "--version"), toolVersion("nft", "--version"))
	var errs []error
	progress("services: per-packet cost")
	if err := benchServicePerPacket(ctx, o, cl, w); err != nil {
		errs = append(errs, fmt.Errorf("per-packet cost: %w", err))
	}
	if ctx.Err() == nil {
		progress("services: connection rate and updates")
		if err := benchServiceConnections(ctx, o, cl, w); err != nil {
			errs = append(errs, fmt.Errorf("connections: %w", err))
		}
	}
	return errors.Join(errs...)
}

func toolVersion(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "not installed (.ci/deps.sh bench)"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(first)
}

// serviceSizes is want clipped to -services-max; the largest is always
// the maximum itself when want holds a bigger one.
func serviceSizes(want []int, maxN int) []int {
	var out []int
	for _, n := range want {
		if n >= maxN {
			out = append(out, maxN)
			break
		}
		out = append(out, n)
	}
	return slices.Compact(out)
}

func addrAt(base [4]byte, i int) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(base[:])+uint32(i))
	return netip.AddrFrom4(b)
}

func fillerVIP(i int) netip.Addr     { return addrAt([4]byte{10, 100, 0, 0}, i) }
func fillerBackend(i int) netip.Addr { return addrAt([4]byte{10, 104, 0, 0}, i) }

// maglevTable spreads size slots over backends round robin; the benchmark
// needs a valid table, not Maglev's permutation.
func maglevTable(backends, size int) []uint16 {
	t := make([]uint16, size)
	for j := range t {
		t[j] = uint16(j % backends)
	}
	return t
}

// fillerServices returns n TCP services with two backends each (backend i
// and i+1, so n+1 distinct backends), none of them the target.
func fillerServices(n int) []bpf.Service {
	out := make([]bpf.Service, 0, n+2)
	for i := range n {
		out = append(out, bpf.Service{
			Frontend: netip.AddrPortFrom(fillerVIP(i), 80),
			Proto:    bpf.ProtoTCP,
			Backends: []bpf.Backend{{Addr: netip.AddrPortFrom(fillerBackend(i), svcBackendPrt)}, {Addr: netip.AddrPortFrom(fillerBackend(i+1), svcBackendPrt)}},
			Maglev:   maglevTable(2, fillerTable),
		})
	}
	return out
}

// targetService sends svcTarget to one backend.
func targetService(backend netip.Addr) bpf.Service {
	return bpf.Service{Frontend: svcTarget, Proto: bpf.ProtoTCP,
		Backends: []bpf.Backend{{Addr: netip.AddrPortFrom(backend, svcBackendPrt)}}, Maglev: maglevTable(1, targetTable)}
}

// serviceConfig sizes the service maps for maxN services.
func serviceConfig(pinDir string, maxN int) bpf.Config {
	cfg := bpf.DefaultConfig()
	cfg.PinDir, cfg.Mode, cfg.UnderlayIfName, cfg.UnderlayIPv4 = pinDir, bpf.ModeVXLAN, "lo", ppNode
	cfg.ServiceEntries = max(maxN+16, bpf.DefaultServiceEntries)
	cfg.BackendEntries = max(maxN+16, bpf.DefaultBackendEntries)
	return cfg
}

// synFrame is an Ethernet frame with a TCP SYN from src to dst.
func synFrame(src netip.AddrPort, dst netip.AddrPort) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], 1)
	tcp[12], tcp[13] = 5<<4, 0x02 // data offset 5 words, SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	return ipv4Frame(ppHostMAC, ppWlMAC, src.Addr(), dst.Addr(), 6, 0x4000, tcp)
}

// translatedTo checks that the frame the program left goes to dst.
func translatedTo(dst netip.AddrPort) func([]byte) error {
	return func(out []byte) error {
		if len(out) < 14+24 || netip.AddrFrom4([4]byte(out[14+16:14+20])) != dst.Addr() || binary.BigEndian.Uint16(out[14+22:]) != dst.Port() {
			return fmt.Errorf("not a packet to %s: % x", dst, out[:min(len(out), 64)])
		}
		return nil
	}
}

// svcCase is one program on a stream of packets.
type svcCase struct {
	name, path string
	prog       *bpf.BenchProgram
	next       func() []byte // the packet of the next call
	check      func([]byte) error
}

// benchServicePerPacket times the send path of a SYN to a service whose
// backend is on another node (VXLAN), through policy, conntrack, load
// balancing and the tunnel redirect, with growing service and ipcache maps.
func benchServicePerPacket(ctx context.Context, o options, cl *cleanup, w io.Writer) error {
	sizes := serviceSizes([]int{10, 10_000, 100_000}, o.svcMax)
	ns, err := cl.newNetNS("spp")
	if err != nil {
		return err
	}
	if err := ipScript(
		[]string{"-n", ns, "link", "add", "fabric_vxlan", "type", "vxlan", "external", "dstport", "8472", "nolearning"},
		[]string{"-n", ns, "link", "set", "fabric_vxlan", "up"},
	); err != nil {
		return err
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
	var dp *bpf.Datapath
	if err := th.do(func() error {
		var err error
		dp, err = bpf.Open(serviceConfig(filepath.Join(pinRoot, "svc"), sizes[len(sizes)-1]))
		return err
	}); err != nil {
		return fmt.Errorf("open datapath in %s: %w", ns, err)
	}
	defer th.do(dp.Destroy)
	empty, err := bpf.EmptyBenchProgram()
	if err != nil {
		return err
	}
	defer empty.Close()
	lxc, err := dp.ProgramForBenchmark("lxc")
	if err != nil {
		return err
	}
	defer lxc.Close()

	backend := netip.AddrPortFrom(ppRemote, svcBackendPrt)
	tracked := synFrame(netip.AddrPortFrom(ppLocal, 40000), svcTarget)
	toPod := synFrame(netip.AddrPortFrom(ppLocal, 40001), backend)
	// New connections: a source port per call, never one used before in
	// this run, so every call misses conntrack and the service's
	// connection table and picks a backend.
	calls := min(o.svcCalls, 60_000/len(sizes)-1000)
	port := uint16(1024)
	fresh := func() []byte {
		port++
		return synFrame(netip.AddrPortFrom(ppLocal, port), svcTarget)
	}
	same := func(p []byte) func() []byte { return func() []byte { return p } }
	cases := []*svcCase{
		{name: "empty", path: "`return TC_ACT_OK`", prog: empty, next: same(tracked)},
		{name: "to a pod", path: "SYN to the backend's own address: policy, conntrack, ipcache, tunnel key, redirect (no service)", prog: lxc, next: same(toPod), check: sameFrame(toPod)},
		{name: "service, tracked", path: "the same SYN again: service lookup, lb_ct hit, DNAT, policy (conntrack hit), tunnel key, redirect", prog: lxc, next: same(tracked), check: translatedTo(backend)},
		{name: "service, new", path: "a SYN from a new source port: service lookup, Maglev pick, lb_ct and conntrack inserts, DNAT, egress policy, tunnel key, redirect", prog: lxc, next: fresh, check: translatedTo(backend)},
	}

	type key struct {
		n    int
		name string
	}
	perCall := make(map[key][]time.Duration)
	applied := make(map[int]time.Duration)
	const chunks = 10
	for _, n := range sizes {
		if err := ctx.Err(); err != nil {
			return err
		}
		st := ppState(ipcacheLayout{n, true}, 0)
		st.Endpoints = st.Endpoints[:1] // the sender, behind lo
		st.Endpoints[0].Policy = bpf.EndpointPolicy{EgressEnforced: true, Entries: []bpf.PolicyEntry{
			{Direction: bpf.Egress, Identity: ppRemoteID, Proto: bpf.ProtoTCP, PortLo: svcBackendPrt, PortHi: svcBackendPrt}}}
		st.Services = append(fillerServices(n-1), targetService(ppRemote))
		start := time.Now()
		if err := th.do(func() error { return dp.Apply(st) }); err != nil {
			return fmt.Errorf("apply %d services and ipcache entries: %w", n, err)
		}
		applied[n] = time.Since(start)
		progress("services: %d services and ipcache entries applied in %s", n, applied[n].Round(time.Millisecond))
		err := th.do(func() error {
			for _, c := range cases {
				for i := range 200 { // the first call checks the path; then warm-up
					ret, out, err := c.prog.Run(c.next())
					if err != nil {
						return fmt.Errorf("%s: %w", c.name, err)
					}
					want := uint32(tcActRedirect)
					if c.prog == empty {
						want = tcActOK
					}
					if ret != want {
						return fmt.Errorf("%s with %d services: verdict %d, want %d", c.name, n, ret, want)
					}
					if i == 0 && c.check != nil {
						if err := c.check(out); err != nil {
							return fmt.Errorf("%s with %d services: %w", c.name, n, err)
						}
					}
				}
			}
			per := max(calls/chunks, 1)
			for chunk := range chunks {
				for i := range cases {
					c := cases[(i+chunk)%len(cases)]
					k := key{n, c.name}
					for range per {
						ret, d, err := c.prog.Time(c.next(), 1)
						if err != nil {
							return fmt.Errorf("%s: %w", c.name, err)
						}
						if c.prog != empty && ret != tcActRedirect {
							return fmt.Errorf("%s: verdict %d in the timing loop, want %d", c.name, ret, tcActRedirect)
						}
						perCall[k] = append(perCall[k], d)
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}

	fmt.Fprintf(w, "\n## Services: per-packet cost of the send path, BPF_PROG_TEST_RUN against an empty TC program\n\n")
	fmt.Fprintf(w, "The endpoint program (lxc) of a VXLAN-mode datapath opened with `bpf.Open` in a namespace of its own, run on a %d-byte TCP SYN "+
		"from a local endpoint behind lo (egress policy enforced, one allow entry for the backend's identity and port) to the service %s, "+
		"whose one backend %s is an endpoint on another node. N is the number of services (N−1 fillers with 2 backends and a %d-slot Maglev table each, plus the target) "+
		"and of filler /32 ipcache entries besides the backend's. %d calls (repeat 1) per cell in %d chunks interleaved over the rows; "+
		"the kernel's own time per call; every path's verdict is checked on every call and its output packet once.\n\n",
		len(tracked), svcTarget, backend, fillerTable, max(calls/chunks, 1)*chunks, chunks)
	fmt.Fprintf(w, "Median ns/packet (ratio to the empty program in the same chunks):\n\n| case | path |")
	for _, n := range sizes {
		fmt.Fprintf(w, " N = %d |", n)
	}
	fmt.Fprintf(w, " − empty, N = %d → %d (ns) |\n|---|---|%s---|\n", sizes[0], sizes[len(sizes)-1], strings.Repeat("---:|", len(sizes)))
	over := func(n int, name string) int64 {
		return (medianDuration(perCall[key{n, name}]) - medianDuration(perCall[key{n, "empty"}])).Nanoseconds()
	}
	for _, c := range cases {
		fmt.Fprintf(w, "| %s | %s |", c.name, c.path)
		for _, n := range sizes {
			m, base := medianDuration(perCall[key{n, c.name}]), medianDuration(perCall[key{n, "empty"}])
			fmt.Fprintf(w, " %d (%s) |", m.Nanoseconds(), ratio(float64(m), float64(base)))
		}
		fmt.Fprintf(w, " %d → %d |\n", over(sizes[0], c.name), over(sizes[len(sizes)-1], c.name))
	}
	fmt.Fprintf(w, "\nMeans (ns/packet):")
	for _, n := range sizes {
		var parts []string
		for _, c := range cases {
			parts = append(parts, fmt.Sprintf("%s %.0f", c.name, meanNanos(perCall[key{n, c.name}])))
		}
		fmt.Fprintf(w, " N = %d: %s.", n, strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "\n\nApply of the whole state (from the previous N):")
	for _, n := range sizes {
		fmt.Fprintf(w, " N = %d: %s.", n, ms(applied[n]))
	}
	if len(sizes) > 1 {
		hi, lo := sizes[len(sizes)-1], sizes[len(sizes)-2]
		per := applied[hi] / time.Duration(hi-lo)
		fmt.Fprintf(w, " That is about %s per added service (the new Maglev tables, inner maps of the map of maps lb_maglev, "+
			"are inserted in batches, one RCU grace period per batch).", per.Round(10*time.Microsecond))
		if o.svcMax < 100_000 {
			fmt.Fprintf(w, " The run stops at -services-max %d (the plan was 10 / 10k / 100k).", o.svcMax)
		}
	}
	fmt.Fprintf(w, "\n\nReading it: the service, backend and ipcache lookups are hash lookups and the Maglev pick is an array index, "+
		"so the rows should stay about flat as N grows, up to what bigger hashes cost in cache misses. "+
		"\"service, tracked\" is the steady state of a connection (every call after the first finds the connection's entries); "+
		"\"service, new\" is a first packet, and also pays for LRU inserts (and, once the %d-entry conntrack table is full, evictions). "+
		"Noise as in the datapath section: one syscall per call on a shared VM; differences under 10-20 ns are within it.\n", bpf.DefaultCTEntries)
	return nil
}

// serveAcceptClose listens on :8080 in ns and answers every connection with
// one byte, then closes it: the shortest exchange that proves the reply
// came back through the reverse translation.
func serveAcceptClose(cl *cleanup, ns string) (func(), error) {
	th, err := startNSThread(ns)
	if err != nil {
		return nil, err
	}
	defer th.stop()
	var ln net.Listener
	if err := th.do(func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", svcBackendPrt))
		return err
	}); err != nil {
		return nil, fmt.Errorf("listen in %s: %w", ns, err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte{'x'})
			c.Close()
		}
	}()
	return cl.add(func() { ln.Close() }), nil
}

// connectionRate opens total connections to addr from the client workers,
// each of them sequential, and returns connections per second. Every
// connection must complete: the client reads the server's byte, then
// closes with a reset so that no TIME_WAIT piles up on either side.
func connectionRate(workers []*nsThread, addr netip.AddrPort, total int) (float64, error) {
	var (
		left  atomic.Int64
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	left.Store(int64(total))
	start := time.Now()
	for _, th := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := th.do(func() error {
				buf := make([]byte, 1)
				for left.Add(-1) >= 0 {
					c, err := net.DialTimeout("tcp", addr.String(), 3*time.Second)
					if err != nil {
						return err
					}
					_ = c.SetDeadline(time.Now().Add(3 * time.Second))
					_, err = io.ReadFull(c, buf)
					_ = c.(*net.TCPConn).SetLinger(0)
					c.Close()
					if err != nil {
						return fmt.Errorf("read from %s: %w", addr, err)
					}
				}
				return nil
			})
			if err != nil {
				errMu.Lock()
				if first == nil {
					first = err
				}
				errMu.Unlock()
				left.Store(-1 << 40)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

type linkJSON struct {
	Ifindex int    `json:"ifindex"`
	Address string `json:"address"`
}

func linkOf(ns, dev string) (int, net.HardwareAddr, error) {
	out, err := ipCmd("-n", ns, "-j", "link", "show", dev)
	if err != nil {
		return 0, nil, err
	}
	var ls []linkJSON
	if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls) != 1 {
		return 0, nil, fmt.Errorf("ip -j link show %s in %s: %q: %v", dev, ns, out, err)
	}
	mac, err := net.ParseMAC(ls[0].Address)
	return ls[0].Ifindex, mac, err
}

// clientThreads starts n threads in ns for the client workers.
func clientThreads(ns string, n int) ([]*nsThread, func(), error) {
	var ths []*nsThread
	stop := func() {
		for _, t := range ths {
			t.stop()
		}
	}
	for range n {
		t, err := startNSThread(ns)
		if err != nil {
			stop()
			return nil, nil, err
		}
		ths = append(ths, t)
	}
	return ths, stop, nil
}

// Addresses of the kube-proxy-style topology: client — router — server.
var (
	kpClient = netip.MustParseAddr("10.220.1.2")
	kpServer = netip.MustParseAddr("10.220.2.2")
)

// benchServiceConnections measures new connections per second to a service
// VIP with N services through Fabric's datapath, iptables and nftables,
// and then, with the largest N loaded, the time to add and remove one.
func benchServiceConnections(ctx context.Context, o options, cl *cleanup, w io.Writer) error {
	sizes := serviceSizes([]int{1000, 10_000, 100_000}, o.svcMax)
	maxN := sizes[len(sizes)-1]

	// Fabric: one node namespace holds the datapath; the client and the
	// server are its endpoints, each behind a veth.
	node, err := cl.newNetNS("sfn")
	if err != nil {
		return err
	}
	fcli, err := cl.newNetNS("sfc")
	if err != nil {
		return err
	}
	fsrv, err := cl.newNetNS("sfs")
	if err != nil {
		return err
	}
	fClient, fServer := netip.MustParseAddr("10.210.1.10"), netip.MustParseAddr("10.210.1.11")
	if err := ipScript(
		[]string{"-n", node, "link", "add", "fabric_vxlan", "type", "vxlan", "external", "dstport", "8472", "nolearning"},
		[]string{"-n", node, "link", "set", "fabric_vxlan", "up"},
	); err != nil {
		return err
	}
	var eps []bpf.Endpoint
	for i, wl := range []struct {
		ns   string
		addr netip.Addr
	}{{fcli, fClient}, {fsrv, fServer}} {
		host := fmt.Sprintf("lxc%d", i)
		if err := ipScript(
			[]string{"-n", node, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", wl.ns},
			[]string{"-n", node, "link", "set", host, "up"},
			[]string{"-n", wl.ns, "link", "set", "eth0", "up"},
			[]string{"-n", wl.ns, "addr", "add", wl.addr.String() + "/32", "dev", "eth0"},
			[]string{"-n", wl.ns, "route", "add", "default", "via", "10.210.1.1", "dev", "eth0", "onlink"},
		); err != nil {
			return err
		}
		hi, hmac, err := linkOf(node, host)
		if err != nil {
			return err
		}
		_, wmac, err := linkOf(wl.ns, "eth0")
		if err != nil {
			return err
		}
		eps = append(eps, bpf.Endpoint{IPs: []netip.Addr{wl.addr}, HostIfIndex: hi, HostMAC: hmac, MAC: wmac, Identity: uint32(1000 + i)})
	}
	pinRoot, err := privateBPFFS(cl)
	if err != nil {
		return err
	}
	nth, err := startNSThread(node)
	if err != nil {
		return err
	}
	defer nth.stop()
	var dp *bpf.Datapath
	if err := nth.do(func() error {
		var err error
		dp, err = bpf.Open(serviceConfig(filepath.Join(pinRoot, "conn"), maxN+1))
		return err
	}); err != nil {
		return fmt.Errorf("open datapath in %s: %w", node, err)
	}
	defer nth.do(dp.Destroy)
	if _, err := serveAcceptClose(cl, fsrv); err != nil {
		return err
	}
	fWorkers, stopF, err := clientThreads(fcli, o.svcWorkers)
	if err != nil {
		return err
	}
	defer stopF()

	// iptables and nftables: the client's default route is a router
	// namespace, where the rules DNAT the VIP as kube-proxy does on a node.
	kcli, err := cl.newNetNS("skc")
	if err != nil {
		return err
	}
	krt, err := cl.newNetNS("skr")
	if err != nil {
		return err
	}
	ksrv, err := cl.newNetNS("sks")
	if err != nil {
		return err
	}
	if err := ipScript(
		[]string{"-n", krt, "link", "add", "k0", "type", "veth", "peer", "name", "eth0", "netns", kcli},
		[]string{"-n", krt, "link", "add", "k1", "type", "veth", "peer", "name", "eth0", "netns", ksrv},
		[]string{"-n", krt, "addr", "add", "10.220.1.1/24", "dev", "k0"},
		[]string{"-n", krt, "addr", "add", "10.220.2.1/24", "dev", "k1"},
		[]string{"-n", krt, "link", "set", "k0", "up"},
		[]string{"-n", krt, "link", "set", "k1", "up"},
		[]string{"-n", kcli, "addr", "add", kpClient.String() + "/24", "dev", "eth0"},
		[]string{"-n", kcli, "link", "set", "eth0", "up"},
		[]string{"-n", kcli, "route", "add", "default", "via", "10.220.1.1"},
		[]string{"-n", ksrv, "addr", "add", kpServer.String() + "/24", "dev", "eth0"},
		[]string{"-n", ksrv, "link", "set", "eth0", "up"},
		[]string{"-n", ksrv, "route", "add", "default", "via", "10.220.2.1"},
	); err != nil {
		return err
	}
	if out, err := exec.Command("ip", "netns", "exec", krt, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		return fmt.Errorf("ip_forward in %s: %w: %s", krt, err, out)
	}
	if _, err := serveAcceptClose(cl, ksrv); err != nil {
		return err
	}
	kWorkers, stopK, err := clientThreads(kcli, o.svcWorkers)
	if err != nil {
		return err
	}
	defer stopK()

	measure := func(workers []*nsThread, addr netip.AddrPort) (float64, error) {
		if _, err := connectionRate(workers, addr, 100); err != nil { // warm-up: neighbours, caches
			return 0, err
		}
		return connectionRate(workers, addr, o.svcConns)
	}
	res := make(map[string]map[int]svcCell)
	for _, k := range []string{"plain", "fabric", "iptables", "nftables"} {
		res[k] = make(map[int]svcCell)
	}
	var upd map[string][2][]time.Duration
	for _, n := range sizes {
		if err := ctx.Err(); err != nil {
			return err
		}
		rate, err := measure(kWorkers, netip.AddrPortFrom(kpServer, svcBackendPrt))
		res["plain"][n] = svcCell{rate: rate, err: err}

		st := bpf.State{Endpoints: eps, Services: append(fillerServices(n-1), targetService(fServer))}
		start := time.Now()
		err = nth.do(func() error { return dp.Apply(st) })
		c := svcCell{load: time.Since(start), err: err}
		if err == nil {
			c.rate, c.err = measure(fWorkers, svcTarget)
		}
		res["fabric"][n] = c
		progress("services: fabric, %d services: %.0f conn/s (apply %s) %v", n, c.rate, ms(c.load), c.err)
		last := n == maxN
		if last {
			upd = map[string][2][]time.Duration{}
			upd["fabric"] = timeUpdates(o.svcTries, func() error {
				extra := bpf.Service{Frontend: svcExtra, Proto: bpf.ProtoTCP,
					Backends: []bpf.Backend{{Addr: netip.AddrPortFrom(fServer, svcBackendPrt)}}, Maglev: maglevTable(1, fillerTable)}
				more := bpf.State{Endpoints: eps, Services: append(slices.Clip(st.Services), extra)}
				return nth.do(func() error { return dp.Apply(more) })
			}, func() error { return nth.do(func() error { return dp.Apply(st) }) })
		}

		c = loadRules(krt, "iptables-restore", nil, iptablesRules(n))
		if c.err == nil {
			c.rate, c.err = measure(kWorkers, svcTarget)
			if last {
				upd["iptables"] = timeUpdates(o.svcTries,
					func() error { return runIn(krt, iptablesAdd(), "iptables-restore", "--noflush") },
					func() error { return runIn(krt, iptablesDel(), "iptables-restore", "--noflush") })
			}
		}
		if err := runIn(krt, "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n", "iptables-restore"); err != nil && c.err == nil {
			c.err = fmt.Errorf("flush: %w", err)
		}
		res["iptables"][n] = c
		progress("services: iptables, %d services: %.0f conn/s (load %s) %v", n, c.rate, ms(c.load), c.err)

		c = loadRules(krt, "nft", []string{"-f", "-"}, nftRules(n))
		if c.err == nil {
			c.rate, c.err = measure(kWorkers, svcTarget)
			if last {
				upd["nftables"] = timeUpdates(o.svcTries,
					func() error { return runIn(krt, nftAdd(), "nft", "-f", "-") },
					func() error { return runIn(krt, nftDel(), "nft", "-f", "-") })
			}
		}
		if err := runIn(krt, "delete table ip fbench\n", "nft", "-f", "-"); err != nil && c.err == nil {
			c.err = fmt.Errorf("delete table: %w", err)
		}
		res["nftables"][n] = c
		progress("services: nftables, %d services: %.0f conn/s (load %s) %v", n, c.rate, ms(c.load), c.err)
	}

	fmt.Fprintf(w, "\n## Services: new TCP connections per second to a service VIP\n\n")
	fmt.Fprintf(w, "The same client (%d workers, one OS thread each in the client namespace, each connecting, reading one byte the server writes, "+
		"then closing with a reset so that no TIME_WAIT piles up) opens %d connections per cell (after 100 unmeasured) to %s with N services present; "+
		"the server is a Go accept-write-close loop on port %d. "+
		"**Fabric**: client and server are endpoints of a VXLAN-mode datapath (`bpf.Open` + `Apply` in a node namespace, each behind a veth); "+
		"the VIP is translated in the client's veth program, the reply back in the server's. "+
		"**iptables** (in the manner of kube-proxy, loaded with `iptables-restore`) and **nftables** (`nft -f`): the client's default route is a router namespace "+
		"that forwards to the server; in iptables its nat PREROUTING jumps to KUBE-SERVICES, one rule per service (the target last, so the whole list is walked) "+
		"jumping to a per-service chain that DNATs; in nftables one `ip daddr . tcp dport vmap` goes to a per-service chain that DNATs. "+
		"**plain routing**: the same client through the same router to the server's own address, no rules: the floor of this topology.\n\n",
		o.svcWorkers, o.svcConns, svcTarget, svcBackendPrt)
	fmt.Fprintf(w, "| N services | plain routing | Fabric eBPF | iptables | nftables | Fabric / iptables | Fabric / nftables | iptables / plain |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	rateOf := func(c svcCell) string {
		if c.err != nil {
			return "failed: " + strings.ReplaceAll(c.err.Error(), "|", "/")
		}
		return fmt.Sprintf("%.0f/s", c.rate)
	}
	for _, n := range sizes {
		p, f, i, nf := res["plain"][n], res["fabric"][n], res["iptables"][n], res["nftables"][n]
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s |\n", n, rateOf(p), rateOf(f), rateOf(i), rateOf(nf),
			ratio(f.rate, i.rate), ratio(f.rate, nf.rate), ratio(i.rate, p.rate))
	}
	if maxN < 100_000 {
		fmt.Fprintf(w, "\nThe plan was 1k / 10k / 100k services; sizes above -services-max %d were not run, for the time Fabric's Apply takes per service "+
			"(see the per-packet section).\n", o.svcMax)
	}
	fmt.Fprintf(w, "\nTime to load N services (whole state or ruleset, from empty for the rules, from the previous N for Fabric):")
	for _, n := range sizes {
		fmt.Fprintf(w, " N = %d: Fabric %s, iptables %s, nftables %s.", n, ms(res["fabric"][n].load), ms(res["iptables"][n].load), ms(res["nftables"][n].load))
	}
	fmt.Fprintf(w, "\n\nReading it: a connection here costs two namespaces' stacks, a veth hop each way and a Go accept loop, so the table shows "+
		"how much of that the service lookup adds; the Fabric and netfilter paths also differ in topology (Fabric redirects between veths "+
		"without the router namespace's forwarding and conntrack), which the plain-routing column bounds for the netfilter side. "+
		"iptables walks KUBE-SERVICES rule by rule for every new connection (later packets go by conntrack), so its rate should fall with N; "+
		"the nftables vmap and Fabric's service hash should not.\n")

	fmt.Fprintf(w, "\n## Services: time to add or remove one service with %d present\n\n", maxN)
	fmt.Fprintf(w, "Medians over %d tries, each an add then a remove of one TCP service (%s, one backend). "+
		"Fabric: `Apply` of the whole state with the service, then without it (the API is declarative: it compiles and diffs all %d services each time). "+
		"iptables: `iptables-restore --noflush` of the per-service chain and its KUBE-SERVICES rule (remove: `-D` the rule, flush and `-X` the chain). "+
		"nftables: `nft -f -` adding the chain, its rule and the vmap element (remove: the element, then the chain). "+
		"The iptables and nftables times include starting the tool (a process each time, as kube-proxy does).\n\n",
		o.svcTries, svcExtra, maxN)
	fmt.Fprintf(w, "| | add (median) | remove (median) | add / Fabric | remove / Fabric |\n|---|---:|---:|---:|---:|\n")
	fa, fr := medianDuration(upd["fabric"][0]), medianDuration(upd["fabric"][1])
	for _, k := range []string{"fabric", "iptables", "nftables"} {
		u, ok := upd[k]
		if !ok || len(u[0]) == 0 {
			fmt.Fprintf(w, "| %s | not measured | not measured | | |\n", k)
			continue
		}
		a, r := medianDuration(u[0]), medianDuration(u[1])
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", k, ms(a), ms(r), ratio(float64(a), float64(fa)), ratio(float64(r), float64(fr)))
	}
	var failed []string
	for k, c := range res {
		for n, x := range c {
			if x.err != nil {
				failed = append(failed, fmt.Sprintf("%s at %d: %v", k, n, x.err))
			}
		}
	}
	for k, u := range upd {
		if len(u[0]) < o.svcTries {
			failed = append(failed, fmt.Sprintf("%s updates: %d of %d tries", k, len(u[0]), o.svcTries))
		}
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

// svcCell is one measurement of the connection benchmark.
type svcCell struct {
	rate float64       // connections per second
	load time.Duration // of the state or ruleset
	err  error
}

// timeUpdates times tries rounds of add then remove; a failing round ends
// the series (what was measured stays).
func timeUpdates(tries int, add, remove func() error) [2][]time.Duration {
	var out [2][]time.Duration
	for range tries {
		start := time.Now()
		if err := add(); err != nil {
			progress("services: add: %v", err)
			return out
		}
		mid := time.Now()
		if err := remove(); err != nil {
			progress("services: remove: %v", err)
			return out
		}
		out[0] = append(out[0], mid.Sub(start))
		out[1] = append(out[1], time.Since(mid))
	}
	return out
}

// runIn runs a netfilter tool in ns with input on its stdin.
func runIn(ns, input, tool string, args ...string) error {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, tool}, args...)...)
	cmd.Stdin = strings.NewReader(input)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		return fmt.Errorf("%s %s in %s: %w: %.300s", tool, strings.Join(args, " "), ns, err, msg)
	}
	return nil
}

// loadRules loads a whole ruleset and times it.
func loadRules(ns, tool string, args []string, input string) svcCell {
	var c svcCell
	start := time.Now()
	c.err = runIn(ns, input, tool, args...)
	c.load = time.Since(start)
	return c
}

func svcChain(i int) string { return fmt.Sprintf("KUBE-SVC-%06d", i) }

// iptablesRules is kube-proxy's shape for n services: n−1 fillers, then
// the target last, so a new connection to it walks every rule.
func iptablesRules(n int) string {
	var b strings.Builder
	b.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n")
	for i := range n {
		fmt.Fprintf(&b, ":%s - [0:0]\n", svcChain(i))
	}
	b.WriteString("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n")
	for i := range n {
		vip, be := fillerVIP(i), fillerBackend(i)
		if i == n-1 {
			vip, be = svcTarget.Addr(), kpServer
		}
		fmt.Fprintf(&b, "-A KUBE-SERVICES -d %s/32 -p tcp -m tcp --dport 80 -j %s\n", vip, svcChain(i))
		fmt.Fprintf(&b, "-A %s -p tcp -m tcp -j DNAT --to-destination %s:%d\n", svcChain(i), be, svcBackendPrt)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func iptablesAdd() string {
	return fmt.Sprintf("*nat\n:KUBE-SVC-EXTRA - [0:0]\n-A KUBE-SVC-EXTRA -p tcp -m tcp -j DNAT --to-destination %s:%d\n"+
		"-A KUBE-SERVICES -d %s/32 -p tcp -m tcp --dport %d -j KUBE-SVC-EXTRA\nCOMMIT\n", kpServer, svcBackendPrt, svcExtra.Addr(), svcExtra.Port())
}

func iptablesDel() string {
	return fmt.Sprintf("*nat\n-D KUBE-SERVICES -d %s/32 -p tcp -m tcp --dport %d -j KUBE-SVC-EXTRA\n:KUBE-SVC-EXTRA - [0:0]\n-X KUBE-SVC-EXTRA\nCOMMIT\n",
		svcExtra.Addr(), svcExtra.Port())
}

// nftRules is the same n services as an nftables verdict map.
func nftRules(n int) string {
	var b strings.Builder
	b.WriteString("add table ip fbench\n")
	for i := range n {
		be := fillerBackend(i)
		if i == n-1 {
			be = kpServer
		}
		fmt.Fprintf(&b, "add chain ip fbench svc%d\nadd rule ip fbench svc%d meta l4proto tcp dnat to %s:%d\n", i, i, be, svcBackendPrt)
	}
	b.WriteString("add map ip fbench svcs { type ipv4_addr . inet_service : verdict ; }\n")
	const batch = 5000
	for i := 0; i < n; i += batch {
		b.WriteString("add element ip fbench svcs { ")
		for j := i; j < min(i+batch, n); j++ {
			vip := fillerVIP(j)
			if j == n-1 {
				vip = svcTarget.Addr()
			}
			if j > i {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s . 80 : goto svc%d", vip, j)
		}
		b.WriteString(" }\n")
	}
	b.WriteString("add chain ip fbench pre { type nat hook prerouting priority dstnat ; policy accept ; }\n")
	b.WriteString("add rule ip fbench pre ip daddr . tcp dport vmap @svcs\n")
	return b.String()
}

func nftAdd() string {
	return fmt.Sprintf("add chain ip fbench svcextra\nadd rule ip fbench svcextra meta l4proto tcp dnat to %s:%d\n"+
		"add element ip fbench svcs { %s . %d : goto svcextra }\n", kpServer, svcBackendPrt, svcExtra.Addr(), svcExtra.Port())
}

func nftDel() string {
	return fmt.Sprintf("delete element ip fbench svcs { %s . %d }\nflush chain ip fbench svcextra\ndelete chain ip fbench svcextra\n",
		svcExtra.Addr(), svcExtra.Port())
}
