//go:build linux

package bpf

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func count[K comparable, V any](t *testing.T, m *ebpf.Map) int {
	t.Helper()
	var (
		k K
		v V
		n int
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestGCConntrackRoot fills the conntrack and per-connection service maps
// with entries of known ages and checks that GCConntrack removes exactly
// the expired ones, now and once time has moved on.
func TestGCConntrackRoot(t *testing.T) {
	fe := netip.MustParseAddrPort("10.96.0.10:80")
	d := progFixtureWith(t, []Service{{Frontend: fe, Proto: ProtoTCP, Maglev: rrTable(1, 7), AffinityTimeout: time.Minute,
		Backends: []Backend{{Addr: netip.MustParseAddrPort("10.210.2.10:8080")}}}})
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	// The machine may have booted less than the ages below ago: entries
	// are written in the future and GC runs base later still.
	const base = time.Hour
	now := uint64(ts.Nano())
	ago := func(d time.Duration) uint64 { return now + uint64(base-d) }
	key := func(sport uint16, proto uint8) ctKey {
		return ctKey{Saddr: [16]byte{10, 210, 1, 10}, Daddr: [16]byte{10, 96, 0, 10}, Sport: sport, Dport: 80, Proto: proto, Family: 4}
	}
	put := func(m *ebpf.Map, k, v any) {
		t.Helper()
		if err := m.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	// ct: established TCP 30 min idle (kept), unanswered TCP 2 min (gone),
	// closing TCP 20 s (gone), UDP 1 min (kept), UDP 10 min (gone).
	put(d.lxc.Ct, key(1, ProtoTCP), ctEntry{LastSeen: ago(30 * time.Minute), Flags: ctSeenReply})
	put(d.lxc.Ct, key(2, ProtoTCP), ctEntry{LastSeen: ago(2 * time.Minute)})
	put(d.lxc.Ct, key(3, ProtoTCP), ctEntry{LastSeen: ago(20 * time.Second), Flags: ctSeenReply | ctClosing})
	put(d.lxc.Ct, key(4, ProtoUDP), ctEntry{LastSeen: ago(time.Minute)})
	put(d.lxc.Ct, key(5, ProtoUDP), ctEntry{LastSeen: ago(10 * time.Minute)})
	// lb_ct: TCP 30 min (kept), UDP 10 min (gone); their revnat entries
	// follow them, and one without a connection goes.
	put(d.lxc.LbCt, key(1, ProtoTCP), lbCTEntry{LastSeen: ago(30 * time.Minute), BackendID: 1})
	put(d.lxc.LbCt, key(5, ProtoUDP), lbCTEntry{LastSeen: ago(10 * time.Minute), BackendID: 1})
	rev := func(sport uint16, proto uint8) (ctKey, lbRevnat) {
		k := ctKey{Saddr: [16]byte{10, 210, 2, 10}, Daddr: [16]byte{10, 210, 1, 10}, Sport: 8080, Dport: sport, Proto: proto, Family: 4}
		return k, lbRevnat{Addr: [16]byte{10, 96, 0, 10}, Client: [16]byte{10, 210, 1, 10}, Port: 80}
	}
	for _, c := range []struct {
		sport uint16
		proto uint8
	}{{1, ProtoTCP}, {5, ProtoUDP}, {9, ProtoTCP}} {
		k, v := rev(c.sport, c.proto)
		put(d.lxc.LbRevnat, k, v)
	}
	// lb_affinity: the service's (1 min timeout) 30 s (kept) and 2 min
	// (gone), and one of a service that is gone.
	svcs, _, _ := serviceIDs(t, &node{dp: d})
	var id uint32
	for _, v := range svcs {
		id = v
	}
	put(d.lxc.LbAffinity, lbAffinityKey{SvcID: id, Family: 4, Addr: [16]byte{1}}, lbAffinity{LastSeen: ago(30 * time.Second), BackendID: 1})
	put(d.lxc.LbAffinity, lbAffinityKey{SvcID: id, Family: 4, Addr: [16]byte{2}}, lbAffinity{LastSeen: ago(2 * time.Minute), BackendID: 1})
	put(d.lxc.LbAffinity, lbAffinityKey{SvcID: id + 100, Family: 4, Addr: [16]byte{3}}, lbAffinity{LastSeen: ago(time.Second), BackendID: 1})
	// lb_nat: TCP 30 min (kept), UDP 10 min (gone).
	natKey := func(port uint16, proto uint8) ctKey {
		return ctKey{Saddr: [16]byte{10, 210, 2, 10}, Daddr: [16]byte{10, 77, 0, 1}, Sport: 8080, Dport: port, Proto: proto, Family: 4}
	}
	put(d.lxc.LbNat, natKey(61000, ProtoTCP), lbNAT{LastSeen: ago(30 * time.Minute)})
	put(d.lxc.LbNat, natKey(61001, ProtoUDP), lbNAT{LastSeen: ago(10 * time.Minute)})

	check := func(at time.Time, wantRemoved, ct, lbct, revnat, aff, nat int) {
		t.Helper()
		removed, err := d.GCConntrack(at)
		if err != nil {
			t.Fatal(err)
		}
		if removed != wantRemoved {
			t.Errorf("GCConntrack removed %d entries; want %d", removed, wantRemoved)
		}
		for _, c := range []struct {
			name      string
			got, want int
		}{{"ct", count[ctKey, ctEntry](t, d.lxc.Ct), ct}, {"lb_ct", count[ctKey, lbCTEntry](t, d.lxc.LbCt), lbct},
			{"lb_revnat", count[ctKey, lbRevnat](t, d.lxc.LbRevnat), revnat},
			{"lb_affinity", count[lbAffinityKey, lbAffinity](t, d.lxc.LbAffinity), aff},
			{"lb_nat", count[ctKey, lbNAT](t, d.lxc.LbNat), nat}} {
			if c.got != c.want {
				t.Errorf("%s holds %d entries after GC; want %d", c.name, c.got, c.want)
			}
		}
	}
	check(time.Now().Add(base), 3+1+2+2+1, 2, 1, 1, 1, 1)
	k1, _ := rev(1, ProtoTCP)
	var rv lbRevnat
	if err := d.lxc.LbRevnat.Lookup(k1, &rv); err != nil {
		t.Errorf("the live connection's revnat entry is gone: %v", err)
	}
	check(time.Now().Add(base), 0, 2, 1, 1, 1, 1) // nothing more expired
	check(time.Now().Add(base+2*time.Hour), 2+1+1+1+1, 0, 0, 0, 0, 0)
}
