package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// benchDatapath runs both datapath benchmarks (throughput.go,
// perpacket.go); one failing does not stop the other, and the error names
// which failed.
func benchDatapath(ctx context.Context, o options, cl *cleanup, w io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: creates network namespaces, brings up labs and loads eBPF programs")
	}
	var errs []error
	progress("datapath: throughput")
	if err := benchThroughput(ctx, o, cl, w); err != nil {
		errs = append(errs, fmt.Errorf("throughput: %w", err))
	}
	if ctx.Err() == nil {
		progress("datapath: per-packet cost")
		if err := benchPerPacket(ctx, o, cl, w); err != nil {
			errs = append(errs, fmt.Errorf("per-packet cost: %w", err))
		}
	}
	return errors.Join(errs...)
}

func iperfVersion() string {
	out, err := exec.Command("iperf3", "--version").Output()
	if err != nil && len(out) == 0 {
		return "not installed (apt-get install iperf3)"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(first)
}

func nproc() int { return runtime.NumCPU() }
