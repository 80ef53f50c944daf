//go:build !linux

package bpf

import (
	"context"
	"fmt"
	"runtime"
	"time"
)

var errOS = fmt.Errorf("the eBPF datapath needs Linux, this is %s: %w", runtime.GOOS, ErrNotSupported)

// Datapath is a node's loaded eBPF datapath; it only exists on Linux.
type Datapath struct{}

// Open returns ErrNotSupported outside Linux.
func Open(cfg Config) (*Datapath, error) { return nil, errOS }

func (d *Datapath) Apply(st State) error                           { return errOS }
func (d *Datapath) IngressSeen() (map[[2]uint32]uint64, error)     { return nil, errOS }
func (d *Datapath) Drops() (map[string]uint64, error)              { return nil, errOS }
func (d *Datapath) IPCache() ([]IPCacheEntry, error)               { return nil, errOS }
func (d *Datapath) Services() ([]Service, error)                   { return nil, errOS }
func (d *Datapath) Flows(ctx context.Context) (<-chan Flow, error) { return nil, errOS }
func (d *Datapath) FlowsLost() uint64                              { return 0 }
func (d *Datapath) FlowEventsLost() (uint64, error)                { return 0, errOS }
func (d *Datapath) GCConntrack(now time.Time) (int, error)         { return 0, errOS }
func (d *Datapath) Close() error                                   { return nil }
func (d *Datapath) Destroy() error                                 { return errOS }
