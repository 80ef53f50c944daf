// Package lbipam owns load-balancer IP pools and the assignment of their
// addresses to services: it reads Cilium's CiliumLoadBalancerIPPool YAML,
// keeps the pools in the cluster store, and hands each load-balancer service
// one address per family, a requested one when the service names it. It knows
// nothing of the datapath or of announcements (BGP, L2): those read the
// assignments it records.
//
// Uniqueness comes from the store, not from this process: every assigned
// address is one key, created with a transaction that requires it to be
// absent and changed only with a compare on its revision, so two agents (or
// one before and after a restart) never hand one address to two services
// that may not share it. Keys:
//
//	lbipam/pools/<name>        JSON Pool, written by SetPools
//	lbipam/poolset             JSON list of pool names; every SetPools compares
//	                           and rewrites it, so two SetPools never merge
//	lbipam/ips/<ip>            JSON IPRecord {pool, sharingKey, allocatedAt, holders}
//	lbipam/services/<ns>/<n>   JSON {ips}: the service's addresses; every
//	                           Assign and Release of the service compares it,
//	                           so two agents assigning one service at once
//	                           cannot give it two addresses of a family
//
// Removing a pool (SetPools without it) does not take addresses away from
// services: they keep working, and Assign reports them with a PoolGone
// condition until the service is released or the pool comes back. Disabled
// pools keep their assignments too (Cilium's semantics).
package lbipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fabric-net/fabric/fabric/store"
)

// Store is what lbipam needs from the cluster store; store.KV satisfies it.
type Store interface {
	// Get returns the key; found is false when it does not exist. Linearizable.
	Get(ctx context.Context, key string) (kv store.KeyValue, found bool, err error)
	// List returns every key under prefix, sorted.
	List(ctx context.Context, prefix string) (kvs []store.KeyValue, revision int64, err error)
	// Txn applies t atomically. An error means the write was not confirmed
	// (it may still land later); every method here re-reads before it
	// writes, so calling it again is safe.
	Txn(ctx context.Context, t store.Txn) (store.TxnResult, error)
}

// Key prefixes and keys. They are part of the cluster's on-store format.
const (
	PrefixPools    = "lbipam/pools/"
	PrefixIPs      = "lbipam/ips/"
	PrefixServices = "lbipam/services/"
	KeyPoolSet     = "lbipam/poolset"
)

// maxAttempts bounds the read-try-write loops. A conflict means another writer
// made progress, so running out of attempts means heavy contention, not a bug.
const maxAttempts = 64

// candidates is how many free addresses are looked at per family and
// attempt; after a conflict, writers spread over them by service name.
const candidates = 64

// IPRecord is the value of lbipam/ips/<ip>.
type IPRecord struct {
	// Pool is the pool the address came from when it was first assigned.
	Pool string `json:"pool"`
	// SharingKey is empty when the address belongs to one service alone.
	SharingKey  string    `json:"sharingKey,omitempty"`
	AllocatedAt time.Time `json:"allocatedAt"`
	// Holders are the services using the address, sorted by service; more
	// than one only when they share SharingKey and their ports do not clash.
	Holders []Holder `json:"holders"`
}

// Holder is one service using an address.
type Holder struct {
	Service string    `json:"service"`
	Ports   []PortKey `json:"ports,omitempty"`
	Since   time.Time `json:"since"`
}

type serviceIndex struct {
	IPs []netip.Addr `json:"ips"`
}

func poolKey(name string) string       { return PrefixPools + name }
func ipKey(a netip.Addr) string        { return PrefixIPs + a.String() }
func serviceKey(service string) string { return PrefixServices + service }

// Allocator assigns load-balancer addresses to services. Its methods are safe
// for concurrent use and serialized within one Allocator; Allocators in other
// processes are kept apart by the store's compares.
type Allocator struct {
	st  Store
	log *slog.Logger
	now func() time.Time
	mu  sync.Mutex
}

// New returns an Allocator over st. log may be nil.
func New(st Store, log *slog.Logger) *Allocator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Allocator{st: st, log: log, now: time.Now}
}

// SetPools makes the store's pools exactly pools: it writes new and changed
// ones and deletes the others. Idempotent: the same pools again write
// nothing. The pools are validated and checked for overlaps first; nothing
// is written when any is wrong. Assignments are never removed here (see the
// package comment for removed pools).
func (a *Allocator) SetPools(ctx context.Context, pools []Pool) error {
	var errs []error
	for _, p := range pools {
		if err := p.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := CheckOverlaps(pools); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lbipam: set pools: %w", err)
	}
	want := map[string][]byte{}
	names := make([]string, 0, len(pools))
	for _, p := range pools {
		b, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("lbipam: encode pool %q: %w", p.Name, err)
		}
		want[p.Name] = b
		names = append(names, p.Name)
	}
	slices.Sort(names)
	nameList, _ := json.Marshal(names)

	a.mu.Lock()
	defer a.mu.Unlock()
	for range maxAttempts {
		kvs, _, err := a.st.List(ctx, PrefixPools)
		if err != nil {
			return fmt.Errorf("lbipam: list pools: %w", err)
		}
		set, found, err := a.st.Get(ctx, KeyPoolSet)
		if err != nil {
			return fmt.Errorf("lbipam: read %s: %w", KeyPoolSet, err)
		}
		var t store.Txn
		have := map[string]bool{}
		for _, kv := range kvs {
			name := strings.TrimPrefix(kv.Key, PrefixPools)
			have[name] = true
			b, ok := want[name]
			switch {
			case !ok:
				t.Compares = append(t.Compares, store.Compare{Key: kv.Key, ModRevision: kv.ModRevision})
				t.Ops = append(t.Ops, store.Op{Type: store.OpDelete, Key: kv.Key})
			case string(b) != string(kv.Value):
				t.Compares = append(t.Compares, store.Compare{Key: kv.Key, ModRevision: kv.ModRevision})
				t.Ops = append(t.Ops, store.Op{Type: store.OpPut, Key: kv.Key, Value: b})
			}
		}
		for _, name := range names {
			if !have[name] {
				t.Compares = append(t.Compares, store.Compare{Key: poolKey(name)})
				t.Ops = append(t.Ops, store.Op{Type: store.OpPut, Key: poolKey(name), Value: want[name]})
			}
		}
		if len(t.Ops) == 0 && found && string(set.Value) == string(nameList) {
			return nil
		}
		var setRev int64
		if found {
			setRev = set.ModRevision
		}
		t.Compares = append(t.Compares, store.Compare{Key: KeyPoolSet, ModRevision: setRev})
		t.Ops = append(t.Ops, store.Op{Type: store.OpPut, Key: KeyPoolSet, Value: nameList})
		res, err := a.st.Txn(ctx, t)
		if err != nil {
			return fmt.Errorf("lbipam: write pools %v: %w", names, err)
		}
		if res.Succeeded {
			a.log.Info("lb pools set", "pools", names)
			return nil
		}
	}
	return fmt.Errorf("lbipam: set pools: still conflicting after %d attempts; another writer keeps changing the pools, retry later", maxAttempts)
}

// PoolStatus is one pool and how full it is.
type PoolStatus struct {
	Pool Pool
	// Used counts assigned addresses inside the pool's blocks.
	Used uint64
	// Free counts addresses the pool may still hand out (whether or not it
	// is disabled), capped at MaxUint64 for huge IPv6 pools.
	Free uint64
	// Gone marks an entry for a removed pool whose addresses are still
	// assigned: Pool has only its Name, Used counts those addresses.
	Gone bool
}

// Pools returns every pool, sorted by name, with its counts, followed by one
// Gone entry per removed pool that still has assigned addresses.
func (a *Allocator) Pools(ctx context.Context) ([]PoolStatus, error) {
	s, err := a.load(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]PoolStatus, len(s.pools))
	offered := make([]uint64, len(s.pools))
	gone := map[string]uint64{}
	for i, p := range s.pools {
		out[i].Pool = p.Pool
	}
	for ip, r := range s.recs {
		i := s.poolIndex(ip)
		if i < 0 {
			gone[r.rec.Pool]++
			continue
		}
		out[i].Used++
		if s.pools[i].offers(ip) {
			offered[i]++
		}
	}
	for i, p := range s.pools {
		if size := p.size(); size > offered[i] {
			out[i].Free = size - offered[i]
		}
	}
	names := make([]string, 0, len(gone))
	for n := range gone {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		out = append(out, PoolStatus{Pool: Pool{Name: n}, Used: gone[n], Gone: true})
	}
	return out, nil
}

// Assign makes the store give req.Service what req asks for and returns the
// outcome. It is declarative and idempotent: the same request again returns
// the same addresses and writes nothing; a changed request keeps every
// address that still fits and changes only the rest. A requested address is
// given when it is free or can be shared, and otherwise reported with a
// RequestedIPUnavailable condition, never replaced by another one. An
// address whose pool still exists but no longer offers it to the service
// (selector or exclusions changed) is moved to a new one, as Cilium does. The
// whole request is written in one transaction or not at all.
//
// Errors are reserved for a malformed request, a store failure and endless
// conflicts; a request that cannot be met is a Status with conditions.
func (a *Allocator) Assign(ctx context.Context, req Request) (Status, error) {
	req, err := req.normalize()
	if err != nil {
		return Status{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for attempt := range maxAttempts {
		s, err := a.load(ctx)
		if err != nil {
			return Status{}, err
		}
		idx, idxFound, err := a.st.Get(ctx, serviceKey(req.Service))
		if err != nil {
			return Status{}, fmt.Errorf("lbipam: read %s: %w", serviceKey(req.Service), err)
		}
		p := &plan{s: s, req: req, attempt: attempt, now: a.now().UTC(), changed: map[netip.Addr]*IPRecord{}, pools: map[string]bool{}}
		p.run()
		if len(p.failed) > 0 {
			return Status{IPs: p.held(), Conditions: append(p.failed, p.gone...)}, nil
		}
		t := p.txn()
		ips := p.final
		slices.SortFunc(ips, netip.Addr.Compare)
		index, _ := json.Marshal(serviceIndex{IPs: ips})
		if len(t.Ops) == 0 && idxFound && string(idx.Value) == string(index) {
			return p.status(), nil
		}
		var idxRev int64
		if idxFound {
			idxRev = idx.ModRevision
		}
		t.Compares = append(t.Compares, store.Compare{Key: serviceKey(req.Service), ModRevision: idxRev})
		t.Ops = append(t.Ops, store.Op{Type: store.OpPut, Key: serviceKey(req.Service), Value: index})
		res, err := a.st.Txn(ctx, t)
		if err != nil {
			return Status{}, fmt.Errorf("lbipam: record %v for service %s: %w", ips, req.Service, err)
		}
		if res.Succeeded {
			a.log.Info("lb ips assigned", "service", req.Service, "ips", ips)
			return p.status(), nil
		}
		// Another writer changed an address, a pool or this service: read
		// everything again.
	}
	return Status{}, fmt.Errorf("lbipam: assign service %s: still conflicting after %d attempts; the store is under heavy contention, retry later", req.Service, maxAttempts)
}

// Release gives back every address of service: it leaves every address it
// shares, and addresses it held alone become free. Idempotent: releasing an
// unknown service is not an error.
func (a *Allocator) Release(ctx context.Context, service string) error {
	if _, err := (Request{Service: service}).normalize(); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for range maxAttempts {
		kvs, _, err := a.st.List(ctx, PrefixIPs)
		if err != nil {
			return fmt.Errorf("lbipam: list assigned ips: %w", err)
		}
		idx, idxFound, err := a.st.Get(ctx, serviceKey(service))
		if err != nil {
			return fmt.Errorf("lbipam: read %s: %w", serviceKey(service), err)
		}
		var t store.Txn
		var ips []string
		for _, kv := range kvs {
			var rec IPRecord
			if json.Unmarshal(kv.Value, &rec) != nil || !rec.holds(service) {
				continue
			}
			ips = append(ips, strings.TrimPrefix(kv.Key, PrefixIPs))
			t.Compares = append(t.Compares, store.Compare{Key: kv.Key, ModRevision: kv.ModRevision})
			rec.Holders = slices.DeleteFunc(rec.Holders, func(h Holder) bool { return h.Service == service })
			if len(rec.Holders) == 0 {
				t.Ops = append(t.Ops, store.Op{Type: store.OpDelete, Key: kv.Key})
				continue
			}
			b, _ := json.Marshal(rec)
			t.Ops = append(t.Ops, store.Op{Type: store.OpPut, Key: kv.Key, Value: b})
		}
		if idxFound {
			t.Compares = append(t.Compares, store.Compare{Key: idx.Key, ModRevision: idx.ModRevision})
			t.Ops = append(t.Ops, store.Op{Type: store.OpDelete, Key: idx.Key})
		}
		if len(t.Ops) == 0 {
			return nil
		}
		res, err := a.st.Txn(ctx, t)
		if err != nil {
			return fmt.Errorf("lbipam: release ips %v of service %s: %w", ips, service, err)
		}
		if res.Succeeded {
			a.log.Info("lb ips released", "service", service, "ips", ips)
			return nil
		}
	}
	return fmt.Errorf("lbipam: release service %s: still conflicting after %d attempts; retry later", service, maxAttempts)
}

func (r *IPRecord) holds(service string) bool {
	return slices.ContainsFunc(r.Holders, func(h Holder) bool { return h.Service == service })
}

type storedPool struct {
	Pool
	rev int64
}

type storedRecord struct {
	rec IPRecord
	rev int64
}

// snapshot is the store's pools and assignments as one attempt saw them.
type snapshot struct {
	pools []storedPool // sorted by name
	recs  map[netip.Addr]storedRecord
	// used holds every assigned address, also those whose record could not
	// be read: those are never handed out again.
	used map[netip.Addr]bool
}

func (a *Allocator) load(ctx context.Context) (*snapshot, error) {
	pkvs, _, err := a.st.List(ctx, PrefixPools)
	if err != nil {
		return nil, fmt.Errorf("lbipam: list pools: %w", err)
	}
	s := &snapshot{recs: map[netip.Addr]storedRecord{}, used: map[netip.Addr]bool{}}
	for _, kv := range pkvs {
		var p Pool
		if err := json.Unmarshal(kv.Value, &p); err != nil {
			return nil, fmt.Errorf("lbipam: pool %s holds %.40q, not a pool: %v; write the pools again with SetPools", kv.Key, kv.Value, err)
		}
		s.pools = append(s.pools, storedPool{p, kv.ModRevision})
	}
	slices.SortFunc(s.pools, func(x, y storedPool) int { return strings.Compare(x.Name, y.Name) })
	ikvs, _, err := a.st.List(ctx, PrefixIPs)
	if err != nil {
		return nil, fmt.Errorf("lbipam: list assigned ips: %w", err)
	}
	for _, kv := range ikvs {
		ip, err := netip.ParseAddr(strings.TrimPrefix(kv.Key, PrefixIPs))
		if err != nil {
			continue
		}
		s.used[ip] = true
		var rec IPRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			a.log.Warn("unreadable lb ip record; the address stays used", "key", kv.Key, "err", err)
			continue
		}
		s.recs[ip] = storedRecord{rec, kv.ModRevision}
	}
	return s, nil
}

// poolIndex is the index of the pool owning ip, -1 when none does.
func (s *snapshot) poolIndex(ip netip.Addr) int {
	for i, p := range s.pools {
		if p.owns(ip) {
			return i
		}
	}
	return -1
}

// plan works out one attempt of Assign against a snapshot.
type plan struct {
	s       *snapshot
	req     Request
	attempt int
	now     time.Time

	final   []netip.Addr
	failed  []Condition // conditions that stop the request
	gone    []Condition // PoolGone notes
	from    []string    // "ip (pool x)" for the Assigned message
	changed map[netip.Addr]*IPRecord
	deleted []netip.Addr
	pools   map[string]bool // pools handing out an address in this plan
}

// held is what the service holds in the snapshot, sorted.
func (p *plan) held() []netip.Addr {
	var out []netip.Addr
	for ip, r := range p.s.recs {
		if r.rec.holds(p.req.Service) {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (p *plan) fail(t ConditionType, format string, args ...any) {
	p.failed = append(p.failed, Condition{Type: t, Message: fmt.Sprintf(format, args...)})
}

func (p *plan) run() {
	held := p.held()
	covered := map[Family]bool{}
	for _, ip := range p.req.RequestedIPs {
		covered[familyOf(ip)] = true
		if !slices.Contains(p.req.Families, familyOf(ip)) {
			p.fail(RequestedIPUnavailable, "requested IP %s is IPv%s but the service asks for families %v; add the family or drop the address", ip, strings.TrimPrefix(string(familyOf(ip)), "v"), p.req.Families)
			continue
		}
		if slices.Contains(held, ip) {
			if why := p.keepable(ip); why != "" {
				p.fail(RequestedIPUnavailable, "requested IP %s can no longer be kept: %s", ip, why)
				continue
			}
			p.keep(ip)
			continue
		}
		if why := p.acquire(ip); why != "" {
			p.fail(RequestedIPUnavailable, "requested IP %s is unavailable: %s", ip, why)
		}
	}
	for _, f := range p.req.Families {
		if covered[f] {
			continue
		}
		kept := false
		for _, ip := range held {
			if familyOf(ip) == f && !slices.Contains(p.req.RequestedIPs, ip) && p.keepable(ip) == "" {
				p.keep(ip)
				kept = true
				break
			}
		}
		if !kept {
			p.allocate(f)
		}
	}
	for _, ip := range held {
		if !slices.Contains(p.final, ip) {
			p.leave(ip)
		}
	}
}

// keepable says why the service cannot keep ip, which it holds ("" when it
// can): it can while its co-holders still accept it and its pool is gone,
// disabled, or still offers the address to the service.
func (p *plan) keepable(ip netip.Addr) string {
	r := p.s.recs[ip]
	if ok, why := compatible(r.rec, p.req); !ok {
		return why
	}
	i := p.s.poolIndex(ip)
	if i < 0 || p.s.pools[i].Disabled {
		return ""
	}
	pool := p.s.pools[i]
	if !pool.offers(ip) {
		return pool.whyNotOffered(ip)
	}
	if !pool.ServiceSelector.Matches(p.req.Labels) {
		return fmt.Sprintf("pool %q no longer selects the service", pool.Name)
	}
	return ""
}

// keep records that the service keeps ip, updating its holder entry.
func (p *plan) keep(ip netip.Addr) {
	p.final = append(p.final, ip)
	r := p.s.recs[ip]
	if i := p.s.poolIndex(ip); i < 0 {
		p.gone = append(p.gone, Condition{Type: PoolGone, Message: fmt.Sprintf("%s stays assigned although no pool contains it any more (pool %q was removed or shrunk); re-add the pool, or release the service to free it", ip, r.rec.Pool)})
		p.from = append(p.from, fmt.Sprintf("%s (pool %s, gone)", ip, r.rec.Pool))
	} else {
		p.from = append(p.from, fmt.Sprintf("%s (pool %s)", ip, p.s.pools[i].Name))
	}
	rec := cloneRecord(r.rec)
	for i, h := range rec.Holders {
		if h.Service == p.req.Service {
			rec.Holders[i].Ports = p.req.Ports
		}
	}
	if len(rec.Holders) == 1 {
		rec.SharingKey = p.req.SharingKey
	}
	p.changed[ip] = rec
}

// leave drops the service from ip.
func (p *plan) leave(ip netip.Addr) {
	rec := cloneRecord(p.s.recs[ip].rec)
	rec.Holders = slices.DeleteFunc(rec.Holders, func(h Holder) bool { return h.Service == p.req.Service })
	if len(rec.Holders) == 0 {
		p.deleted = append(p.deleted, ip)
		return
	}
	p.changed[ip] = rec
}

// acquire takes ip, requested by name, or says why it cannot.
func (p *plan) acquire(ip netip.Addr) string {
	i := p.s.poolIndex(ip)
	if i < 0 {
		return "it is in no pool; add it to a pool's blocks, or request an address of an existing pool"
	}
	pool := p.s.pools[i]
	switch {
	case !pool.offers(ip):
		return pool.whyNotOffered(ip) + "; request another address"
	case pool.Disabled:
		return fmt.Sprintf("pool %q is disabled; enable it or request an address of another pool", pool.Name)
	case !pool.ServiceSelector.Matches(p.req.Labels):
		return fmt.Sprintf("pool %q does not select the service; change the pool's serviceSelector or the service's labels", pool.Name)
	}
	if r, ok := p.s.recs[ip]; ok {
		if ok, why := compatible(r.rec, p.req); !ok {
			return why
		}
		p.join(ip, pool.Name)
		return ""
	}
	if p.s.used[ip] {
		return fmt.Sprintf("its record %s cannot be read; fix or delete the key", ipKey(ip))
	}
	p.create(ip, pool.Name)
	return ""
}

func (p *plan) join(ip netip.Addr, pool string) {
	rec := cloneRecord(p.s.recs[ip].rec)
	rec.Holders = append(rec.Holders, Holder{Service: p.req.Service, Ports: p.req.Ports, Since: p.now})
	slices.SortFunc(rec.Holders, func(x, y Holder) int { return strings.Compare(x.Service, y.Service) })
	p.changed[ip] = rec
	p.final = append(p.final, ip)
	p.from = append(p.from, fmt.Sprintf("%s (pool %s, shared)", ip, pool))
	p.pools[pool] = true
}

func (p *plan) create(ip netip.Addr, pool string) {
	p.changed[ip] = &IPRecord{
		Pool:        pool,
		SharingKey:  p.req.SharingKey,
		AllocatedAt: p.now,
		Holders:     []Holder{{Service: p.req.Service, Ports: p.req.Ports, Since: p.now}},
	}
	p.final = append(p.final, ip)
	p.from = append(p.from, fmt.Sprintf("%s (pool %s)", ip, pool))
	p.pools[pool] = true
}

// allocate picks an address of family f: one the service can share, else a
// free one.
func (p *plan) allocate(f Family) {
	var eligible []storedPool
	for _, pool := range p.s.pools {
		if !pool.Disabled && pool.hasFamily(f) && pool.ServiceSelector.Matches(p.req.Labels) {
			eligible = append(eligible, pool)
		}
	}
	if len(eligible) == 0 {
		p.fail(NoPool, "no enabled pool with IPv%s addresses selects service %s; add a pool whose serviceSelector matches the service's labels", strings.TrimPrefix(string(f), "v"), p.req.Service)
		return
	}
	if p.req.SharingKey != "" {
		var shared []netip.Addr
		for ip, r := range p.s.recs {
			if familyOf(ip) != f || r.rec.SharingKey != p.req.SharingKey || r.rec.holds(p.req.Service) || p.changed[ip] != nil {
				continue
			}
			if i := p.s.poolIndex(ip); i >= 0 && slices.ContainsFunc(eligible, func(e storedPool) bool { return e.Name == p.s.pools[i].Name }) && p.s.pools[i].offers(ip) {
				if ok, _ := compatible(r.rec, p.req); ok {
					shared = append(shared, ip)
				}
			}
		}
		if len(shared) > 0 {
			ip := slices.MinFunc(shared, netip.Addr.Compare)
			p.join(ip, p.s.pools[p.s.poolIndex(ip)].Name)
			return
		}
	}
	used := p.s.used
	if len(p.changed) > 0 {
		used = make(map[netip.Addr]bool, len(p.s.used)+len(p.changed))
		for ip := range p.s.used {
			used[ip] = true
		}
		for ip := range p.changed {
			used[ip] = true
		}
	}
	type cand struct {
		ip   netip.Addr
		pool string
	}
	var cands []cand
	for _, pool := range eligible {
		for _, ip := range pool.free(f, used, candidates-len(cands)) {
			cands = append(cands, cand{ip, pool.Name})
		}
		if len(cands) >= candidates {
			break
		}
	}
	if len(cands) == 0 {
		names := make([]string, len(eligible))
		for i, e := range eligible {
			names[i] = e.describe()
		}
		p.fail(PoolExhausted, "every IPv%s address of the pools selecting service %s is assigned: %s; enlarge a pool, add one, or release services", strings.TrimPrefix(string(f), "v"), p.req.Service, strings.Join(names, ", "))
		return
	}
	// The first attempt takes the lowest free address, so assignments are
	// predictable; after a conflict, writers spread over the candidates by
	// name so that they stop colliding on the same one.
	c := cands[0]
	if p.attempt > 0 {
		c = cands[(nameHash(p.req.Service)+uint32(p.attempt))%uint32(len(cands))]
	}
	p.create(c.ip, c.pool)
}

// txn turns the plan into compares and writes.
func (p *plan) txn() store.Txn {
	var t store.Txn
	ips := make([]netip.Addr, 0, len(p.changed))
	for ip := range p.changed {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	for _, ip := range ips {
		rec := p.changed[ip]
		b, _ := json.Marshal(rec)
		old, ok := p.s.recs[ip]
		if ok {
			ob, _ := json.Marshal(old.rec)
			if string(ob) == string(b) {
				continue
			}
		}
		t.Compares = append(t.Compares, store.Compare{Key: ipKey(ip), ModRevision: old.rev})
		t.Ops = append(t.Ops, store.Op{Type: store.OpPut, Key: ipKey(ip), Value: b})
	}
	for _, ip := range p.deleted {
		t.Compares = append(t.Compares, store.Compare{Key: ipKey(ip), ModRevision: p.s.recs[ip].rev})
		t.Ops = append(t.Ops, store.Op{Type: store.OpDelete, Key: ipKey(ip)})
	}
	if len(t.Ops) == 0 {
		return t
	}
	// A pool removed or changed since the snapshot must not hand out an
	// address it may no longer own.
	for _, pool := range p.s.pools {
		if p.pools[pool.Name] {
			t.Compares = append(t.Compares, store.Compare{Key: poolKey(pool.Name), ModRevision: pool.rev})
		}
	}
	return t
}

func (p *plan) status() Status {
	ips := slices.Clone(p.final)
	slices.SortFunc(ips, netip.Addr.Compare)
	slices.Sort(p.from)
	conds := []Condition{{Type: Assigned, Message: "assigned " + strings.Join(p.from, ", ")}}
	return Status{IPs: ips, Conditions: append(conds, p.gone...)}
}

// compatible tells whether the request's service may hold rec's address
// next to its other holders, and if not, why, in words for a status.
func compatible(rec IPRecord, req Request) (bool, string) {
	var others []Holder
	for _, h := range rec.Holders {
		if h.Service != req.Service {
			others = append(others, h)
		}
	}
	if len(others) == 0 {
		return true, ""
	}
	names := make([]string, len(others))
	for i, h := range others {
		names[i] = h.Service
	}
	held := "it is held by " + strings.Join(names, ", ")
	switch {
	case rec.SharingKey == "":
		return false, held + ", which does not share it; give both services the same " + AnnotationSharingKey + " annotation to share it"
	case req.SharingKey == "":
		return false, fmt.Sprintf("%s with sharing key %q; give this service the same %s annotation to share it", held, rec.SharingKey, AnnotationSharingKey)
	case req.SharingKey != rec.SharingKey:
		return false, fmt.Sprintf("%s with sharing key %q, not %q; use the same key to share it", held, rec.SharingKey, req.SharingKey)
	}
	ns := req.namespace()
	for _, h := range others {
		if ons, _, _ := strings.Cut(h.Service, "/"); ons != ns {
			return false, fmt.Sprintf("%s in another namespace; addresses are shared within one namespace only", held)
		}
		for _, port := range req.Ports {
			if slices.Contains(h.Ports, port) {
				return false, fmt.Sprintf("%s, whose port %s clashes with this service's; use other ports or another address", held, port)
			}
		}
	}
	return true, ""
}

func cloneRecord(r IPRecord) *IPRecord {
	c := r
	c.Holders = slices.Clone(r.Holders)
	return &c
}

func nameHash(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}
