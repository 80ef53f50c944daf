// Command bench compares Fabric's infrastructure with a baseline measured in
// the same run, on the same machine, and reports ratios:
//
//   - store: writes to a 3-server Fabric store through a client node over its
//     mutual-TLS RPC, against writes to a 3-member etcd cluster through its
//     JSON gateway, at 1 and 64 concurrent writers;
//   - gossip: time for every member of a pool to see a crashed member as
//     failed, Fabric's tuned timers against memberlist's stock LAN timers,
//     and false failures while the CPU is saturated;
//   - datapath: single-stream TCP throughput between two workloads on two
//     nodes through Fabric labs in each mode, against a plain veth and a
//     kernel static VXLAN pair; and the eBPF programs' per-packet cost under
//     BPF_PROG_TEST_RUN against an empty program, with 10 to 100k ipcache
//     entries (needs root).
//
// Store and gossip traffic stays on 127.0.0.1; datapath traffic stays in
// network namespaces the run creates (and labs it brings up), never in the
// machine's own. Every process, namespace, lab, mount and directory it makes
// is removed on exit, also on SIGINT/SIGTERM. A benchmark is not a test: the
// program fails only when it cannot measure, never on a timing.
//
// With -out, the file gets one section per benchmark that ran; sections of
// benchmarks that did not run (-only) are kept from the file as it was.
//
//   - bgp: time for 100k /32s to reach FRR's table from Fabric's BGP
//     speaker against gobgpd, and from a speaker's SIGKILL to the
//     withdrawal at FRR (needs root and FRR; namespaces only).
//
//   - services: Fabric's eBPF service load balancing against kube-proxy's
//     iptables and nftables rules: the send path's per-packet cost with 10
//     to 100k services, new TCP connections per second to a VIP with 1k to
//     100k services, and the time to add or remove one service (needs root,
//     iptables and nftables; namespaces only).
//
//   - l2: L2 announcement failover as a client pinging a load-balancer IP
//     every 10 ms sees it, over 5 kills of the owning node, with gossip's
//     detection time (needs root; a lab).
//
// Usage: go run ./bench [-only store|gossip|datapath|bgp|services|l2] [-out bench/RESULTS.md]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fabric-net/fabric/bgp/speakerproc"
)

type options struct {
	only       string
	out        string
	rounds     int
	writes1    int
	writes64   int
	caseLimit  time.Duration
	trials     int
	fpDuration time.Duration
	burners    int
	verbose    bool

	dpRounds   int
	iperfTime  time.Duration
	progCalls  int
	progRepeat int
	fabricBin  string

	svcMax     int
	svcCalls   int
	svcConns   int
	svcWorkers int
	svcTries   int
}

func main() {
	// The bgp benchmark re-executes this binary inside a node's namespace
	// as a child speaker (see bgp/speakerproc).
	if speakerproc.IsChild() {
		os.Exit(speakerproc.Main())
	}
	var o options
	flag.StringVar(&o.only, "only", "", "run one benchmark: store, gossip, datapath, bgp, services or l2 (default all)")
	flag.StringVar(&o.out, "out", "", "also write the markdown report to this file")
	flag.IntVar(&o.rounds, "rounds", 2, "store: interleaved rounds (fabric, etcd, fabric, etcd, ...); medians are reported")
	flag.IntVar(&o.writes1, "writes1", 1000, "store: writes per case with 1 writer")
	flag.IntVar(&o.writes64, "writes64", 6000, "store: writes per case with 64 writers")
	flag.DurationVar(&o.caseLimit, "case-limit", 10*time.Second, "store: stop a case early after this long (the count done is reported)")
	flag.IntVar(&o.trials, "trials", 5, "gossip: failure-detection trials per pool size and profile")
	flag.DurationVar(&o.fpDuration, "fp-duration", 20*time.Second, "gossip: how long to watch for false failures under CPU load")
	flag.IntVar(&o.burners, "burners", runtime.NumCPU(), "gossip: busy-loop processes during the false-failure run (default: one per core)")
	flag.BoolVar(&o.verbose, "v", false, "log progress of the systems under test (noisy)")
	flag.IntVar(&o.dpRounds, "dp-rounds", 5, "datapath: interleaved throughput rounds over all paths; medians are reported")
	flag.DurationVar(&o.iperfTime, "iperf-time", 5*time.Second, "datapath: length of one iperf3 run")
	flag.IntVar(&o.progCalls, "prog-calls", 100_000, "datapath: BPF_PROG_TEST_RUN calls (one packet each) per program and ipcache size")
	flag.IntVar(&o.progRepeat, "prog-repeat", 100_000, "datapath: repeats per call in the cross-check of paths that are stable across repeats")
	flag.StringVar(&o.fabricBin, "fabric-bin", "", "datapath: fabric binary for the labs (default: go build ./fabric/cmd/fabric into a temporary folder)")
	// Fabric's Apply adds a service in about 16 ms on the 2-core VM (each
	// Maglev table is a new inner map, and updating a map of maps waits for
	// an RCU grace period), so 100k would take about half an hour.
	flag.IntVar(&o.svcMax, "services-max", 100000, "services: the most services loaded; sizes of the plan (10 to 100k) above it are replaced by it")
	flag.IntVar(&o.svcCalls, "svc-calls", 20_000, "services: BPF_PROG_TEST_RUN calls per case and size (at most about 19k: each new-connection call takes a fresh source port)")
	flag.IntVar(&o.svcConns, "svc-conns", 3000, "services: connections per cell of the connection-rate benchmark")
	flag.IntVar(&o.svcWorkers, "svc-workers", 2, "services: concurrent client workers")
	flag.IntVar(&o.svcTries, "svc-tries", 20, "services: add/remove tries with the most services loaded")
	flag.Parse()
	if o.only != "" && !slices.ContainsFunc(benchmarks, func(b benchmark) bool { return b.name == o.only }) {
		fmt.Fprintf(os.Stderr, "bench: -only %q: use store, gossip, datapath, bgp, services or l2\n", o.only)
		os.Exit(2)
	}
	if o.rounds < 1 || o.trials < 1 || o.writes1 < 1 || o.writes64 < 64 || o.burners < 0 {
		fmt.Fprintln(os.Stderr, "bench: -rounds and -trials must be >= 1, -writes1 >= 1, -writes64 >= 64, -burners >= 0")
		os.Exit(2)
	}
	if o.dpRounds < 1 || o.iperfTime < time.Second || o.progCalls < 1 || o.progRepeat < 1 || o.progRepeat > 1<<30 {
		fmt.Fprintln(os.Stderr, "bench: -dp-rounds, -prog-calls and -prog-repeat (at most 2^30) must be >= 1, -iperf-time >= 1s")
		os.Exit(2)
	}

	if o.svcMax < 10 || o.svcCalls < 100 || o.svcConns < 1 || o.svcWorkers < 1 || o.svcTries < 1 {
		fmt.Fprintln(os.Stderr, "bench: -services-max must be >= 10, -svc-calls >= 100, -svc-conns, -svc-workers and -svc-tries >= 1")
		os.Exit(2)
	}

	// Quiet by default: the systems under test log every election and every
	// suspicion, which would bury the report.
	level := slog.LevelError
	if o.verbose {
		level = slog.LevelInfo
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	cl := newCleanup()
	defer cl.run()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "bench: %s: cleaning up\n", s)
		stop()
		cl.run()
		os.Exit(130)
	}()

	code := run(ctx, o, cl)
	cl.run()
	os.Exit(code)
}

// benchmark is one section of the report.
type benchmark struct {
	name string
	run  func(ctx context.Context, o options, cl *cleanup, w io.Writer) error
}

// benchmarks in report order.
var benchmarks = []benchmark{{"store", benchStore}, {"gossip", benchGossip}, {"datapath", benchDatapath}, {"bgp", benchBGP}, {"services", benchServices}, {"l2", benchL2}}

func run(ctx context.Context, o options, cl *cleanup) int {
	fmt.Printf("# Fabric benchmarks\n")
	fresh := make(map[string][]byte)
	failed := false
	for _, b := range benchmarks {
		if o.only != "" && o.only != b.name {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		start := time.Now()
		var section bytes.Buffer
		w := io.MultiWriter(os.Stdout, &section)
		fmt.Fprintln(w)
		writeMachine(w, start, b.name)
		progress("%s: starting", b.name)
		if err := b.run(ctx, o, cl, w); err != nil {
			fmt.Fprintf(w, "\n**%s benchmark failed:** %v\n", b.name, err)
			progress("%s: %v", b.name, err)
			failed = true
		}
		fmt.Fprintf(w, "\nRun time: %s.\n", time.Since(start).Round(time.Second))
		fresh[b.name] = section.Bytes()
	}

	if ctx.Err() != nil {
		progress("interrupted: no report written")
		return 130
	}
	if o.out != "" {
		old, err := os.ReadFile(o.out)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "bench: read %s: %v\n", o.out, err)
			return 1
		}
		if err := os.WriteFile(o.out, mergeReport(old, fresh), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "bench: write %s: %v\n", o.out, err)
			return 1
		}
		progress("report written to %s", o.out)
	}
	if failed {
		return 1
	}
	return 0
}

// progress reports what the run is doing on stderr, so stdout stays the report.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// writeMachine writes the table that says when, how and where a section was
// measured.
func writeMachine(w io.Writer, now time.Time, benchmark string) {
	fmt.Fprintf(w, "| | |\n|---|---|\n")
	fmt.Fprintf(w, "| date | %s |\n", now.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "| command | `go run ./bench %s` |\n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(w, "| cpus (nproc) | %d (%s) |\n", runtime.NumCPU(), cpuModel())
	fmt.Fprintf(w, "| kernel | %s |\n", readTrim("/proc/sys/kernel/osrelease"))
	fmt.Fprintf(w, "| go | %s %s/%s |\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if benchmark == "store" {
		fmt.Fprintf(w, "| etcd | %s |\n", etcdVersion())
	}
	if benchmark == "datapath" {
		fmt.Fprintf(w, "| iperf3 | %s |\n", iperfVersion())
	}
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown model"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown model"
}

func etcdVersion() string {
	out, err := exec.Command("etcd", "--version").Output()
	if err != nil {
		return "not installed (apt-get install etcd-server, or `make bench`)"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(strings.TrimPrefix(first, "etcd Version:"))
}
