// Package ipam owns the cluster's pod address management: it splits the
// cluster pools into one node CIDR per node and family, hands endpoint IPs out
// of the local node's CIDRs, and (on the store leader) gives the CIDRs and IPs
// of nodes that are gone back to the pools.
//
// Uniqueness comes from the store, not from this process: every node CIDR and
// every endpoint IP is one key, created with a transaction that requires the
// key to be absent, so two nodes (or one node before and after a restart)
// never hold the same CIDR or IP. Keys:
//
//	ipam/cidrs/<cidr, '/' as '_'>  JSON {node, pool, allocated_at}
//	ipam/nodes/<node>/<v4|v6>      the node's CIDR (its index, written in the same txn)
//	ipam/ips/<ip>                  JSON {node, endpoint, allocated_at}
//
// The package does not own routes to node CIDRs, the datapath, endpoints or
// liveness: the agent tells the Releaser which nodes gossip sees alive.
package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/fabric-net/fabric/fabric/store"
)

// Store is what ipam needs from the cluster store; store.KV satisfies it.
type Store interface {
	// Get returns the key; found is false when it does not exist. Linearizable.
	Get(ctx context.Context, key string) (kv store.KeyValue, found bool, err error)
	// List returns every key under prefix, sorted.
	List(ctx context.Context, prefix string) (kvs []store.KeyValue, revision int64, err error)
	// Txn applies t atomically. An error means the write was not confirmed
	// (it may still land later); callers here re-read before retrying, which
	// the idempotent reads at the start of every allocation do.
	Txn(ctx context.Context, t store.Txn) (store.TxnResult, error)
}

// Key prefixes. They are part of the cluster's on-store format.
const (
	PrefixCIDRs = "ipam/cidrs/"
	PrefixNodes = "ipam/nodes/"
	PrefixIPs   = "ipam/ips/"
)

var (
	// ErrPoolExhausted means every node CIDR of the pools of a family is taken.
	ErrPoolExhausted = errors.New("ipam: pool exhausted")
	// ErrNodeCIDRExhausted means every endpoint address of the node CIDR is taken.
	ErrNodeCIDRExhausted = errors.New("ipam: node cidr exhausted")
)

// maxAttempts bounds the read-try-write loops. A conflict means another writer
// made progress, so running out of attempts means heavy contention, not a bug.
const maxAttempts = 64

// CIDRRecord is the value of ipam/cidrs/<cidr>.
type CIDRRecord struct {
	Node        string    `json:"node"`
	Pool        string    `json:"pool"`
	AllocatedAt time.Time `json:"allocated_at"`
}

// IPRecord is the value of ipam/ips/<ip>.
type IPRecord struct {
	Node        string    `json:"node"`
	Endpoint    string    `json:"endpoint"`
	AllocatedAt time.Time `json:"allocated_at"`
}

func cidrKey(p netip.Prefix) string        { return PrefixCIDRs + cidrKeyName(p) }
func nodeKey(node string, f Family) string { return PrefixNodes + node + "/" + string(f) }
func ipKey(a netip.Addr) string            { return PrefixIPs + a.String() }

// Allocator hands out the local node's CIDRs and its endpoints' IPs. Its
// methods are safe for concurrent use; allocations of one Allocator are
// serialized so one endpoint asking twice at once still gets one address.
type Allocator struct {
	cfg  Config
	st   Store
	node string
	log  *slog.Logger
	now  func() time.Time

	mu    sync.Mutex
	cidrs map[Family]netip.Prefix // last CIDRs read from the store, for Gateway
}

// New returns the allocator of node. cfg must have passed Validate.
func New(cfg Config, st Store, node string, log *slog.Logger) *Allocator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Allocator{
		cfg:   cfg,
		st:    st,
		node:  node,
		log:   log.With("node", node),
		now:   time.Now,
		cidrs: map[Family]netip.Prefix{},
	}
}

func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty; give a non-empty name", what)
	}
	if strings.ContainsAny(s, "/\x00") {
		return fmt.Errorf("%s %q contains '/' or NUL; store keys use '/' as separator, pick a name without it", what, s)
	}
	return nil
}

// NodeCIDRs returns the node's CIDRs, one per configured family, IPv4 first.
// The first call for a node allocates them; later calls, also from a new
// process after a restart, return the same CIDRs because the node index key
// is read first. Idempotent and safe to call at any time.
func (a *Allocator) NodeCIDRs(ctx context.Context) ([]netip.Prefix, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nodeCIDRsLocked(ctx)
}

func (a *Allocator) nodeCIDRsLocked(ctx context.Context) ([]netip.Prefix, error) {
	if err := checkName("node name", a.node); err != nil {
		return nil, fmt.Errorf("ipam: %w", err)
	}
	var out []netip.Prefix
	for _, f := range a.cfg.families() {
		p, err := a.nodeCIDR(ctx, f)
		if err != nil {
			return nil, err
		}
		a.cidrs[f] = p
		out = append(out, p)
	}
	return out, nil
}

func (a *Allocator) nodeCIDR(ctx context.Context, f Family) (netip.Prefix, error) {
	nk := nodeKey(a.node, f)
	mask := a.cfg.nodeMask(f == IPv4)
	for attempt := range maxAttempts {
		kv, found, err := a.st.Get(ctx, nk)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("ipam: read node cidr %s: %w", nk, err)
		}
		if found {
			p, err := netip.ParsePrefix(string(kv.Value))
			if err != nil {
				return netip.Prefix{}, fmt.Errorf("ipam: node index %s holds %q, not a cidr: %w", nk, kv.Value, err)
			}
			if !a.inPools(p) {
				// Keeping it is safer than moving live endpoints: the
				// operator changed the pools under a running cluster.
				a.log.Warn("node cidr outside the configured pools; keeping it", "cidr", p, "family", string(f))
			}
			return p, nil
		}

		kvs, _, err := a.st.List(ctx, PrefixCIDRs)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("ipam: list allocated node cidrs: %w", err)
		}
		taken := make([]netip.Prefix, 0, len(kvs))
		for _, kv := range kvs {
			if p, err := parseCIDRKeyName(strings.TrimPrefix(kv.Key, PrefixCIDRs)); err == nil {
				taken = append(taken, p)
			}
		}
		free := freeSubnets(a.cfg.pools(f), mask, taken, 64)
		if len(free) == 0 {
			return netip.Prefix{}, fmt.Errorf("%w: no free /%d left in %s pools %v for node %s; add or enlarge a pool, or use a longer ipam.node-mask-%s (smaller node cidrs)",
				ErrPoolExhausted, mask, f, a.cfg.pools(f), a.node, f)
		}
		// Nodes starting together all see the same free list; spreading them
		// over it by name keeps most of them from colliding on the lowest one.
		c := free[(nameHash(a.node)+uint32(attempt))%uint32(len(free))]
		rec, _ := json.Marshal(CIDRRecord{Node: a.node, Pool: c.pool.String(), AllocatedAt: a.now().UTC()})
		res, err := a.st.Txn(ctx, store.Txn{
			Compares: []store.Compare{{Key: cidrKey(c.cidr)}, {Key: nk}},
			Ops: []store.Op{
				{Type: store.OpPut, Key: cidrKey(c.cidr), Value: rec},
				{Type: store.OpPut, Key: nk, Value: []byte(c.cidr.String())},
			},
		})
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("ipam: allocate node cidr %s: %w", c.cidr, err)
		}
		if res.Succeeded {
			a.log.Info("node cidr allocated", "cidr", c.cidr, "pool", c.pool, "family", string(f))
			return c.cidr, nil
		}
		// Someone took the CIDR, or another process of this node indexed one:
		// the next round re-reads both.
	}
	return netip.Prefix{}, fmt.Errorf("ipam: allocate %s node cidr for %s: still conflicting after %d attempts; the store is under heavy contention, retry later", f, a.node, maxAttempts)
}

func (a *Allocator) inPools(p netip.Prefix) bool {
	for _, pool := range a.cfg.Pools {
		if pool.Bits() <= p.Bits() && pool.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

type candidate struct{ cidr, pool netip.Prefix }

// freeSubnets returns up to limit node CIDRs of the pools that overlap no
// taken prefix, lowest first. Taken prefixes of another length (left by an
// older node mask) block every candidate they overlap.
func freeSubnets(pools []netip.Prefix, mask int, taken []netip.Prefix, limit int) []candidate {
	exact := make(map[netip.Prefix]bool, len(taken))
	var other []netip.Prefix
	for _, t := range taken {
		if t.Bits() == mask {
			exact[t] = true
		} else {
			other = append(other, t)
		}
	}
	var out []candidate
	for _, pool := range pools {
		n := subnetCount(pool, mask)
		// At most len(taken)+limit candidates are looked at per pool, so a
		// huge IPv6 pool costs no more than a small one.
		for i := uint64(0); i < n && len(out) < limit; i++ {
			c := nthSubnet(pool, mask, i)
			if exact[c] || overlapsAny(c, other) {
				continue
			}
			out = append(out, candidate{c, pool})
		}
	}
	return out
}

func overlapsAny(p netip.Prefix, ps []netip.Prefix) bool {
	for _, q := range ps {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}

func nameHash(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// Gateway returns the address reserved for the node in its CIDR of family f
// (GatewayOf the CIDR), or the zero Addr before NodeCIDRs has succeeded or
// when f has no pool.
func (a *Allocator) Gateway(f Family) netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.cidrs[f]
	if !ok {
		return netip.Addr{}
	}
	return GatewayOf(p)
}

// AllocateIP returns one address per configured family (IPv4 first) for
// endpoint, from the node's CIDRs, allocating them when needed: the lowest
// free address above the gateway. It is idempotent per endpoint: asking again
// (also after a restart) returns the addresses recorded for it. Addresses are
// recorded in the store before they are returned, so they are never reused
// while recorded.
func (a *Allocator) AllocateIP(ctx context.Context, endpoint string) ([]netip.Addr, error) {
	if endpoint == "" {
		return nil, errors.New("ipam: allocate ip: endpoint is empty; give the endpoint's id")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cidrs, err := a.nodeCIDRsLocked(ctx)
	if err != nil {
		return nil, err
	}
	for range maxAttempts {
		kvs, _, err := a.st.List(ctx, PrefixIPs)
		if err != nil {
			return nil, fmt.Errorf("ipam: list allocated ips: %w", err)
		}
		mine := map[Family]netip.Addr{}
		used := map[netip.Addr]bool{}
		for _, kv := range kvs {
			ip, err := netip.ParseAddr(strings.TrimPrefix(kv.Key, PrefixIPs))
			if err != nil {
				continue
			}
			used[ip] = true
			var rec IPRecord
			if json.Unmarshal(kv.Value, &rec) == nil && rec.Node == a.node && rec.Endpoint == endpoint {
				mine[familyOfAddr(ip)] = ip
			}
		}

		var t store.Txn
		out := make([]netip.Addr, 0, len(cidrs))
		for _, c := range cidrs {
			f := familyOf(c)
			if ip, ok := mine[f]; ok {
				out = append(out, ip)
				continue
			}
			ip, ok := lowestFree(c, used)
			if !ok {
				return nil, fmt.Errorf("%w: every endpoint address of %s on node %s is in use; release endpoints or use a shorter ipam.node-mask-%s (bigger node cidrs)", ErrNodeCIDRExhausted, c, a.node, f)
			}
			rec, _ := json.Marshal(IPRecord{Node: a.node, Endpoint: endpoint, AllocatedAt: a.now().UTC()})
			t.Compares = append(t.Compares, store.Compare{Key: ipKey(ip)})
			t.Ops = append(t.Ops, store.Op{Type: store.OpPut, Key: ipKey(ip), Value: rec})
			out = append(out, ip)
		}
		if len(t.Ops) == 0 {
			return out, nil
		}
		res, err := a.st.Txn(ctx, t)
		if err != nil {
			return nil, fmt.Errorf("ipam: record ips %v for endpoint %s: %w", out, endpoint, err)
		}
		if res.Succeeded {
			a.log.Info("endpoint ips allocated", "endpoint", endpoint, "ips", out)
			return out, nil
		}
		// Another writer took one of them (a second process of this node, or a
		// stale record): list again.
	}
	return nil, fmt.Errorf("ipam: allocate ip for endpoint %s: still conflicting after %d attempts; retry later", endpoint, maxAttempts)
}

// lowestFree returns the lowest endpoint address of c not in used.
func lowestFree(c netip.Prefix, used map[netip.Addr]bool) (netip.Addr, bool) {
	last := lastEndpointAddr(c)
	for ip := firstEndpointAddr(c); ip.IsValid() && ip.Compare(last) <= 0; ip = ip.Next() {
		if !used[ip] {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// ReleaseIP gives back every address recorded for endpoint on this node.
// Idempotent: releasing an unknown endpoint is not an error.
func (a *Allocator) ReleaseIP(ctx context.Context, endpoint string) error {
	if endpoint == "" {
		return errors.New("ipam: release ip: endpoint is empty; give the endpoint's id")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	kvs, _, err := a.st.List(ctx, PrefixIPs)
	if err != nil {
		return fmt.Errorf("ipam: list allocated ips: %w", err)
	}
	var t store.Txn
	var ips []string
	for _, kv := range kvs {
		var rec IPRecord
		if json.Unmarshal(kv.Value, &rec) == nil && rec.Node == a.node && rec.Endpoint == endpoint {
			// The compare makes sure a record rewritten since the List is
			// left alone.
			t.Compares = append(t.Compares, store.Compare{Key: kv.Key, ModRevision: kv.ModRevision})
			t.Ops = append(t.Ops, store.Op{Type: store.OpDelete, Key: kv.Key})
			ips = append(ips, strings.TrimPrefix(kv.Key, PrefixIPs))
		}
	}
	if len(t.Ops) == 0 {
		return nil
	}
	res, err := a.st.Txn(ctx, t)
	if err != nil {
		return fmt.Errorf("ipam: release ips %v of endpoint %s: %w", ips, endpoint, err)
	}
	if !res.Succeeded {
		return fmt.Errorf("ipam: release ips %v of endpoint %s: the records changed while releasing; retry", ips, endpoint)
	}
	a.log.Info("endpoint ips released", "endpoint", endpoint, "ips", ips)
	return nil
}
