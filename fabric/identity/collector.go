package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fabric-net/fabric/fabric/store"
)

// Collector deletes identities that no endpoint has referenced for at least
// Config.GCGrace. One node runs it: the agent calls Reconcile on the store
// leader.
//
// When an identity became unused is tracked in memory only. After a leader
// change the new leader's Collector starts every timer from its first
// Reconcile, so an identity goes later than the grace, never sooner.
type Collector struct {
	cfg Config
	st  Store
	log *slog.Logger

	mu          sync.Mutex
	unusedSince map[ID]time.Time
}

// NewCollector returns a Collector. cfg must have passed Validate.
func NewCollector(cfg Config, st Store, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Collector{cfg: cfg, st: st, log: log, unusedSince: map[ID]time.Time{}}
}

// Reconcile deletes every identity that has had no reference for GCGrace (as
// seen by the calls so far) and returns them, sorted. An identity referenced
// again before then starts over. The delete holds only if no reference exists
// and the identity is unchanged at that moment, so an Allocate racing with it
// either lands first (and the identity stays) or fails and creates anew.
func (c *Collector) Reconcile(ctx context.Context, now time.Time) ([]ID, error) {
	c.mu.Lock()
	defer c.mu.Unlock()

	ids, _, err := c.st.List(ctx, PrefixIDs)
	if err != nil {
		return nil, fmt.Errorf("identity: gc: list identities: %w", err)
	}
	labels, _, err := c.st.List(ctx, PrefixLabels)
	if err != nil {
		return nil, fmt.Errorf("identity: gc: list labels: %w", err)
	}
	refs, _, err := c.st.List(ctx, PrefixRefs)
	if err != nil {
		return nil, fmt.Errorf("identity: gc: list references: %w", err)
	}
	labelKV := make(map[string]store.KeyValue, len(labels))
	for _, kv := range labels {
		labelKV[kv.Key] = kv
	}
	referenced := map[ID]bool{}
	for _, kv := range refs {
		s, _, _ := strings.Cut(strings.TrimPrefix(kv.Key, PrefixRefs), "/")
		if id, err := ParseID(s); err == nil {
			referenced[id] = true
		}
	}

	present := make(map[ID]bool, len(ids))
	var released []ID
	for _, kv := range ids {
		id, err := ParseID(strings.TrimPrefix(kv.Key, PrefixIDs))
		if err != nil {
			c.log.Warn("skipping identity with a bad key", "key", kv.Key)
			continue
		}
		present[id] = true
		if referenced[id] {
			delete(c.unusedSince, id)
			continue
		}
		since, ok := c.unusedSince[id]
		if !ok {
			c.unusedSince[id] = now
			since = now
		}
		if now.Sub(since) < c.cfg.GCGrace {
			continue
		}
		t := store.Txn{
			Compares: []store.Compare{{Prefix: refPrefix(id)}, {Key: kv.Key, ModRevision: kv.ModRevision}},
			Ops:      []store.Op{{Type: store.OpDelete, Key: kv.Key}},
		}
		var rec Record
		if err := json.Unmarshal(kv.Value, &rec); err == nil {
			// Delete the labels key only while it still names this id: a
			// labels key that points elsewhere belongs to another identity.
			if lkv, ok := labelKV[PrefixLabels+rec.Labels]; ok && string(lkv.Value) == id.String() {
				t.Compares = append(t.Compares, store.Compare{Key: lkv.Key, ModRevision: lkv.ModRevision})
				t.Ops = append(t.Ops, store.Op{Type: store.OpDelete, Key: lkv.Key})
			}
		}
		res, err := c.st.Txn(ctx, t)
		if err != nil {
			return released, fmt.Errorf("identity: gc: delete %s: %w", id, err)
		}
		if !res.Succeeded {
			// Referenced or changed since the List; the next round decides.
			continue
		}
		delete(c.unusedSince, id)
		released = append(released, id)
		c.log.Info("identity collected", "identity", id, "labels", rec.Labels, "unused_for", now.Sub(since))
	}
	for id := range c.unusedSince {
		if !present[id] {
			delete(c.unusedSince, id)
		}
	}
	slices.Sort(released)
	return released, nil
}
