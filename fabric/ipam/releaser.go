package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fabric-net/fabric/fabric/store"
)

// Releaser gives the node CIDRs and endpoint IPs of nodes that have been gone
// for at least Config.ReleaseGrace back to the pools. One node runs it: the
// agent calls Reconcile on the store leader.
//
// When a node goes absent is tracked in memory only. After a leader change the
// new leader's Releaser starts every timer from its first Reconcile, so a
// release can come later than the grace, never sooner: a late release leaks
// addresses for a while, an early one would hand a live node's CIDR to another.
type Releaser struct {
	cfg Config
	st  Store
	log *slog.Logger

	mu          sync.Mutex
	absentSince map[string]time.Time
}

// NewReleaser returns a Releaser. cfg must have passed Validate.
func NewReleaser(cfg Config, st Store, log *slog.Logger) *Releaser {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Releaser{cfg: cfg, st: st, log: log, absentSince: map[string]time.Time{}}
}

// Reconcile makes the store match alive: every node that holds a CIDR or an IP
// and has not been in alive for ReleaseGrace (as seen by the calls so far)
// loses them all in one transaction. A node back in alive before then starts
// over. It returns the nodes released by this call, sorted. Calling it again
// with the same input changes nothing more. Two Releasers running at once
// (during a leader change) stay correct: every delete compares the revision
// it read, so at most one of them releases a node's keys.
func (r *Releaser) Reconcile(ctx context.Context, alive map[string]bool, now time.Time) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()

	// held is every key each node holds, with the revision it was read at.
	held := map[string][]store.KeyValue{}
	add := func(node string, kv store.KeyValue) { held[node] = append(held[node], kv) }
	// Nodes are found from every kind of key, so orphans (an IP whose node
	// lost its CIDR, an index without its CIDR key) are released too.
	nodes, _, err := r.st.List(ctx, PrefixNodes)
	if err != nil {
		return nil, fmt.Errorf("ipam: release: list node index: %w", err)
	}
	for _, kv := range nodes {
		if node, _, ok := strings.Cut(strings.TrimPrefix(kv.Key, PrefixNodes), "/"); ok {
			add(node, kv)
		}
	}
	for _, prefix := range []string{PrefixCIDRs, PrefixIPs} {
		kvs, _, err := r.st.List(ctx, prefix)
		if err != nil {
			return nil, fmt.Errorf("ipam: release: list %s: %w", prefix, err)
		}
		for _, kv := range kvs {
			var owner struct {
				Node string `json:"node"`
			}
			if err := json.Unmarshal(kv.Value, &owner); err != nil || owner.Node == "" {
				r.log.Warn("skipping unreadable ipam record", "key", kv.Key)
				continue
			}
			add(owner.Node, kv)
		}
	}

	// Forget nodes that hold nothing any more, so the map does not grow.
	for node := range r.absentSince {
		if held[node] == nil {
			delete(r.absentSince, node)
		}
	}

	names := make([]string, 0, len(held))
	for node := range held {
		names = append(names, node)
	}
	sort.Strings(names)

	var released []string
	for _, node := range names {
		if alive[node] {
			delete(r.absentSince, node)
			continue
		}
		since, ok := r.absentSince[node]
		if !ok {
			r.absentSince[node] = now
			r.log.Info("node absent; its addresses will be released after the grace", "node", node, "grace", r.cfg.ReleaseGrace)
			since = now
		}
		if now.Sub(since) < r.cfg.ReleaseGrace {
			continue
		}
		ok, err = r.release(ctx, held[node])
		if err != nil {
			return released, fmt.Errorf("ipam: release addresses of node %s: %w", node, err)
		}
		if !ok {
			r.log.Info("node addresses changed while releasing; retrying next round", "node", node)
			continue
		}
		delete(r.absentSince, node)
		released = append(released, node)
		r.log.Info("node addresses released", "node", node, "keys", len(held[node]), "absent_for", now.Sub(since))
	}
	return released, nil
}

// releaseBatch keeps each transaction within the store's op and compare limits.
const releaseBatch = 64

// release deletes kvs, each compared on the revision it was read at so that a
// node that came back and wrote since keeps its keys. A node can hold more
// keys than one transaction may touch, so endpoint IPs go first, in batches,
// and the CIDRs and index last: a release cut short leaves the node holding
// its CIDR, and the next round finishes it.
func (r *Releaser) release(ctx context.Context, kvs []store.KeyValue) (bool, error) {
	var ips, rest []store.KeyValue
	for _, kv := range kvs {
		if strings.HasPrefix(kv.Key, PrefixIPs) {
			ips = append(ips, kv)
		} else {
			rest = append(rest, kv)
		}
	}
	// The CIDR keys and the index go together, so no round leaves an index
	// pointing at a CIDR that another node could take.
	batches := [][]store.KeyValue{}
	for len(ips) > 0 {
		n := min(len(ips), releaseBatch)
		batches = append(batches, ips[:n])
		ips = ips[n:]
	}
	if len(rest) > 0 {
		batches = append(batches, rest)
	}
	for _, b := range batches {
		var t store.Txn
		for _, kv := range b {
			t.Compares = append(t.Compares, store.Compare{Key: kv.Key, ModRevision: kv.ModRevision})
			t.Ops = append(t.Ops, store.Op{Type: store.OpDelete, Key: kv.Key})
		}
		res, err := r.st.Txn(ctx, t)
		if err != nil {
			return false, err
		}
		if !res.Succeeded {
			return false, nil
		}
	}
	return true, nil
}
