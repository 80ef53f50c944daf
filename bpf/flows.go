package bpf

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"
)

// FlowEvent is what a Flow reports: the first packet of a connection, its
// end (the first TCP FIN or RST), or a drop.
type FlowEvent string

const (
	FlowNew  FlowEvent = "new"
	FlowEnd  FlowEvent = "end"
	FlowDrop FlowEvent = "drop"
)

// Flow is one event of the datapath's flows ring buffer (include/flows.h).
type Flow struct {
	Time                     time.Time // wall clock, converted from the kernel's monotonic clock
	IfIndex                  int       // the endpoint's host veth; 0 where no local endpoint is known
	Src, Dst                 netip.AddrPort
	Proto                    uint8
	SrcIdentity, DstIdentity uint32 // as known where the event was emitted; 0: unknown
	Direction                Direction
	Event                    FlowEvent
	Dropped                  bool
	Reason                   string // the drop reason ("policy", ...), "" when forwarded
	// Service is the frontend a workload's connection was sent to, when
	// the datapath translated it to Dst (the client's egress events);
	// invalid otherwise.
	Service netip.AddrPort
}

// flowEvent mirrors struct flow_event of include/flows.h.
type flowEvent struct {
	Ts          uint64
	Ifindex     uint32
	SrcIdentity uint32
	DstIdentity uint32
	Saddr       [16]uint8
	Daddr       [16]uint8
	Sport       uint16
	Dport       uint16
	Family      uint8
	Proto       uint8
	Dir         uint8
	Verdict     uint8
	Reason      uint8
	Type        uint8
	Pad         [2]uint8
	SvcAddr     [16]uint8
	SvcPort     uint16
	Pad2        [6]uint8
}

// dropReasons names the METRIC_DROP_* indexes of include/common.h; the
// metrics map also holds METRIC_FLOW_EVENTS_LOST (metricFlowEventsLost),
// which is no drop: its name is empty.
var dropReasons = []string{"unknown_destination", "spoofed_source", "encap", "decap", "policy", "", "no_service_backend", "nat_ports_exhausted"}

const metricFlowEventsLost = 5

// flowEventSize is the size of struct flow_event.
const flowEventSize = 88

var flowEventTypes = map[uint8]FlowEvent{1: FlowNew, 2: FlowEnd, 3: FlowDrop}

// decodeFlow decodes one ring buffer record (the BPF target is little
// endian). wallNow and monoNow are the wall clock and CLOCK_MONOTONIC (the
// clock of bpf_ktime_get_ns) read at the same moment.
func decodeFlow(raw []byte, wallNow time.Time, monoNow uint64) (Flow, error) {
	if len(raw) < flowEventSize {
		return Flow{}, errors.New("flow event: short record")
	}
	le := binary.LittleEndian
	var e flowEvent
	e.Ts = le.Uint64(raw[0:])
	e.Ifindex = le.Uint32(raw[8:])
	e.SrcIdentity = le.Uint32(raw[12:])
	e.DstIdentity = le.Uint32(raw[16:])
	copy(e.Saddr[:], raw[20:36])
	copy(e.Daddr[:], raw[36:52])
	e.Sport = le.Uint16(raw[52:])
	e.Dport = le.Uint16(raw[54:])
	e.Family, e.Proto, e.Dir, e.Verdict, e.Reason, e.Type = raw[56], raw[57], raw[58], raw[59], raw[60], raw[61]
	copy(e.SvcAddr[:], raw[64:80])
	e.SvcPort = le.Uint16(raw[80:])
	return e.flow(wallNow, monoNow), nil
}

func (e *flowEvent) flow(wallNow time.Time, monoNow uint64) Flow {
	f := Flow{
		Time:        wallNow.Add(-time.Duration(int64(monoNow - e.Ts))),
		IfIndex:     int(e.Ifindex),
		Proto:       e.Proto,
		SrcIdentity: e.SrcIdentity,
		DstIdentity: e.DstIdentity,
		Direction:   Direction(e.Dir),
		Event:       flowEventTypes[e.Type],
		Dropped:     e.Verdict == 1,
	}
	if f.Event == "" {
		f.Event = FlowEvent("unknown")
	}
	var src, dst netip.Addr
	switch e.Family {
	case 4:
		src = netip.AddrFrom4([4]byte(e.Saddr[:4]))
		dst = netip.AddrFrom4([4]byte(e.Daddr[:4]))
	case 6:
		src = netip.AddrFrom16(e.Saddr)
		dst = netip.AddrFrom16(e.Daddr)
	}
	if src.IsValid() {
		f.Src = netip.AddrPortFrom(src, e.Sport)
		f.Dst = netip.AddrPortFrom(dst, e.Dport)
	}
	if e.SvcPort != 0 {
		svc := netip.AddrFrom16(e.SvcAddr)
		if e.Family == 4 {
			svc = netip.AddrFrom4([4]byte(e.SvcAddr[:4]))
		}
		f.Service = netip.AddrPortFrom(svc, e.SvcPort)
	}
	if f.Dropped {
		if int(e.Reason) < len(dropReasons) && dropReasons[e.Reason] != "" {
			f.Reason = dropReasons[e.Reason]
		} else {
			f.Reason = "unknown"
		}
	}
	return f
}
