// Package store owns the cluster's replicated key/value store: the
// deterministic state machine (keys, store-wide revisions, the event history
// that prefix watches replay), its replication over hashicorp/raft with a
// persistent log and snapshots, the authenticated RPC through which followers
// and client nodes reach the leader, and the in-memory single-process store
// that control-plane unit tests use. It does not own membership: the agent
// hands it the current set of peers from gossip (SetPeers).
package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/btree"
)

// Limits on a single transaction. They bound what one Raft log entry may
// hold, so that a single bad caller cannot stall replication or blow up a
// snapshot.
const (
	MaxOps       = 128
	MaxCompares  = 128
	MaxKeySize   = 4 << 10
	MaxValueSize = 1 << 20
	// MaxTxnSize bounds the keys and values of one transaction together.
	MaxTxnSize = 4 << 20

	// DefaultHistorySize is how many events the FSM keeps for watch replay.
	DefaultHistorySize = 100000

	// cmdVersion1 prefixes every encoded command: a version byte followed by
	// the JSON of a Txn. The byte lets a later release change the encoding
	// while still replaying old log entries.
	cmdVersion1 byte = 1
	// snapshotVersion1 is the version field of the snapshot document.
	snapshotVersion1 = 1

	// watchBatch caps the events of one WatchResponse (a revision is never
	// split across responses), so a lagging watcher catches up in bounded
	// steps without holding the FSM lock for long.
	watchBatch = 1024
)

// ErrInvalidTxn wraps every validation failure of a transaction or command.
// The state is unchanged when it is returned.
var ErrInvalidTxn = errors.New("store: invalid transaction")

// ErrClosed is the last response of a watch whose store was closed.
var ErrClosed = errors.New("store: closed")

// EncodeTxn encodes t as a command for FSM.Apply (and so for the Raft log).
func EncodeTxn(t Txn) ([]byte, error) {
	if err := ValidateTxn(t); err != nil {
		return nil, err
	}
	b, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("encode txn: %w", err)
	}
	return append([]byte{cmdVersion1}, b...), nil
}

// DecodeTxn decodes and validates a command made by EncodeTxn.
func DecodeTxn(cmd []byte) (Txn, error) {
	var t Txn
	if len(cmd) == 0 {
		return t, fmt.Errorf("%w: empty command", ErrInvalidTxn)
	}
	if cmd[0] != cmdVersion1 {
		return t, fmt.Errorf("%w: unknown command version %d (this build knows %d)", ErrInvalidTxn, cmd[0], cmdVersion1)
	}
	if err := json.Unmarshal(cmd[1:], &t); err != nil {
		return Txn{}, fmt.Errorf("%w: decode command: %v", ErrInvalidTxn, err)
	}
	if err := ValidateTxn(t); err != nil {
		return Txn{}, err
	}
	return t, nil
}

// ValidateTxn checks t against the limits and the forms of Compare and Op.
func ValidateTxn(t Txn) error {
	if len(t.Ops) > MaxOps {
		return fmt.Errorf("%w: %d ops, at most %d allowed; split the transaction", ErrInvalidTxn, len(t.Ops), MaxOps)
	}
	if len(t.Compares) > MaxCompares {
		return fmt.Errorf("%w: %d compares, at most %d allowed", ErrInvalidTxn, len(t.Compares), MaxCompares)
	}
	size := 0
	for i, c := range t.Compares {
		switch {
		case c.Key != "" && c.Prefix != "":
			return fmt.Errorf("%w: compare %d sets both key and prefix; use one form", ErrInvalidTxn, i)
		case c.Key == "" && c.Prefix == "":
			return fmt.Errorf("%w: compare %d has neither key nor prefix", ErrInvalidTxn, i)
		case c.ModRevision < 0:
			return fmt.Errorf("%w: compare %d has negative mod_revision %d", ErrInvalidTxn, i, c.ModRevision)
		case c.Prefix != "" && c.ModRevision != 0:
			return fmt.Errorf("%w: compare %d: a prefix compare takes no mod_revision", ErrInvalidTxn, i)
		case len(c.Key) > MaxKeySize || len(c.Prefix) > MaxKeySize:
			return fmt.Errorf("%w: compare %d key is longer than %d bytes", ErrInvalidTxn, i, MaxKeySize)
		}
		size += len(c.Key) + len(c.Prefix)
	}
	for i, op := range t.Ops {
		switch op.Type {
		case OpPut, OpDelete, OpDeletePrefix:
		default:
			return fmt.Errorf("%w: op %d has unknown type %q (want put, delete or delete_prefix)", ErrInvalidTxn, i, op.Type)
		}
		if op.Key == "" {
			return fmt.Errorf("%w: op %d (%s) has an empty key", ErrInvalidTxn, i, op.Type)
		}
		if len(op.Key) > MaxKeySize {
			return fmt.Errorf("%w: op %d key is %d bytes, at most %d allowed", ErrInvalidTxn, i, len(op.Key), MaxKeySize)
		}
		if op.Type != OpPut && len(op.Value) > 0 {
			return fmt.Errorf("%w: op %d (%s) carries a value", ErrInvalidTxn, i, op.Type)
		}
		if len(op.Value) > MaxValueSize {
			return fmt.Errorf("%w: op %d value for %q is %d bytes, at most %d allowed", ErrInvalidTxn, i, op.Key, len(op.Value), MaxValueSize)
		}
		size += len(op.Key) + len(op.Value)
	}
	if size > MaxTxnSize {
		return fmt.Errorf("%w: keys and values total %d bytes, at most %d allowed", ErrInvalidTxn, size, MaxTxnSize)
	}
	return nil
}

func lessKV(a, b KeyValue) bool { return a.Key < b.Key }

// FSM is the deterministic state machine of the store. Every server applies
// the same commands in the same order and reaches the same state; nothing in
// Apply depends on time, randomness or the local node. All methods are safe
// for concurrent use; Apply never blocks on watchers.
type FSM struct {
	mu        sync.RWMutex
	kvs       *btree.BTreeG[KeyValue]
	rev       int64
	compacted int64
	hist      history
	// notify is closed and replaced after every change so that watchers
	// waiting for new events wake up without Apply ever blocking on them.
	notify chan struct{}
	closed bool
}

// NewFSM returns an empty state machine keeping historySize events for
// watches (DefaultHistorySize when <= 0).
func NewFSM(historySize int) *FSM {
	if historySize <= 0 {
		historySize = DefaultHistorySize
	}
	return &FSM{
		kvs:    btree.NewG(32, lessKV),
		hist:   history{max: historySize},
		notify: make(chan struct{}),
	}
}

// Apply decodes and applies one command. A command that does not decode or
// validate returns an error wrapping ErrInvalidTxn and changes nothing.
func (f *FSM) Apply(cmd []byte) (TxnResult, error) {
	t, err := DecodeTxn(cmd)
	if err != nil {
		return TxnResult{}, err
	}
	return f.ApplyTxn(t)
}

// ApplyTxn validates and applies t atomically.
func (f *FSM) ApplyTxn(t Txn) (TxnResult, error) {
	if err := ValidateTxn(t); err != nil {
		return TxnResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return TxnResult{}, ErrClosed
	}

	var failed []int
	for i, c := range t.Compares {
		if !f.holds(c) {
			failed = append(failed, i)
		}
	}
	if len(failed) > 0 {
		return TxnResult{Succeeded: false, Revision: f.rev, Failed: failed}, nil
	}

	// Validation passed, so no op below can fail: the txn applies whole.
	rev := f.rev + 1
	var events []Event
	for _, op := range t.Ops {
		switch op.Type {
		case OpPut:
			kv := KeyValue{Key: op.Key, Value: bytes.Clone(op.Value), CreateRevision: rev, ModRevision: rev, Version: 1}
			if old, ok := f.kvs.Get(KeyValue{Key: op.Key}); ok {
				kv.CreateRevision = old.CreateRevision
				kv.Version = old.Version + 1
			}
			f.kvs.ReplaceOrInsert(kv)
			events = append(events, Event{Type: EventPut, KV: kv})
		case OpDelete:
			if _, ok := f.kvs.Delete(KeyValue{Key: op.Key}); ok {
				events = append(events, Event{Type: EventDelete, KV: KeyValue{Key: op.Key, ModRevision: rev}})
			}
		case OpDeletePrefix:
			var keys []string
			f.kvs.AscendGreaterOrEqual(KeyValue{Key: op.Key}, func(kv KeyValue) bool {
				if !strings.HasPrefix(kv.Key, op.Key) {
					return false
				}
				keys = append(keys, kv.Key)
				return true
			})
			for _, k := range keys {
				f.kvs.Delete(KeyValue{Key: k})
				events = append(events, Event{Type: EventDelete, KV: KeyValue{Key: k, ModRevision: rev}})
			}
		}
	}
	if len(events) == 0 {
		// Deletes of absent keys change nothing, so the revision stays.
		return TxnResult{Succeeded: true, Revision: f.rev}, nil
	}
	f.rev = rev
	for _, ev := range events {
		if dropped, ok := f.hist.push(ev); ok && dropped > f.compacted {
			f.compacted = dropped
		}
	}
	f.wake()
	return TxnResult{Succeeded: true, Revision: rev}, nil
}

// wake tells waiting watchers that something changed. Callers hold f.mu.
func (f *FSM) wake() {
	close(f.notify)
	f.notify = make(chan struct{})
}

func (f *FSM) holds(c Compare) bool {
	if c.Prefix != "" {
		return !f.hasPrefix(c.Prefix)
	}
	kv, ok := f.kvs.Get(KeyValue{Key: c.Key})
	if c.ModRevision == 0 {
		return !ok
	}
	return ok && kv.ModRevision == c.ModRevision
}

func (f *FSM) hasPrefix(prefix string) bool {
	found := false
	f.kvs.AscendGreaterOrEqual(KeyValue{Key: prefix}, func(kv KeyValue) bool {
		found = strings.HasPrefix(kv.Key, prefix)
		return false
	})
	return found
}

// Get returns a copy of key.
func (f *FSM) Get(key string) (KeyValue, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	kv, ok := f.kvs.Get(KeyValue{Key: key})
	if !ok {
		return KeyValue{}, false
	}
	kv.Value = bytes.Clone(kv.Value)
	return kv, true
}

// List returns copies of every key under prefix, sorted, and the revision.
func (f *FSM) List(prefix string) ([]KeyValue, int64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []KeyValue
	f.kvs.AscendGreaterOrEqual(KeyValue{Key: prefix}, func(kv KeyValue) bool {
		if !strings.HasPrefix(kv.Key, prefix) {
			return false
		}
		kv.Value = bytes.Clone(kv.Value)
		out = append(out, kv)
		return true
	})
	return out, f.rev
}

// Revision returns the current store revision.
func (f *FSM) Revision() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.rev
}

// CompactedRevision returns the newest revision whose events are gone from
// the history; watches must start above it.
func (f *FSM) CompactedRevision() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.compacted
}

// Close ends every watch with ErrClosed and refuses further applies.
func (f *FSM) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		f.wake()
	}
}

// snapshotDoc is the persisted form of the state. The history is not part of
// it: after a restore, watches must start above the restored revision.
type snapshotDoc struct {
	Version  int        `json:"version"`
	Revision int64      `json:"revision"`
	KVs      []KeyValue `json:"kvs"`
}

// Snapshot is a point-in-time copy of the state, cheap to take (the key tree
// is copy-on-write) and safe to write while applies continue.
type Snapshot struct {
	rev int64
	kvs *btree.BTreeG[KeyValue]
}

// Snapshot captures the current state.
func (f *FSM) Snapshot() *Snapshot {
	f.mu.Lock() // Clone mutates the tree's copy-on-write bookkeeping.
	defer f.mu.Unlock()
	return &Snapshot{rev: f.rev, kvs: f.kvs.Clone()}
}

// Revision is the revision the snapshot was taken at.
func (s *Snapshot) Revision() int64 { return s.rev }

// WriteTo writes the snapshot as one JSON document.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	doc := snapshotDoc{Version: snapshotVersion1, Revision: s.rev, KVs: make([]KeyValue, 0, s.kvs.Len())}
	s.kvs.Ascend(func(kv KeyValue) bool {
		doc.KVs = append(doc.KVs, kv)
		return true
	})
	cw := &countingWriter{w: w}
	if err := json.NewEncoder(cw).Encode(doc); err != nil {
		return cw.n, fmt.Errorf("write snapshot at revision %d: %w", s.rev, err)
	}
	return cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Restore replaces the state with a snapshot written by Snapshot.WriteTo.
// The snapshot is decoded and checked in full before anything changes, so a
// bad snapshot leaves the state as it was. Afterwards the history is empty
// and watchers that have not reached the restored revision get ErrCompacted.
func (f *FSM) Restore(r io.Reader) error {
	var doc snapshotDoc
	dec := json.NewDecoder(r)
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("restore snapshot: decode: %w", err)
	}
	if doc.Version != snapshotVersion1 {
		return fmt.Errorf("restore snapshot: unknown version %d (this build knows %d)", doc.Version, snapshotVersion1)
	}
	if doc.Revision < 0 {
		return fmt.Errorf("restore snapshot: negative revision %d", doc.Revision)
	}
	kvs := btree.NewG(32, lessKV)
	for i, kv := range doc.KVs {
		switch {
		case kv.Key == "":
			return fmt.Errorf("restore snapshot: entry %d has an empty key", i)
		case kv.CreateRevision <= 0 || kv.ModRevision < kv.CreateRevision || kv.ModRevision > doc.Revision:
			return fmt.Errorf("restore snapshot: key %q has revisions create=%d mod=%d outside 1..%d", kv.Key, kv.CreateRevision, kv.ModRevision, doc.Revision)
		case kv.Version <= 0:
			return fmt.Errorf("restore snapshot: key %q has version %d", kv.Key, kv.Version)
		}
		if _, dup := kvs.ReplaceOrInsert(kv); dup {
			return fmt.Errorf("restore snapshot: key %q appears twice", kv.Key)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kvs = kvs
	f.rev = doc.Revision
	f.compacted = doc.Revision
	f.hist.reset()
	f.wake()
	return nil
}

// history is a ring of the most recent events, oldest first. Revisions are
// non-decreasing along the ring, so lookups by revision are binary searches.
// It grows on demand up to max so that small stores stay small.
type history struct {
	max   int
	buf   []Event
	start int
	n     int
}

// push appends ev and, when the ring was full, returns the revision of the
// event it dropped.
func (h *history) push(ev Event) (int64, bool) {
	if len(h.buf) < h.max {
		h.buf = append(h.buf, ev)
		h.n++
		return 0, false
	}
	old := h.buf[h.start]
	h.buf[h.start] = ev
	h.start = (h.start + 1) % len(h.buf)
	return old.KV.ModRevision, true
}

func (h *history) at(i int) Event { return h.buf[(h.start+i)%len(h.buf)] }

func (h *history) reset() {
	h.buf, h.start, h.n = nil, 0, 0
}

// firstFrom returns the index of the first event with revision >= rev.
func (h *history) firstFrom(rev int64) int {
	return sort.Search(h.n, func(i int) bool { return h.at(i).KV.ModRevision >= rev })
}

// collect gathers the events under prefix with revision >= next, at most
// about watchBatch of them without splitting a revision. It returns the
// revision the scan reached (the watcher continues at reached+1) and whether
// next was already compacted. Callers hold f.mu for reading.
func (f *FSM) collect(prefix string, next int64) (evs []Event, reached int64, compacted bool) {
	if next <= f.compacted {
		return nil, 0, true
	}
	reached = f.rev
	for i := f.hist.firstFrom(next); i < f.hist.n; i++ {
		ev := f.hist.at(i)
		if len(evs) >= watchBatch && ev.KV.ModRevision != evs[len(evs)-1].KV.ModRevision {
			reached = evs[len(evs)-1].KV.ModRevision
			break
		}
		if strings.HasPrefix(ev.KV.Key, prefix) {
			ev.KV.Value = bytes.Clone(ev.KV.Value)
			evs = append(evs, ev)
		}
	}
	return evs, reached, false
}

// Watch implements the watch half of KV on the local state.
func (f *FSM) Watch(ctx context.Context, prefix string, fromRevision int64) <-chan WatchResponse {
	return f.watch(ctx, prefix, fromRevision, 0)
}

// watch streams events to one watcher. Each watcher pulls from the history
// by revision in its own goroutine, so Apply never waits for a slow watcher:
// a slow one lags, and only if it falls behind the history's horizon does it
// get ErrCompacted. With progress > 0 it also sends event-less responses at
// that interval when the revision moved, so remote watchers can resume from
// a recent revision.
func (f *FSM) watch(ctx context.Context, prefix string, fromRevision int64, progress time.Duration) <-chan WatchResponse {
	out := make(chan WatchResponse, 1)
	f.mu.RLock()
	next := fromRevision
	if next <= 0 {
		next = f.rev + 1
	}
	f.mu.RUnlock()

	go func() {
		defer close(out)
		send := func(r WatchResponse) bool {
			select {
			case out <- r:
				return true
			case <-ctx.Done():
				return false
			}
		}
		var tick <-chan time.Time
		if progress > 0 {
			t := time.NewTicker(progress)
			defer t.Stop()
			tick = t.C
		}
		sentUpTo := next - 1
		for {
			f.mu.RLock()
			wait, closed := f.notify, f.closed
			evs, reached, compacted := f.collect(prefix, next)
			compactedAt := f.compacted
			f.mu.RUnlock()

			switch {
			case closed:
				send(WatchResponse{Revision: reached, Err: ErrClosed})
				return
			case compacted:
				send(WatchResponse{Revision: compactedAt, Err: fmt.Errorf("watch %q from revision %d (history starts after %d): %w", prefix, next, compactedAt, ErrCompacted)})
				return
			}
			if reached >= next {
				next = reached + 1
			}
			if len(evs) > 0 {
				if !send(WatchResponse{Events: evs, Revision: reached}) {
					return
				}
				sentUpTo = reached
				continue // there may be more beyond this batch
			}
			select {
			case <-ctx.Done():
				return
			case <-wait:
			case <-tick:
				if reached > sentUpTo {
					if !send(WatchResponse{Revision: reached}) {
						return
					}
					sentUpTo = reached
				}
			}
		}
	}()
	return out
}
