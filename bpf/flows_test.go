package bpf

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

func TestDecodeFlow(t *testing.T) {
	if n := binary.Size(flowEvent{}); n != flowEventSize {
		t.Fatalf("flowEvent is %d bytes; want %d (struct flow_event)", n, flowEventSize)
	}
	raw := make([]byte, flowEventSize)
	le := binary.LittleEndian
	le.PutUint64(raw[0:], 1_000_000_000) // ts
	le.PutUint32(raw[8:], 42)            // ifindex
	le.PutUint32(raw[12:], 0x1a000)      // src identity
	le.PutUint32(raw[16:], 0x11000)      // dst identity
	copy(raw[20:], []byte{10, 0, 0, 1})
	copy(raw[36:], []byte{10, 0, 0, 2})
	le.PutUint16(raw[52:], 40000)
	le.PutUint16(raw[54:], 80)
	copy(raw[56:], []byte{4, 6, 0, 1, 4, 3}) // family, proto, dir, verdict, reason, type
	now := time.Unix(1700000000, 0)
	f, err := decodeFlow(raw, now, 3_000_000_000)
	if err != nil {
		t.Fatal(err)
	}
	want := Flow{
		Time: now.Add(-2 * time.Second), IfIndex: 42,
		Src:   netip.MustParseAddrPort("10.0.0.1:40000"),
		Dst:   netip.MustParseAddrPort("10.0.0.2:80"),
		Proto: 6, SrcIdentity: 0x1a000, DstIdentity: 0x11000,
		Direction: Ingress, Event: FlowDrop, Dropped: true, Reason: "policy",
	}
	if f != want {
		t.Errorf("decoded %+v\nwant    %+v", f, want)
	}

	// IPv6, forwarded, egress, new.
	a6 := netip.MustParseAddr("fd00::1").As16()
	b6 := netip.MustParseAddr("fd00::2").As16()
	copy(raw[20:], a6[:])
	copy(raw[36:], b6[:])
	copy(raw[56:], []byte{6, 17, 1, 0, 0, 1})
	f, err = decodeFlow(raw, now, 1_000_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if f.Src != netip.MustParseAddrPort("[fd00::1]:40000") || f.Dst != netip.MustParseAddrPort("[fd00::2]:80") ||
		f.Event != FlowNew || f.Dropped || f.Reason != "" || f.Direction != Egress || f.Proto != 17 || !f.Time.Equal(now) {
		t.Errorf("decoded %+v", f)
	}
	if _, err := decodeFlow(raw[:10], now, 0); err == nil {
		t.Error("a short record decoded")
	}
}
