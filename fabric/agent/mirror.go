package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/fabric-net/fabric/fabric/store"
)

// mirror keeps a local copy of every key under a prefix: it lists once,
// then follows the store's watch from the list's revision, and lists again
// when the store says the revision was compacted. Consumers read Snapshot
// and are poked through Changed.
type mirror struct {
	prefix  string
	log     *slog.Logger
	changed chan struct{}

	mu    sync.Mutex
	kvs   map[string][]byte
	ready bool
	// rev is the store revision the copy reflects.
	rev int64
	// revCh is closed and replaced whenever rev moves, to wake waiters.
	revCh chan struct{}
}

func newMirror(prefix string, log *slog.Logger) *mirror {
	return &mirror{prefix: prefix, log: log, changed: make(chan struct{}, 1), kvs: map[string][]byte{}, revCh: make(chan struct{})}
}

// Snapshot returns a copy of the mirrored keys, and false until the first
// full list arrived: acting on a partial view would remove live state.
func (m *mirror) Snapshot() (map[string][]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.kvs), m.ready
}

// Revision is the store revision the copy reflects; it changes whenever
// the copy does.
func (m *mirror) Revision() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rev
}

// Changed is poked (without blocking) after every change.
func (m *mirror) Changed() <-chan struct{} { return m.changed }

// setRevLocked records that the copy reflects rev; m.mu must be held.
func (m *mirror) setRevLocked(rev int64) {
	if rev > m.rev {
		m.rev = rev
		close(m.revCh)
		m.revCh = make(chan struct{})
	}
}

// WaitRevision blocks until the copy reflects at least rev, so that a
// caller who just wrote a key acts on a view that includes its write.
func (m *mirror) WaitRevision(ctx context.Context, rev int64) error {
	for {
		m.mu.Lock()
		cur, ch := m.rev, m.revCh
		m.mu.Unlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for store revision %d (at %d): %w", rev, cur, ctx.Err())
		case <-ch:
		}
	}
}

func (m *mirror) poke() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// run mirrors until ctx ends, retrying with backoff while the store is
// unreachable.
func (m *mirror) run(ctx context.Context, kv store.KV) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := m.list(ctx, kv)
		if err != nil {
			m.log.Debug("mirror list failed", "prefix", m.prefix, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		err = m.follow(ctx, kv, rev+1)
		if ctx.Err() == nil {
			m.log.Info("store watch ended, listing again", "prefix", m.prefix, "err", err)
		}
	}
}

func (m *mirror) list(ctx context.Context, kv store.KV) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kvs, rev, err := kv.List(lctx, m.prefix)
	if err != nil {
		return 0, err
	}
	fresh := make(map[string][]byte, len(kvs))
	for _, e := range kvs {
		fresh[e.Key] = e.Value
	}
	m.mu.Lock()
	m.kvs, m.ready = fresh, true
	m.setRevLocked(rev)
	m.mu.Unlock()
	m.poke()
	return rev, nil
}

func (m *mirror) follow(ctx context.Context, kv store.KV, from int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range kv.Watch(wctx, m.prefix, from) {
		if resp.Err != nil {
			return resp.Err
		}
		m.mu.Lock()
		for _, ev := range resp.Events {
			switch ev.Type {
			case store.EventPut:
				m.kvs[ev.KV.Key] = ev.KV.Value
			case store.EventDelete:
				delete(m.kvs, ev.KV.Key)
			}
			m.setRevLocked(ev.KV.ModRevision)
		}
		m.setRevLocked(resp.Revision)
		m.mu.Unlock()
		m.poke()
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("watch channel closed")
}
