package store

import (
	"context"
	"fmt"
)

// Memory is a single-process store: the real state machine applied directly,
// without Raft or RPC. It gives control-plane unit tests the same semantics
// (revisions, compares, watches, compaction) the replicated store has.
type Memory struct {
	fsm *FSM
}

var _ KV = (*Memory)(nil)

// NewMemory returns an empty in-memory store with the default history size.
func NewMemory() *Memory { return NewMemoryWithHistory(DefaultHistorySize) }

// NewMemoryWithHistory returns an empty in-memory store that keeps
// historySize events for watches; tests of ErrCompacted handling use a small
// one.
func NewMemoryWithHistory(historySize int) *Memory {
	return &Memory{fsm: NewFSM(historySize)}
}

// FSM returns the state machine behind m.
func (m *Memory) FSM() *FSM { return m.fsm }

// Close ends every watch with ErrClosed; later writes fail.
func (m *Memory) Close() { m.fsm.Close() }

// Get implements KV.
func (m *Memory) Get(ctx context.Context, key string) (KeyValue, bool, error) {
	if err := ctx.Err(); err != nil {
		return KeyValue{}, false, fmt.Errorf("get %q: %w", key, err)
	}
	kv, ok := m.fsm.Get(key)
	return kv, ok, nil
}

// List implements KV.
func (m *Memory) List(ctx context.Context, prefix string) ([]KeyValue, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("list %q: %w", prefix, err)
	}
	kvs, rev := m.fsm.List(prefix)
	return kvs, rev, nil
}

// Txn implements KV.
func (m *Memory) Txn(ctx context.Context, t Txn) (TxnResult, error) {
	if err := ctx.Err(); err != nil {
		return TxnResult{}, fmt.Errorf("apply txn: %w", err)
	}
	r, err := m.fsm.ApplyTxn(t)
	if err != nil {
		return r, fmt.Errorf("apply txn: %w", err)
	}
	return r, nil
}

// Watch implements KV.
func (m *Memory) Watch(ctx context.Context, prefix string, fromRevision int64) <-chan WatchResponse {
	return m.fsm.Watch(ctx, prefix, fromRevision)
}
