package store

import (
	"context"
	"errors"
)

// KeyValue is one key as the store holds it. Revisions are store-wide and
// strictly increasing: every applied write that changes anything gets the next
// revision, shared by all keys it touches.
type KeyValue struct {
	Key            string `json:"key"`
	Value          []byte `json:"value,omitempty"`
	CreateRevision int64  `json:"create_revision"`
	ModRevision    int64  `json:"mod_revision"`
	// Version counts writes to the key since it was created (1 on create).
	Version int64 `json:"version"`
}

// OpType is what an Op does.
type OpType string

const (
	OpPut    OpType = "put"
	OpDelete OpType = "delete"
	// OpDeletePrefix deletes every key under Key.
	OpDeletePrefix OpType = "delete_prefix"
)

// Op is one write inside a transaction.
type Op struct {
	Type  OpType `json:"type"`
	Key   string `json:"key"`
	Value []byte `json:"value,omitempty"`
}

// Compare is one condition of a transaction. Exactly one form is used:
//   - Key set, Prefix empty: the key's ModRevision must equal ModRevision;
//     ModRevision 0 means "the key must not exist".
//   - Prefix set: no key may exist under Prefix (allocation guards such as
//     "no endpoint still uses this identity").
type Compare struct {
	Key         string `json:"key,omitempty"`
	ModRevision int64  `json:"mod_revision"`
	Prefix      string `json:"prefix,omitempty"`
}

// Txn is an atomic compare-and-write: if every Compare holds, all Ops are
// applied at one new revision; otherwise nothing changes.
type Txn struct {
	Compares []Compare `json:"compares,omitempty"`
	Ops      []Op      `json:"ops"`
}

// TxnResult tells whether the compares held and at which revision the store
// stood afterwards.
type TxnResult struct {
	Succeeded bool  `json:"succeeded"`
	Revision  int64 `json:"revision"`
	// Failed lists the indexes of compares that did not hold.
	Failed []int `json:"failed,omitempty"`
}

// EventType is the kind of change an Event reports.
type EventType string

const (
	EventPut    EventType = "put"
	EventDelete EventType = "delete"
)

// Event is one change to one key. For deletes, KV holds the key and the
// revision of the delete in ModRevision.
type Event struct {
	Type EventType `json:"type"`
	KV   KeyValue  `json:"kv"`
}

// WatchResponse carries events in revision order. A response with Err set is
// the last one on its channel: ErrCompacted means the requested revision is
// no longer in the history and the caller must List again and watch from the
// revision List returned + 1.
type WatchResponse struct {
	Events []Event `json:"events,omitempty"`
	// Revision is the store revision the sender had reached; it may be higher
	// than the last event's when the watcher's prefix saw no change.
	Revision int64 `json:"revision"`
	Err      error `json:"-"`
}

// KV is the store as the control plane uses it. The server-backed and the
// client-backed stores both implement it.
type KV interface {
	// Get returns the key, found=false when it does not exist. Reads are
	// linearizable: served by the leader after it confirmed its leadership.
	Get(ctx context.Context, key string) (kv KeyValue, found bool, err error)
	// List returns every key under prefix, sorted, and the revision the list
	// was taken at.
	List(ctx context.Context, prefix string) (kvs []KeyValue, revision int64, err error)
	// Txn applies t atomically through the Raft leader. An error means the
	// write was not confirmed; see ErrNoQuorum and ErrNoLeader.
	Txn(ctx context.Context, t Txn) (TxnResult, error)
	// Watch sends every change under prefix with a revision >= fromRevision,
	// in order, without gaps, until ctx ends. fromRevision 0 means "from now".
	// The channel is closed after ctx ends or after a response with Err.
	Watch(ctx context.Context, prefix string, fromRevision int64) <-chan WatchResponse
}

var (
	// ErrCompacted is returned to a watcher whose start revision was dropped
	// from the history.
	ErrCompacted = errors.New("store: requested revision is compacted; list again and watch from the list revision")
	// ErrNoLeader means no server currently knows a leader: the cluster is
	// electing, or this node cannot reach a majority of the servers.
	ErrNoLeader = errors.New("store: no leader: this node cannot reach a majority of the store servers; the write was not applied")
	// ErrNoQuorum means the leader could not commit in time. The write may
	// still be applied later if the leader regains its majority; callers
	// that must know re-read before retrying.
	ErrNoQuorum = errors.New("store: write not confirmed: the leader cannot reach a majority of the store servers")
	// ErrNoAnswer means the server a request went to did not answer in
	// time: this node is likely cut off from it. A write may or may not
	// have been applied.
	ErrNoAnswer = errors.New("store: no answer in time from the store server: this node may be cut off from the majority of the servers; a write may or may not have been applied")
	// ErrNoServers means a client node knows no store server to talk to.
	ErrNoServers = errors.New("store: no store server known: check the join addresses and that servers are running")
)

// Put writes key unconditionally and returns the new revision.
func Put(ctx context.Context, kv KV, key string, value []byte) (int64, error) {
	r, err := kv.Txn(ctx, Txn{Ops: []Op{{Type: OpPut, Key: key, Value: value}}})
	return r.Revision, err
}

// Delete removes key unconditionally and returns the new revision.
func Delete(ctx context.Context, kv KV, key string) (int64, error) {
	r, err := kv.Txn(ctx, Txn{Ops: []Op{{Type: OpDelete, Key: key}}})
	return r.Revision, err
}

// CreateIfAbsent writes key only when it does not exist yet.
func CreateIfAbsent(ctx context.Context, kv KV, key string, value []byte) (bool, error) {
	r, err := kv.Txn(ctx, Txn{
		Compares: []Compare{{Key: key, ModRevision: 0}},
		Ops:      []Op{{Type: OpPut, Key: key, Value: value}},
	})
	return r.Succeeded, err
}

// CompareAndSwap writes key only when its ModRevision is still modRevision.
func CompareAndSwap(ctx context.Context, kv KV, key string, modRevision int64, value []byte) (bool, error) {
	r, err := kv.Txn(ctx, Txn{
		Compares: []Compare{{Key: key, ModRevision: modRevision}},
		Ops:      []Op{{Type: OpPut, Key: key, Value: value}},
	})
	return r.Succeeded, err
}
