//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// This file exists for bench/ only: it lets the benchmark time the loaded
// programs with BPF_PROG_TEST_RUN without bench/ importing cilium/ebpf
// (DESIGN: only bpf/ does). Nothing in the agent uses it.

// BenchProgram is one eBPF TC program opened for timing with
// BPF_PROG_TEST_RUN. Its own file descriptor keeps it loaded after the
// datapath it came from is closed; Close releases it.
type BenchProgram struct {
	prog *ebpf.Program
}

// ProgramForBenchmark returns a handle on one of d's programs: "lxc" (the
// endpoint veth's ingress: the send path), "underlay" (the underlay
// interface's ingress: Geneve decapsulation or the native receive path) or
// "overlay" (the VXLAN device's ingress; VXLAN mode only). The program reads
// the same maps as the attached one, so what Apply writes is what it sees.
func (d *Datapath) ProgramForBenchmark(name string) (*BenchProgram, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("program for benchmark: datapath is closed")
	}
	var p *ebpf.Program
	switch name {
	case "lxc":
		p = d.lxc.LxcIngress
	case "underlay":
		p = d.underlay.UnderlayIngress
	case "overlay":
		if d.overlay == nil {
			return nil, fmt.Errorf("program for benchmark: no overlay program in %s mode", d.cfg.Mode)
		}
		p = d.overlay.OverlayIngress
	default:
		return nil, fmt.Errorf("program for benchmark: %q is not a program; use lxc, underlay or overlay", name)
	}
	c, err := p.Clone()
	if err != nil {
		return nil, fmt.Errorf("program for benchmark: clone %s: %w", name, err)
	}
	return &BenchProgram{prog: c}, nil
}

// EmptyBenchProgram loads a TC program that only returns TC_ACT_OK: the
// baseline that shows what BPF_PROG_TEST_RUN itself costs.
func EmptyBenchProgram() (*BenchProgram, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "bench_empty",
		Type:         ebpf.SchedCLS,
		Instructions: asm.Instructions{asm.LoadImm(asm.R0, 0, asm.DWord), asm.Return()},
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("load empty tc program: %w", err)
	}
	return &BenchProgram{prog: p}, nil
}

// Run runs the program once on a copy of pkt and returns its verdict (the
// TC_ACT_* value) and the packet as the program left it.
func (b *BenchProgram) Run(pkt []byte) (uint32, []byte, error) {
	opts := ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+512)}
	ret, err := b.prog.Run(&opts)
	if err != nil {
		return 0, nil, fmt.Errorf("test run: %w", err)
	}
	return ret, opts.DataOut, nil
}

// Time runs the program repeat times in one BPF_PROG_TEST_RUN call and
// returns the verdict of the last run and the kernel's own measure of the
// time per run (nanosecond resolution, timer overhead included). The kernel
// builds the packet from pkt once per call and hands the same buffer to every
// repeat, so with repeat > 1 a program that changes the packet sees its own
// output; only repeat 1 times the path of pkt for every program.
func (b *BenchProgram) Time(pkt []byte, repeat int) (uint32, time.Duration, error) {
	ret, d, err := b.prog.Benchmark(pkt, repeat, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("test run: %w", err)
	}
	return ret, d, nil
}

// Close releases the program.
func (b *BenchProgram) Close() error { return b.prog.Close() }
