//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
)

// maglevCache is what a service's inner map was last seen to hold.
type maglevCache struct {
	mapID ebpf.MapID
	table []uint32
}

// applyServices makes the service maps hold exactly svcs. Ids are kept
// where a frontend or backend already has one in the pinned maps (so they
// survive Apply and agent restarts, and an established connection keeps the
// backend id it recorded); new ones take free ids. Order: backends, then
// the Maglev tables, then the frontends that point at them; what went away
// is deleted last. A table that changed gets a new inner map, swapped in
// atomically; unchanged tables are not written.
func (d *Datapath) applyServices(svcs []compiledService) error {
	curBackends := make(map[lbBackend]uint32)
	var (
		id  uint32
		be  lbBackend
		sk  lbSvcKey
		sv  lbSvc
		ids = make(map[uint32]bool)
	)
	it := d.lxc.LbBackends.Iterate()
	for it.Next(&id, &be) {
		curBackends[be] = id
		ids[id] = true
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read lb_backends: %w", err)
	}
	curSvcs := make(map[lbSvcKey]uint32)
	svcIDs := make(map[uint32]bool)
	sit := d.lxc.LbServices.Iterate()
	for sit.Next(&sk, &sv) {
		curSvcs[sk] = sv.ID
		svcIDs[sv.ID] = true
	}
	if err := sit.Err(); err != nil {
		return fmt.Errorf("read lb_services: %w", err)
	}

	wantBackends := make(map[uint32]lbBackend)
	backendID := func(b lbBackend) uint32 {
		id, ok := curBackends[b]
		if !ok {
			id = freeID(ids)
			curBackends[b] = id
		}
		wantBackends[id] = b
		return id
	}
	wantSvcs := make(map[lbSvcKey]lbSvc)
	wantTables := make(map[uint32][]uint32)
	for _, cs := range svcs {
		id, ok := curSvcs[cs.key]
		if !ok {
			id = freeID(svcIDs)
			curSvcs[cs.key] = id
		}
		v := cs.svc
		v.ID = id
		wantSvcs[cs.key] = v
		bids := make([]uint32, len(cs.backends))
		for i, b := range cs.backends {
			bids[i] = backendID(b)
		}
		if len(cs.table) > 0 {
			t := make([]uint32, len(cs.table))
			for i, idx := range cs.table {
				t[i] = bids[idx]
			}
			wantTables[id] = t
		}
	}

	errs := []error{putMap(d.lxc.LbBackends, wantBackends)}
	for id, t := range wantTables {
		errs = append(errs, d.putMaglev(id, t))
	}
	errs = append(errs, syncMap(d.lxc.LbServices, wantSvcs))
	// Tables of services that left, or lost every backend.
	var (
		k     uint32
		inner ebpf.MapID
		stale []uint32
	)
	mit := d.lxc.LbMaglev.Iterate()
	for mit.Next(&k, &inner) {
		if _, ok := wantTables[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := mit.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read lb_maglev: %w", err))
	}
	for _, k := range stale {
		delete(d.tables, k)
		if err := d.lxc.LbMaglev.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete from lb_maglev: %w", err))
		}
	}
	errs = append(errs, deleteStale(d.lxc.LbBackends, wantBackends))
	return errors.Join(errs...)
}

// freeID takes an id (from 1) not in used, and marks it used: one above
// the highest in use, so that the id of a backend removed a moment ago (whose
// connections lb_ct may still name) is not handed to a new one; the lowest
// free id once the ids run out.
func freeID(used map[uint32]bool) uint32 {
	var hi uint32
	for id := range used {
		hi = max(hi, id)
	}
	if hi < ^uint32(0) {
		used[hi+1] = true
		return hi + 1
	}
	for id := uint32(1); ; id++ {
		if !used[id] {
			used[id] = true
			return id
		}
	}
}

// putMaglev makes service id's inner map hold table, unless it already
// does.
func (d *Datapath) putMaglev(id uint32, table []uint32) error {
	var inner ebpf.MapID
	if err := d.lxc.LbMaglev.Lookup(id, &inner); err == nil {
		c, ok := d.tables[id]
		if !ok || c.mapID != inner {
			cur, err := readMaglev(inner)
			if err == nil {
				c, ok = maglevCache{mapID: inner, table: cur}, true
				d.tables[id] = c
			}
		}
		if ok && slices.Equal(c.table, table) {
			return nil
		}
	}
	spec := d.maglevSpec.Copy()
	spec.MaxEntries = uint32(len(table))
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("create maglev table of service %d: %w", id, err)
	}
	defer m.Close() // lb_maglev holds its own reference
	keys := make([]uint32, len(table))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := m.BatchUpdate(keys, table, nil); err != nil {
		for i, v := range table {
			if err := m.Put(uint32(i), v); err != nil {
				return fmt.Errorf("fill maglev table of service %d: %w", id, err)
			}
		}
	}
	if err := d.lxc.LbMaglev.Put(id, m); err != nil {
		return fmt.Errorf("write lb_maglev for service %d: %w", id, err)
	}
	info, err := m.Info()
	if err == nil {
		if mid, ok := info.ID(); ok {
			d.tables[id] = maglevCache{mapID: mid, table: slices.Clone(table)}
		}
	}
	return nil
}

// readMaglev reads an inner Maglev table by its map id.
func readMaglev(id ebpf.MapID) ([]uint32, error) {
	m, err := ebpf.NewMapFromID(id)
	if err != nil {
		return nil, fmt.Errorf("open maglev table %d: %w", id, err)
	}
	defer m.Close()
	out := make([]uint32, m.MaxEntries())
	var k, v uint32
	it := m.Iterate()
	for it.Next(&k, &v) {
		if int(k) < len(out) {
			out[k] = v
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read maglev table %d: %w", id, err)
	}
	return out, nil
}

// Services reads the service frontends back from the kernel (not from the
// last Apply). Each Service's backends are listed in the order of their
// first slot in its Maglev table, and Maglev indexes into that list; a
// backend without a slot (not possible with a Maglev table at least as long
// as the backends) would not be listed.
func (d *Datapath) Services() ([]Service, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("services: datapath is closed")
	}
	backends := make(map[uint32]lbBackend)
	var (
		id uint32
		be lbBackend
		k  lbSvcKey
		v  lbSvc
	)
	it := d.lxc.LbBackends.Iterate()
	for it.Next(&id, &be) {
		backends[id] = be
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read lb_backends: %w", err)
	}
	var out []Service
	sit := d.lxc.LbServices.Iterate()
	for sit.Next(&k, &v) {
		var (
			table []uint32
			inner ebpf.MapID
		)
		if err := d.lxc.LbMaglev.Lookup(v.ID, &inner); err == nil {
			t, err := readMaglev(inner)
			if err != nil {
				return nil, err
			}
			table = t
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("read lb_maglev: %w", err)
		}
		out = append(out, serviceOf(k, v, table, backends))
	}
	if err := sit.Err(); err != nil {
		return nil, fmt.Errorf("read lb_services: %w", err)
	}
	return out, nil
}
