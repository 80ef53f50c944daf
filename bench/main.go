// Command bench compares Fabric's infrastructure with a baseline measured in
// the same run, on the same machine, and reports ratios:
//
//   - store: writes to a 3-server Fabric store through a client node over its
//     mutual-TLS RPC, against writes to a 3-member etcd cluster through its
//     JSON gateway, at 1 and 64 concurrent writers;
//   - gossip: time for every member of a pool to see a crashed member as
//     failed, Fabric's tuned timers against memberlist's stock LAN timers,
//     and false failures while the CPU is saturated.
//
// All traffic stays on 127.0.0.1. Every process and directory it makes is
// removed on exit, also on SIGINT/SIGTERM. A benchmark is not a test: the
// program fails only when it cannot measure, never on a timing.
//
// Usage: go run ./bench [-only store|gossip] [-out bench/RESULTS.md]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"
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
}

func main() {
	var o options
	flag.StringVar(&o.only, "only", "", "run one benchmark: store or gossip (default both)")
	flag.StringVar(&o.out, "out", "", "also write the markdown report to this file")
	flag.IntVar(&o.rounds, "rounds", 2, "store: interleaved rounds (fabric, etcd, fabric, etcd, ...); medians are reported")
	flag.IntVar(&o.writes1, "writes1", 1000, "store: writes per case with 1 writer")
	flag.IntVar(&o.writes64, "writes64", 6000, "store: writes per case with 64 writers")
	flag.DurationVar(&o.caseLimit, "case-limit", 10*time.Second, "store: stop a case early after this long (the count done is reported)")
	flag.IntVar(&o.trials, "trials", 5, "gossip: failure-detection trials per pool size and profile")
	flag.DurationVar(&o.fpDuration, "fp-duration", 20*time.Second, "gossip: how long to watch for false failures under CPU load")
	flag.IntVar(&o.burners, "burners", runtime.NumCPU(), "gossip: busy-loop processes during the false-failure run (default: one per core)")
	flag.BoolVar(&o.verbose, "v", false, "log progress of the systems under test (noisy)")
	flag.Parse()
	switch o.only {
	case "", "store", "gossip":
	default:
		fmt.Fprintf(os.Stderr, "bench: -only %q: use store or gossip\n", o.only)
		os.Exit(2)
	}
	if o.rounds < 1 || o.trials < 1 || o.writes1 < 1 || o.writes64 < 64 || o.burners < 0 {
		fmt.Fprintln(os.Stderr, "bench: -rounds and -trials must be >= 1, -writes1 >= 1, -writes64 >= 64, -burners >= 0")
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

func run(ctx context.Context, o options, cl *cleanup) int {
	start := time.Now()
	var report bytes.Buffer
	w := io.MultiWriter(os.Stdout, &report)
	fmt.Fprintf(w, "# Fabric benchmarks\n\n")
	writeMachine(w, start)

	failed := false
	if o.only == "" || o.only == "store" {
		progress("store: starting")
		if err := benchStore(ctx, o, cl, w); err != nil {
			fmt.Fprintf(w, "\n**store benchmark failed:** %v\n", err)
			progress("store: %v", err)
			failed = true
		}
	}
	if ctx.Err() == nil && (o.only == "" || o.only == "gossip") {
		progress("gossip: starting")
		if err := benchGossip(ctx, o, cl, w); err != nil {
			fmt.Fprintf(w, "\n**gossip benchmark failed:** %v\n", err)
			progress("gossip: %v", err)
			failed = true
		}
	}
	fmt.Fprintf(w, "\nTotal run time: %s.\n", time.Since(start).Round(time.Second))

	if ctx.Err() != nil {
		progress("interrupted: no report written")
		return 130
	}
	if o.out != "" {
		if err := os.WriteFile(o.out, report.Bytes(), 0o644); err != nil {
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

func writeMachine(w io.Writer, now time.Time) {
	fmt.Fprintf(w, "| | |\n|---|---|\n")
	fmt.Fprintf(w, "| date | %s |\n", now.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "| command | `go run ./bench %s` |\n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(w, "| cpus (nproc) | %d (%s) |\n", runtime.NumCPU(), cpuModel())
	fmt.Fprintf(w, "| kernel | %s |\n", readTrim("/proc/sys/kernel/osrelease"))
	fmt.Fprintf(w, "| go | %s %s/%s |\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "| etcd | %s |\n", etcdVersion())
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
