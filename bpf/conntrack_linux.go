//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// gcBatch is how many entries GCConntrack reads or deletes per system call.
const gcBatch = 4096

// GCConntrack deletes the entries of the connection-tracking map (ct) and
// of the per-connection service maps (lb_ct, lb_revnat, lb_affinity,
// lb_nat) that are idle beyond their lifetime at now (the Config.CT*Timeout
// settings, a service's affinity timeout), so the tables do not rely on LRU
// eviction alone to make room. A lb_revnat entry goes with its connection's
// lb_ct entry; an affinity record goes when its service no longer exists or
// no longer has affinity. It returns how many entries it removed. It may
// run while traffic flows (entries the programs touch meanwhile are judged
// as read) and is meant to be called periodically, e.g. every 30 s.
func (d *Datapath) GCConntrack(now time.Time) (removed int, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, errors.New("gc conntrack: datapath is closed")
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("gc conntrack: read monotonic clock: %w", err)
	}
	mono := ts.Nano() + int64(now.Sub(time.Now()))
	if mono <= 0 {
		return 0, fmt.Errorf("gc conntrack: time %v is before boot", now)
	}
	kt := uint64(mono)
	t := d.cfg.ctTimeouts()
	var errs []error
	add := func(n int, err error) {
		removed += n
		if err != nil {
			errs = append(errs, err)
		}
	}

	add(gcMap(d.lxc.Ct, func(k ctKey, v ctEntry) bool { return idle(v.LastSeen, kt, t.ctLife(k.Proto, v.Flags)) }))
	alive := make(map[ctKey]bool)
	add(gcMap(d.lxc.LbCt, func(k ctKey, v lbCTEntry) bool {
		if idle(v.LastSeen, kt, t.lbLife(k.Proto)) {
			return true
		}
		alive[k] = true
		return false
	}))
	add(gcMap(d.lxc.LbRevnat, func(k ctKey, v lbRevnat) bool {
		ck := lbCTKeyOfRevnat(k, v)
		if alive[ck] {
			return false
		}
		// A connection that began after lb_ct was read has its lb_ct
		// entry by now (lb.h writes it before the revnat entry).
		var e lbCTEntry
		if err := d.lxc.LbCt.Lookup(ck, &e); err == nil && !idle(e.LastSeen, kt, t.lbLife(k.Proto)) {
			return false
		}
		return true
	}))
	affinity := make(map[uint32]uint32) // service id → seconds
	var (
		sk lbSvcKey
		sv lbSvc
	)
	it := d.lxc.LbServices.Iterate()
	for it.Next(&sk, &sv) {
		affinity[sv.ID] = sv.AffinitySec
	}
	if err := it.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read lb_services: %w", err))
	} else {
		add(gcMap(d.lxc.LbAffinity, func(k lbAffinityKey, v lbAffinity) bool {
			sec, ok := affinity[k.SvcID]
			return !ok || sec == 0 || idle(v.LastSeen, kt, time.Duration(sec)*time.Second)
		}))
	}
	add(gcMap(d.lxc.LbNat, func(k ctKey, v lbNAT) bool { return idle(v.LastSeen, kt, t.lbLife(k.Proto)) }))
	if removed > 0 {
		d.log.Debug("conntrack gc", "removed", removed)
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("gc conntrack: %w", err)
	}
	return removed, nil
}

// gcMap deletes the entries of m that expired says are, reading and
// deleting in batches (one entry at a time where the kernel has no batch
// operations for m), and returns how many it deleted. Entries that vanish
// meanwhile (LRU eviction, the programs) are not counted and no error.
func gcMap[K comparable, V any](m *ebpf.Map, expired func(K, V) bool) (int, error) {
	var stale []K
	keys, vals := make([]K, gcBatch), make([]V, gcBatch)
	var cursor ebpf.MapBatchCursor
	batched := true
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			if expired(keys[i], vals[i]) {
				stale = append(stale, keys[i])
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if errors.Is(err, ebpf.ErrNotSupported) && n == 0 && len(stale) == 0 {
			batched = false
			break
		}
		if err != nil {
			return 0, fmt.Errorf("read map %s: %w", mapName(m), err)
		}
	}
	if !batched {
		var (
			k K
			v V
		)
		it := m.Iterate()
		for it.Next(&k, &v) {
			if expired(k, v) {
				stale = append(stale, k)
			}
		}
		if err := it.Err(); err != nil {
			return 0, fmt.Errorf("read map %s: %w", mapName(m), err)
		}
	}
	removed := 0
	for len(stale) > 0 {
		chunk := stale[:min(len(stale), gcBatch)]
		stale = stale[len(chunk):]
		if batched {
			n, err := m.BatchDelete(chunk, nil)
			removed += n
			if err == nil {
				continue
			}
			if !errors.Is(err, ebpf.ErrKeyNotExist) {
				return removed, fmt.Errorf("delete from map %s: %w", mapName(m), err)
			}
			chunk = chunk[n:] // the kernel stopped at a key that is gone
		}
		for _, k := range chunk {
			err := m.Delete(k)
			switch {
			case err == nil:
				removed++
			case !errors.Is(err, ebpf.ErrKeyNotExist):
				return removed, fmt.Errorf("delete from map %s: %w", mapName(m), err)
			}
		}
	}
	return removed, nil
}

// checkLocalPorts warns when the node's ip_local_port_range (this network
// namespace's) overlaps the NAT port range: a connection of the node's own
// to a backend could then share a port with a translated one.
func checkLocalPorts(log *slog.Logger, cfg Config) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return
	}
	lo, hi, ok := parsePortRange(string(b))
	natLo, natHi := cfg.natPorts()
	if ok && lo <= natHi && natLo <= hi {
		log.Warn("nat port range overlaps the node's ip_local_port_range; narrow net.ipv4.ip_local_port_range or move NATPortMin..NATPortMax",
			"nat_ports", fmt.Sprintf("%d-%d", natLo, natHi), "ip_local_port_range", fmt.Sprintf("%d-%d", lo, hi))
	}
}
