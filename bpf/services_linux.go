//go:build linux

package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// maglevBatch is how many new inner maps one update of lb_maglev swaps in.
// Every userspace write to a map of maps waits for an RCU grace period
// (about 10 ms), once per command, so tables go in batches; the bound keeps
// the inner maps' file descriptors, open until their batch is written, well
// under any RLIMIT_NOFILE.
const maglevBatch = 1024

// lbState is what the service maps hold, as this Datapath last read or
// wrote them. Apply diffs the desired services against it rather than
// against the maps, so an Apply that changes one service reads nothing
// from the kernel and writes only that service. It is read from the pins at
// the first Apply after Open and again after an Apply that failed, since
// then the maps may hold anything between the old and the new state; in
// between, this Datapath must be the only writer of its pins.
type lbState struct {
	backends    map[lbBackend]uint32 // lb_backends, by backend
	backendByID map[uint32]lbBackend
	svcs        map[lbSvcKey]lbSvc // lb_services
	svcByID     map[uint32]lbSvcKey
	tables      map[uint32]maglevTable // lb_maglev's inner maps, by service id
	// backendHi and svcHi are the highest ids handed out or found: new
	// ids go above them (see nextID).
	backendHi, svcHi uint32
}

// maglevTable is an inner Maglev map's content: slot i holds
// ids[slots[i]]. Kept as the service's backend ids and index table (two
// bytes a slot) rather than the expanded ids (four), it also compares
// against a compiledService without building the expanded table.
type maglevTable struct {
	ids   []uint32
	slots []uint16
}

func (t maglevTable) equal(ids []uint32, slots []uint16) bool {
	if len(t.slots) != len(slots) {
		return false
	}
	for i, s := range slots {
		if t.ids[t.slots[i]] != ids[s] {
			return false
		}
	}
	return true
}

func (t maglevTable) expand() []uint32 {
	out := make([]uint32, len(t.slots))
	for i, s := range t.slots {
		out[i] = t.ids[s]
	}
	return out
}

// tableOf is the maglevTable of an expanded inner map: backends in the
// order of their first slot.
func tableOf(expanded []uint32) maglevTable {
	var t maglevTable
	index := make(map[uint32]uint16)
	t.slots = make([]uint16, len(expanded))
	for i, id := range expanded {
		j, ok := index[id]
		if !ok {
			j = uint16(len(t.ids))
			index[id] = j
			t.ids = append(t.ids, id)
		}
		t.slots[i] = j
	}
	return t
}

// loadServices reads the service maps back from the kernel. An inner map
// that cannot be read is recorded as empty, so the next Apply replaces it.
func (d *Datapath) loadServices() (*lbState, error) {
	st := &lbState{
		backends:    make(map[lbBackend]uint32),
		backendByID: make(map[uint32]lbBackend),
		svcs:        make(map[lbSvcKey]lbSvc),
		svcByID:     make(map[uint32]lbSvcKey),
		tables:      make(map[uint32]maglevTable),
	}
	var (
		id    uint32
		be    lbBackend
		sk    lbSvcKey
		sv    lbSvc
		inner ebpf.MapID
	)
	it := d.lxc.LbBackends.Iterate()
	for it.Next(&id, &be) {
		st.backends[be] = id
		st.backendByID[id] = be
		st.backendHi = max(st.backendHi, id)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read lb_backends: %w", err)
	}
	sit := d.lxc.LbServices.Iterate()
	for sit.Next(&sk, &sv) {
		st.svcs[sk] = sv
		st.svcByID[sv.ID] = sk
		st.svcHi = max(st.svcHi, sv.ID)
	}
	if err := sit.Err(); err != nil {
		return nil, fmt.Errorf("read lb_services: %w", err)
	}
	mit := d.lxc.LbMaglev.Iterate()
	for mit.Next(&id, &inner) {
		t, err := readMaglev(inner)
		if err != nil {
			d.log.Warn("maglev table unreadable; the next apply replaces it", "service_id", id, "error", err)
			st.tables[id] = maglevTable{}
			continue
		}
		st.tables[id] = tableOf(t)
	}
	if err := mit.Err(); err != nil {
		return nil, fmt.Errorf("read lb_maglev: %w", err)
	}
	return st, nil
}

// nextID hands out an id (from 1) that used lacks: one above the highest
// handed out so far (*hi), so that the id of a backend removed a moment ago
// (whose connections lb_ct may still name) is not soon given to another;
// the lowest free id once the ids run out.
func nextID[V any](hi *uint32, used map[uint32]V) uint32 {
	if *hi < ^uint32(0) {
		*hi++
		return *hi
	}
	for id := uint32(1); ; id++ {
		if _, ok := used[id]; !ok {
			return id
		}
	}
}

// applyServices makes the service maps hold exactly svcs. Ids are kept
// where a frontend or backend already has one (so they survive Apply and
// agent restarts, and an established connection keeps the backend id it
// recorded); new ones take free ids. Order: backends, then the Maglev
// tables, then the frontends that point at them; what went away is deleted
// last. A table that changed gets a new inner map, swapped in atomically;
// unchanged entries are not written. The writes of each map go in batches.
// After an error the state is read back from the kernel at the next Apply.
func (d *Datapath) applyServices(svcs []compiledService) error {
	if d.lb == nil {
		st, err := d.loadServices()
		if err != nil {
			return err
		}
		d.lb = st
	}
	err := d.lb.apply(d, svcs)
	if err != nil {
		d.lb = nil
	}
	return err
}

func (st *lbState) apply(d *Datapath, svcs []compiledService) error {
	var (
		wantBackends = make(map[uint32]bool, len(st.backendByID))
		wantSvcs     = make(map[lbSvcKey]bool, len(svcs))
		wantTables   = make(map[uint32]bool, len(svcs))
		newBackendID []uint32
		newBackend   []lbBackend
		svcKeys      []lbSvcKey
		svcVals      []lbSvc
		tableIDs     []uint32
		tables       []maglevTable
	)
	for _, cs := range svcs {
		bids := make([]uint32, len(cs.backends))
		for i, b := range cs.backends {
			id, ok := st.backends[b]
			if !ok {
				id = nextID(&st.backendHi, st.backendByID)
				st.backends[b], st.backendByID[id] = id, b
				newBackendID, newBackend = append(newBackendID, id), append(newBackend, b)
			}
			bids[i] = id
			wantBackends[id] = true
		}
		v := cs.svc
		cur, ok := st.svcs[cs.key]
		if ok {
			v.ID = cur.ID
		} else {
			v.ID = nextID(&st.svcHi, st.svcByID)
			st.svcByID[v.ID] = cs.key
		}
		wantSvcs[cs.key] = true
		if !ok || cur != v {
			svcKeys, svcVals = append(svcKeys, cs.key), append(svcVals, v)
		}
		if len(cs.table) == 0 {
			continue
		}
		wantTables[v.ID] = true
		if t, ok := st.tables[v.ID]; !ok || !t.equal(bids, cs.table) {
			tableIDs = append(tableIDs, v.ID)
			tables = append(tables, maglevTable{ids: bids, slots: append([]uint16(nil), cs.table...)})
		}
	}

	if err := putBatch(d.lxc.LbBackends, newBackendID, newBackend); err != nil {
		return err // the tables would name backends that are missing
	}
	errs := []error{d.putMaglev(st, tableIDs, tables)}
	if err := putBatch(d.lxc.LbServices, svcKeys, svcVals); err != nil {
		errs = append(errs, err)
	} else {
		for i, k := range svcKeys {
			st.svcs[k] = svcVals[i]
		}
	}
	// What went away, frontends first so that none points at a deleted
	// table.
	var goneSvcs []lbSvcKey
	for k := range st.svcs {
		if !wantSvcs[k] {
			goneSvcs = append(goneSvcs, k)
		}
	}
	if err := deleteBatch(d.lxc.LbServices, goneSvcs); err != nil {
		errs = append(errs, err)
	} else {
		for _, k := range goneSvcs {
			delete(st.svcByID, st.svcs[k].ID)
			delete(st.svcs, k)
		}
	}
	var goneTables []uint32
	for id := range st.tables {
		if !wantTables[id] {
			goneTables = append(goneTables, id)
		}
	}
	if err := deleteBatch(d.lxc.LbMaglev, goneTables); err != nil {
		errs = append(errs, err)
	} else {
		for _, id := range goneTables {
			delete(st.tables, id)
		}
	}
	var goneBackends []uint32
	for id := range st.backendByID {
		if !wantBackends[id] {
			goneBackends = append(goneBackends, id)
		}
	}
	if err := deleteBatch(d.lxc.LbBackends, goneBackends); err != nil {
		errs = append(errs, err)
	} else {
		for _, id := range goneBackends {
			delete(st.backends, st.backendByID[id])
			delete(st.backendByID, id)
		}
	}
	return errors.Join(errs...)
}

// putMaglev gives each service ids[i] a new inner map holding tables[i],
// swapped into lb_maglev maglevBatch tables per command.
func (d *Datapath) putMaglev(st *lbState, ids []uint32, tables []maglevTable) error {
	var errs []error
	for len(ids) > 0 {
		n := min(len(ids), maglevBatch)
		var (
			keys  = make([]uint32, 0, n)
			maps  = make([]*ebpf.Map, 0, n)
			fds   = make([]uint32, 0, n)
			added = make([]maglevTable, 0, n)
		)
		for i := range n {
			m, err := d.newMaglev(ids[i], tables[i])
			if err != nil {
				errs = append(errs, err)
				continue
			}
			keys, maps, fds, added = append(keys, ids[i]), append(maps, m), append(fds, uint32(m.FD())), append(added, tables[i])
		}
		ids, tables = ids[n:], tables[n:]
		err := putBatch(d.lxc.LbMaglev, keys, fds)
		for _, m := range maps {
			m.Close() // lb_maglev holds its own reference
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for i, id := range keys {
			st.tables[id] = added[i]
		}
	}
	return errors.Join(errs...)
}

// newMaglev creates an inner map holding t.
func (d *Datapath) newMaglev(id uint32, t maglevTable) (*ebpf.Map, error) {
	spec := d.maglevSpec.Copy()
	spec.MaxEntries = uint32(len(t.slots))
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create maglev table of service %d: %w", id, err)
	}
	keys := make([]uint32, len(t.slots))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if err := putBatch(m, keys, t.expand()); err != nil {
		m.Close()
		return nil, fmt.Errorf("fill maglev table of service %d: %w", id, err)
	}
	return m, nil
}

// putBatch writes keys[i] → vals[i] into m with one command, or one per
// entry on kernels without the batch API (before 5.6).
func putBatch[K, V any](m *ebpf.Map, keys []K, vals []V) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := m.BatchUpdate(keys, vals, nil)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.E2BIG) {
		return fmt.Errorf("write map %s: full at %d entries (raise its size in Config): %w", mapName(m), m.MaxEntries(), err)
	}
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("write map %s: %w", mapName(m), err)
	}
	for i := range keys {
		if err := m.Put(keys[i], vals[i]); err != nil {
			return fmt.Errorf("write map %s: %w", mapName(m), err)
		}
	}
	return nil
}

// deleteBatch deletes keys from m with as few commands as it can; keys
// already gone are no error.
func deleteBatch[K any](m *ebpf.Map, keys []K) error {
	for len(keys) > 0 {
		n, err := m.BatchDelete(keys, nil)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ebpf.ErrKeyNotExist) && n < len(keys):
			keys = keys[n+1:] // the kernel stops at the missing key
			continue
		case errors.Is(err, ebpf.ErrNotSupported):
			for _, k := range keys {
				if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return fmt.Errorf("delete from map %s: %w", mapName(m), err)
				}
			}
			return nil
		default:
			return fmt.Errorf("delete from map %s: %w", mapName(m), err)
		}
	}
	return nil
}

// readMaglev reads an inner Maglev table by its map id: one batch lookup,
// or entry by entry on kernels without the batch API.
func readMaglev(id ebpf.MapID) ([]uint32, error) {
	m, err := ebpf.NewMapFromID(id)
	if err != nil {
		return nil, fmt.Errorf("open maglev table %d: %w", id, err)
	}
	defer m.Close()
	out := make([]uint32, m.MaxEntries())
	keys, vals := make([]uint32, len(out)), make([]uint32, len(out))
	var c ebpf.MapBatchCursor
	for read := 0; read < len(out); {
		n, err := m.BatchLookup(&c, keys, vals, nil)
		if errors.Is(err, ebpf.ErrNotSupported) {
			break
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("read maglev table %d: %w", id, err)
		}
		for i := range n {
			if int(keys[i]) < len(out) {
				out[keys[i]] = vals[i]
			}
		}
		read += n
		if err != nil || n == 0 {
			return out, nil // ErrKeyNotExist: past the last slot
		}
		if read >= len(out) {
			return out, nil
		}
	}
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
