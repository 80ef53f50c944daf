//go:build linux

package bpf

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// flowsBuffer is how many decoded flows a Flows channel holds for a slow
// consumer before further ones are dropped (and counted by FlowsLost).
const flowsBuffer = 4096

// Flows streams the datapath's flow events (include/flows.h): every drop,
// the first packet of every connection and the end (first TCP FIN or RST)
// of tracked connections, as this node's programs see them. It opens a
// reader on the pinned flows ring buffer. The channel closes when ctx ends
// or the datapath is closed. A consumer that falls behind by more than the
// channel's buffer loses flows, counted by FlowsLost; events the kernel
// could not write (the ring buffer full) are counted by FlowEventsLost.
//
// One reader per node: the ring buffer hands each event to one reader
// only, so two Flows callers at once would each see part of the events.
func (d *Datapath) Flows(ctx context.Context) (<-chan Flow, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errors.New("flows: datapath is closed")
	}
	m, err := d.lxc.Flows.Clone() // outlives Close of the datapath's objects
	done := d.done
	d.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("flows: %w", err)
	}
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("flows: open ring buffer reader: %w", err)
	}
	ch := make(chan Flow, flowsBuffer)
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		case <-stop:
		}
		rd.Close() // unblocks Read
	}()
	go func() {
		defer close(ch)
		defer m.Close()
		defer close(stop)
		var rec ringbuf.Record
		for {
			if err := rd.ReadInto(&rec); err != nil {
				if errors.Is(err, ringbuf.ErrClosed) {
					return
				}
				d.log.Warn("flows: read ring buffer", "err", err)
				return
			}
			var ts unix.Timespec
			_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
			f, err := decodeFlow(rec.RawSample, time.Now(), uint64(ts.Nano()))
			if err != nil {
				d.flowsLost.Add(1)
				continue
			}
			select {
			case ch <- f:
			default:
				d.flowsLost.Add(1)
			}
		}
	}()
	return ch, nil
}

// FlowsLost returns how many flow events were read from the ring buffer
// but dropped because the Flows consumer did not keep up.
func (d *Datapath) FlowsLost() uint64 { return d.flowsLost.Load() }

// FlowEventsLost returns how many flow events the datapath could not write
// because the ring buffer was full (the metrics map's flow_events_lost).
func (d *Datapath) FlowEventsLost() (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, errors.New("flow events lost: datapath is closed")
	}
	var vals []uint64
	if err := d.lxc.Metrics.Lookup(uint32(metricFlowEventsLost), &vals); err != nil {
		return 0, fmt.Errorf("read metrics: %w", err)
	}
	var sum uint64
	for _, v := range vals {
		sum += v
	}
	return sum, nil
}
