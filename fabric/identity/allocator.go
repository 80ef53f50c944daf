package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"time"

	"github.com/fabric-net/fabric/fabric/store"
)

// Store is what identity needs from the cluster store; store.KV satisfies it.
type Store interface {
	// Get returns the key; found is false when it does not exist. Linearizable.
	Get(ctx context.Context, key string) (kv store.KeyValue, found bool, err error)
	// List returns every key under prefix, sorted.
	List(ctx context.Context, prefix string) (kvs []store.KeyValue, revision int64, err error)
	// Txn applies t atomically. An error means the write was not confirmed
	// (it may still land later); Allocate reads before it writes, so a retry
	// by the caller finds a write that did land.
	Txn(ctx context.Context, t store.Txn) (store.TxnResult, error)
}

// Key prefixes. They are part of the cluster's on-store format.
const (
	PrefixLabels = "identities/labels/"
	PrefixIDs    = "identities/ids/"
	PrefixRefs   = "identities/refs/"
)

// ErrExhausted means every allocatable local number of the cluster is in use.
var ErrExhausted = errors.New("identity: no free identity")

// maxAttempts bounds the read-try-write loops: a conflict means another writer
// made progress, so running out means heavy contention, not a bug.
const maxAttempts = 64

// Record is the value of identities/ids/<id>.
type Record struct {
	Labels    string    `json:"labels"`
	CreatedAt time.Time `json:"created_at"`
}

// Config configures identity allocation and collection.
type Config struct {
	// ClusterID is this cluster's ID, 1..65535, carried in every identity.
	// Clusters above 255 need Geneve: their identities do not fit a VXLAN VNI.
	ClusterID uint32
	// GCGrace is how long an identity stays unreferenced before it is
	// deleted (default 10m), so an endpoint restarting keeps its number.
	GCGrace time.Duration
}

// DefaultConfig returns cluster 1 with a 10 minute grace.
func DefaultConfig() Config { return Config{ClusterID: 1, GCGrace: 10 * time.Minute} }

// Validate checks the configuration and says which field is wrong and how to fix it.
func (c Config) Validate() error {
	var errs []error
	if c.ClusterID < 1 || c.ClusterID > MaxClusterID {
		errs = append(errs, fmt.Errorf("identity.cluster-id: %d is out of range; use 1..%d, unique in the mesh (1..255 to fit VXLAN)", c.ClusterID, MaxClusterID))
	}
	if c.GCGrace <= 0 {
		errs = append(errs, fmt.Errorf("identity.gc-grace: %s is not positive; use a duration longer than an endpoint restart, e.g. 10m", c.GCGrace))
	}
	return errors.Join(errs...)
}

func labelsKey(l Labels) string            { return PrefixLabels + l.String() }
func idKey(id ID) string                   { return PrefixIDs + id.String() }
func refPrefix(id ID) string               { return PrefixRefs + id.String() + "/" }
func refKey(id ID, node, ep string) string { return refPrefix(id) + node + "/" + ep }

// Allocator resolves label sets to identities for the endpoints of one node.
// It holds no state of its own, so it is safe for concurrent use and any
// number of nodes may allocate at once: the store's transactions decide.
type Allocator struct {
	cfg  Config
	st   Store
	node string
	log  *slog.Logger
	now  func() time.Time
}

// New returns the allocator of node. cfg must have passed Validate.
func New(cfg Config, st Store, node string, log *slog.Logger) *Allocator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Allocator{cfg: cfg, st: st, node: node, log: log.With("node", node), now: time.Now}
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

// Allocate returns the identity of labels and records that endpoint uses it.
// The same labels get the same identity on every node, also when nodes ask
// at the same moment; different labels never share one. Reserved label sets
// ("reserved:host") return their reserved identity without the store.
// Idempotent per (labels, endpoint).
func (a *Allocator) Allocate(ctx context.Context, labels Labels, endpoint string) (ID, error) {
	if id, ok := labels.reservedID(); ok {
		return id, nil
	}
	if labels.Len() == 0 {
		return 0, fmt.Errorf("identity: allocate for endpoint %s: %w", endpoint, errEmptyLabels)
	}
	if err := checkName("node name", a.node); err != nil {
		return 0, fmt.Errorf("identity: %w", err)
	}
	if endpoint == "" {
		return 0, errors.New("identity: allocate: endpoint is empty; give the endpoint's id")
	}
	lk := labelsKey(labels)
	for attempt := range maxAttempts {
		lkv, found, err := a.st.Get(ctx, lk)
		if err != nil {
			return 0, fmt.Errorf("identity: read %s: %w", lk, err)
		}
		if found {
			id, ok, err := a.reference(ctx, lkv, endpoint)
			if err != nil {
				return 0, err
			}
			if ok {
				return id, nil
			}
			continue // collected or changed under us: start over
		}
		id, ok, err := a.create(ctx, labels, endpoint, attempt)
		if err != nil {
			return 0, err
		}
		if ok {
			return id, nil
		}
		// Lost a race: another node created these labels (the next Get finds
		// them) or took the number for other labels (the next List skips it).
	}
	return 0, fmt.Errorf("identity: allocate %s: still conflicting after %d attempts; the store is under heavy contention, retry later", labels, maxAttempts)
}

// reference writes the endpoint's ref on an existing identity. The txn holds
// only while the identity is unchanged, so it cannot slip in after the
// Collector decided the identity is unused and deleted it.
func (a *Allocator) reference(ctx context.Context, lkv store.KeyValue, endpoint string) (ID, bool, error) {
	id, err := ParseID(string(lkv.Value))
	if err != nil {
		return 0, false, fmt.Errorf("identity: %s holds a bad id: %w", lkv.Key, err)
	}
	ikv, found, err := a.st.Get(ctx, idKey(id))
	if err != nil {
		return 0, false, fmt.Errorf("identity: read %s: %w", idKey(id), err)
	}
	if !found {
		return 0, false, nil
	}
	res, err := a.st.Txn(ctx, store.Txn{
		Compares: []store.Compare{
			{Key: lkv.Key, ModRevision: lkv.ModRevision},
			{Key: ikv.Key, ModRevision: ikv.ModRevision},
		},
		Ops: []store.Op{{Type: store.OpPut, Key: refKey(id, a.node, endpoint)}},
	})
	if err != nil {
		return 0, false, fmt.Errorf("identity: reference %s for endpoint %s: %w", id, endpoint, err)
	}
	return id, res.Succeeded, nil
}

// create allocates a new number for labels. The search starts at a hash of
// the labels, so nodes creating the same set at once pick the same number and
// conflict on both keys (one wins, the others read its result), while
// different sets mostly start apart and rarely collide.
func (a *Allocator) create(ctx context.Context, labels Labels, endpoint string, attempt int) (ID, bool, error) {
	kvs, _, err := a.st.List(ctx, PrefixIDs)
	if err != nil {
		return 0, false, fmt.Errorf("identity: list identities: %w", err)
	}
	used := make(map[uint16]bool, len(kvs))
	for _, kv := range kvs {
		if id, err := ParseID(strings.TrimPrefix(kv.Key, PrefixIDs)); err == nil && id.ClusterID() == a.cfg.ClusterID {
			used[id.Local()] = true
		}
	}
	const span = 1<<16 - MinLocal
	h := fnv.New32a()
	h.Write([]byte(labels.String()))
	start := h.Sum32() % span
	var id ID
	for i := range uint32(span) {
		local := uint16(MinLocal + (start+i)%span)
		if !used[local] {
			id, _ = Make(a.cfg.ClusterID, local)
			break
		}
	}
	if id == 0 {
		return 0, false, fmt.Errorf("%w: all %d local numbers of cluster %d are in use; release endpoints or wait for the collector (identity.gc-grace) to free unused identities", ErrExhausted, span, a.cfg.ClusterID)
	}
	rec, _ := json.Marshal(Record{Labels: labels.String(), CreatedAt: a.now().UTC()})
	res, err := a.st.Txn(ctx, store.Txn{
		Compares: []store.Compare{{Key: labelsKey(labels)}, {Key: idKey(id)}},
		Ops: []store.Op{
			{Type: store.OpPut, Key: labelsKey(labels), Value: []byte(id.String())},
			{Type: store.OpPut, Key: idKey(id), Value: rec},
			{Type: store.OpPut, Key: refKey(id, a.node, endpoint)},
		},
	})
	if err != nil {
		return 0, false, fmt.Errorf("identity: create %s for %s: %w", id, labels, err)
	}
	if res.Succeeded {
		a.log.Info("identity created", "identity", id, "labels", labels.String(), "endpoint", endpoint, "attempt", attempt)
	}
	return id, res.Succeeded, nil
}

// Release drops endpoint's reference on id from this node. The identity itself
// goes later, through the Collector. Idempotent; reserved ids are a no-op.
func (a *Allocator) Release(ctx context.Context, id ID, endpoint string) error {
	if id.IsReserved() {
		return nil
	}
	if endpoint == "" {
		return errors.New("identity: release: endpoint is empty; give the endpoint's id")
	}
	k := refKey(id, a.node, endpoint)
	// Reading first saves a replicated write when there is nothing to drop.
	if _, found, err := a.st.Get(ctx, k); err != nil {
		return fmt.Errorf("identity: read %s: %w", k, err)
	} else if !found {
		return nil
	}
	if _, err := a.st.Txn(ctx, store.Txn{Ops: []store.Op{{Type: store.OpDelete, Key: k}}}); err != nil {
		return fmt.Errorf("identity: release %s for endpoint %s: %w", id, endpoint, err)
	}
	return nil
}

// ReleaseNode drops every reference held by node's endpoints; the agent calls
// it when the node is gone (its CIDR was released). Idempotent.
func (a *Allocator) ReleaseNode(ctx context.Context, node string) error {
	if err := checkName("node name", node); err != nil {
		return fmt.Errorf("identity: release node: %w", err)
	}
	kvs, _, err := a.st.List(ctx, PrefixRefs)
	if err != nil {
		return fmt.Errorf("identity: list references: %w", err)
	}
	var keys []string
	for _, kv := range kvs {
		// identities/refs/<id>/<node>/<endpoint>
		parts := strings.SplitN(strings.TrimPrefix(kv.Key, PrefixRefs), "/", 3)
		if len(parts) == 3 && parts[1] == node {
			keys = append(keys, kv.Key)
		}
	}
	// Batches stay within the store's per-transaction op limit.
	const batch = 100
	for len(keys) > 0 {
		n := min(len(keys), batch)
		t := store.Txn{}
		for _, k := range keys[:n] {
			t.Ops = append(t.Ops, store.Op{Type: store.OpDelete, Key: k})
		}
		if _, err := a.st.Txn(ctx, t); err != nil {
			return fmt.Errorf("identity: release references of node %s: %w", node, err)
		}
		keys = keys[n:]
	}
	a.log.Info("node identity references released", "released_node", node)
	return nil
}

// Lookup returns the labels of id. Reserved ids answer without the store.
func (a *Allocator) Lookup(ctx context.Context, id ID) (Labels, bool, error) {
	if name, ok := reservedName(id); ok {
		return Labels{list: []Label{{Source: SourceReserved, Key: name}}}, true, nil
	}
	kv, found, err := a.st.Get(ctx, idKey(id))
	if err != nil || !found {
		if err != nil {
			err = fmt.Errorf("identity: lookup %s: %w", id, err)
		}
		return Labels{}, false, err
	}
	var rec Record
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return Labels{}, false, fmt.Errorf("identity: %s holds a bad record: %w", kv.Key, err)
	}
	l, err := ParseLabels(rec.Labels)
	if err != nil {
		return Labels{}, false, fmt.Errorf("identity: %s holds bad labels: %w", kv.Key, err)
	}
	return l, true, nil
}

// Count returns how many identities the store holds (reserved ones excluded).
func (a *Allocator) Count(ctx context.Context) (int, error) {
	kvs, _, err := a.st.List(ctx, PrefixIDs)
	if err != nil {
		return 0, fmt.Errorf("identity: count: %w", err)
	}
	return len(kvs), nil
}
