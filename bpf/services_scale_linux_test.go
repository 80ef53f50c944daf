//go:build linux

package bpf

import (
	"encoding/binary"
	"errors"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// scaleAddr is base plus i, so that every service and backend of a scale
// test has an address of its own.
func scaleAddr(base [4]byte, i int) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(base[:])+uint32(i))
	return netip.AddrFrom4(b)
}

// scaleServices returns n TCP services as bench/services.go builds them: two
// backends each (backend i and i+1, so neighbours share one) and a
// 251-slot Maglev table.
func scaleServices(n int) []Service {
	out := make([]Service, 0, n+1)
	for i := range n {
		out = append(out, Service{
			Frontend: netip.AddrPortFrom(scaleAddr([4]byte{10, 100, 0, 0}, i), 80),
			Proto:    ProtoTCP,
			Backends: []Backend{{netip.AddrPortFrom(scaleAddr([4]byte{10, 104, 0, 0}, i), 8080)},
				{netip.AddrPortFrom(scaleAddr([4]byte{10, 104, 0, 0}, i+1), 8080)}},
			Maglev: rrTable(2, 251),
		})
	}
	return out
}

// scaleFixture opens a Geneve-mode datapath (no device to create) in a
// namespace of its own, with service maps sized for n services.
func scaleFixture(t *testing.T, n int) (*Datapath, string) {
	t.Helper()
	cfg := Config{PinDir: newPinDir(t), Mode: ModeGeneve, UnderlayIfName: "lo",
		UnderlayIPv4: netip.MustParseAddr("10.77.0.1"), GenevePort: 6081,
		ServiceEntries: max(n+16, DefaultServiceEntries), BackendEntries: max(n+16, DefaultBackendEntries)}
	ns := newNetNS(t, "scl")
	return openScale(t, ns, cfg), ns
}

func openScale(t *testing.T, ns string, cfg Config) *Datapath {
	t.Helper()
	var d *Datapath
	err := inNS(ns, func() error {
		var err error
		d, err = Open(cfg)
		return err
	})
	if err != nil {
		t.Fatalf("open datapath: %v", err)
	}
	t.Cleanup(func() { _ = d.Destroy() }) // a no-op error once closed
	return d
}

// scaleSizes are the service counts TestServiceApplyScaleRoot times:
// FABRIC_BPF_SCALE (e.g. "1000,5000,20000") or a small default that keeps
// the package's tests quick.
func scaleSizes(t *testing.T) []int {
	env := os.Getenv("FABRIC_BPF_SCALE")
	if env == "" {
		return []int{300}
	}
	var out []int
	for _, f := range strings.Split(env, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			t.Fatalf("FABRIC_BPF_SCALE=%q: %q is not a service count; give counts separated by commas, e.g. 1000,5000", env, f)
		}
		out = append(out, n)
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestServiceApplyScaleRoot times an Apply of n fresh services and the
// Apply that adds, then removes, one service with n present, and checks
// that the datapath ends up holding what was applied. The timings are
// logged (go test -v -run ScaleRoot, FABRIC_BPF_SCALE=1000,5000,20000).
func TestServiceApplyScaleRoot(t *testing.T) {
	for _, n := range scaleSizes(t) {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			d, ns := scaleFixture(t, n)
			svcs := scaleServices(n)
			apply := func(s []Service) time.Duration {
				t.Helper()
				start := time.Now()
				if err := inNS(ns, func() error { return d.Apply(State{Services: s}) }); err != nil {
					t.Fatalf("apply %d services: %v", len(s), err)
				}
				return time.Since(start)
			}
			fresh := apply(svcs)
			again := apply(svcs)
			extra := Service{Frontend: netip.MustParseAddrPort("10.97.0.1:80"), Proto: ProtoTCP,
				Backends: []Backend{{netip.MustParseAddrPort("10.105.0.1:8080")}}, Maglev: rrTable(1, 251)}
			more := append(slices.Clone(svcs), extra)
			tries := 10
			var adds, removes []time.Duration
			for range tries {
				adds = append(adds, apply(more))
				removes = append(removes, apply(svcs))
			}
			t.Logf("n=%d: fresh apply %v (%v/service), same state again %v, add one %v, remove one %v (medians of %d)",
				n, fresh.Round(time.Millisecond), (fresh / time.Duration(n)).Round(time.Microsecond), again.Round(time.Millisecond),
				median(adds).Round(time.Microsecond), median(removes).Round(time.Microsecond), tries)
			got, err := d.Services()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != n {
				t.Fatalf("Services() lists %d services; want %d", len(got), n)
			}
			byFE := make(map[netip.AddrPort]Service, n)
			for _, s := range got {
				byFE[s.Frontend] = s
			}
			for _, w := range svcs {
				g, ok := byFE[w.Frontend]
				if !ok || !sameSlots(g, w) {
					t.Fatalf("service %s reads back as %+v; want %+v", w.Frontend, g, w)
				}
			}
		})
	}
}

// lbMaps reads the service maps: frontend → service id, backend → backend
// id, service id → inner map id.
func lbMaps(t *testing.T, d *Datapath) (svcs map[lbSvcKey]uint32, backends map[lbBackend]uint32, tables map[uint32]ebpf.MapID) {
	t.Helper()
	svcs, backends, tables = map[lbSvcKey]uint32{}, map[lbBackend]uint32{}, map[uint32]ebpf.MapID{}
	var (
		k     lbSvcKey
		v     lbSvc
		id    uint32
		be    lbBackend
		inner ebpf.MapID
	)
	it := d.lxc.LbServices.Iterate()
	for it.Next(&k, &v) {
		svcs[k] = v.ID
	}
	bit := d.lxc.LbBackends.Iterate()
	for bit.Next(&id, &be) {
		backends[be] = id
	}
	mit := d.lxc.LbMaglev.Iterate()
	for mit.Next(&id, &inner) {
		tables[id] = inner
	}
	if err := errors.Join(it.Err(), bit.Err(), mit.Err()); err != nil {
		t.Fatalf("read service maps: %v", err)
	}
	return svcs, backends, tables
}

// TestServiceApplyRepairRoot: an Apply that fails midway (lb_services is
// full) leaves the maps to the next Apply, which makes them hold exactly its
// services with the ids they had; after a restart an Apply of the same
// state writes nothing, and one changed table replaces only its inner map.
func TestServiceApplyRepairRoot(t *testing.T) {
	cfg := Config{PinDir: newPinDir(t), Mode: ModeGeneve, UnderlayIfName: "lo",
		UnderlayIPv4: netip.MustParseAddr("10.77.0.1"), GenevePort: 6081, ServiceEntries: 16, BackendEntries: 64}
	ns := newNetNS(t, "rep")
	d := openScale(t, ns, cfg)
	apply := func(s []Service) error {
		return inNS(ns, func() error { return d.Apply(State{Services: s}) })
	}
	svcs := scaleServices(10)
	if err := apply(svcs); err != nil {
		t.Fatal(err)
	}
	ids, bids, tables := lbMaps(t, d)
	if len(ids) != 10 || len(bids) != 11 || len(tables) != 10 {
		t.Fatalf("after 10 services: %d frontends, %d backends, %d tables; want 10, 11, 10", len(ids), len(bids), len(tables))
	}
	if err := apply(scaleServices(20)); err == nil {
		t.Fatal("an Apply of 20 services into maps of 16 did not fail")
	}
	if err := apply(svcs); err != nil {
		t.Fatalf("the Apply after a failed one: %v", err)
	}
	check := func(when string) map[uint32]ebpf.MapID {
		t.Helper()
		ids2, bids2, tables2 := lbMaps(t, d)
		if !maps.Equal(ids, ids2) || !maps.Equal(bids, bids2) {
			t.Errorf("%s: ids changed: frontends %v → %v, backends %v → %v", when, ids, ids2, bids, bids2)
		}
		if len(tables2) != len(ids) {
			t.Errorf("%s: %d maglev tables for %d services", when, len(tables2), len(ids))
		}
		got, err := d.Services()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(svcs) {
			t.Fatalf("%s: Services() lists %d; want %d", when, len(got), len(svcs))
		}
		for _, g := range got {
			i := slices.IndexFunc(svcs, func(s Service) bool { return s.Frontend == g.Frontend })
			if i < 0 || !sameSlots(g, svcs[i]) {
				t.Errorf("%s: service %s reads back as %+v", when, g.Frontend, g)
			}
		}
		return tables2
	}
	tables = check("repaired")

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openScale(t, ns, cfg)
	if err := apply(svcs); err != nil {
		t.Fatal(err)
	}
	if again := check("after a restart"); !maps.Equal(tables, again) {
		t.Errorf("an Apply of the same state after a restart replaced maglev tables: %v → %v", tables, again)
	}
	svcs[3].Maglev = slices.Clone(svcs[3].Maglev)
	svcs[3].Maglev[0] = 1
	if err := apply(svcs); err != nil {
		t.Fatal(err)
	}
	after := check("after changing one table")
	for id, inner := range tables {
		if changed := after[id] != inner; changed != (id == ids[mustKey(t, svcs[3])]) {
			t.Errorf("service id %d: inner map %d → %d", id, inner, after[id])
		}
	}
}

func mustKey(t *testing.T, s Service) lbSvcKey {
	t.Helper()
	cs, err := compileService(s)
	if err != nil {
		t.Fatal(err)
	}
	return cs.key
}

// sameSlots says whether every Maglev slot of a and b sends to the same
// backend (Services lists the backends in the order of their first slot,
// which need not be the order they were applied in).
func sameSlots(a, b Service) bool {
	if len(a.Maglev) != len(b.Maglev) {
		return false
	}
	for i := range a.Maglev {
		if a.Backends[a.Maglev[i]] != b.Backends[b.Maglev[i]] {
			return false
		}
	}
	return true
}
