package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fabric-net/fabric/fabric/store"
)

func newStore(t testing.TB) *store.Memory {
	t.Helper()
	st := store.NewMemory()
	t.Cleanup(st.Close)
	return st
}

func TestBitLayout(t *testing.T) {
	tests := []struct {
		cluster uint32
		local   uint16
		want    ID
		vni     bool
	}{
		{1, 256, 1<<16 | 256, true},
		{1, 65535, 1<<16 | 65535, true},
		{255, 300, 255<<16 | 300, true},
		{256, 300, 1<<24 | 300, false},
		{257, 1000, 1<<24 | 1<<16 | 1000, false},
		{65535, 65535, 0xffffffff, false},
	}
	for _, tt := range tests {
		id, err := Make(tt.cluster, tt.local)
		if err != nil {
			t.Fatalf("Make(%d, %d): %v", tt.cluster, tt.local, err)
		}
		if id != tt.want {
			t.Errorf("Make(%d, %d) = %#x, want %#x", tt.cluster, tt.local, uint32(id), uint32(tt.want))
		}
		if id.ClusterID() != tt.cluster || id.Local() != tt.local {
			t.Errorf("%#x: cluster %d local %d, want %d %d", uint32(id), id.ClusterID(), id.Local(), tt.cluster, tt.local)
		}
		if id.FitsVNI() != tt.vni {
			t.Errorf("%#x: FitsVNI = %v, want %v", uint32(id), id.FitsVNI(), tt.vni)
		}
		if id.IsReserved() {
			t.Errorf("%#x reported reserved", uint32(id))
		}
		if p, err := ParseID(id.String()); err != nil || p != id {
			t.Errorf("ParseID(%s) = %v, %v", id, p, err)
		}
	}
	for _, bad := range []struct {
		c uint32
		l uint16
	}{{65536, 300}, {1, 0}, {0, 256}} {
		if _, err := Make(bad.c, bad.l); err == nil {
			t.Errorf("Make(%d, %d) accepted", bad.c, bad.l)
		}
	}
	if id, err := Make(7, 100); err != nil || !id.IsReserved() {
		t.Errorf("local 100 in cluster 7 should be reserved: %v %v", id, err)
	}
}

func TestReserved(t *testing.T) {
	want := map[string]ID{"host": 1, "world": 2, "unmanaged": 3, "health": 4, "init": 5, "remote-node": 6,
		"kube-apiserver": 7, "ingress": 8, "world-ipv4": 9, "world-ipv6": 10}
	got := Reserved()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Reserved() = %v", got)
	}
	got["host"] = 99 // a copy
	for name, id := range want {
		if r, ok := ReservedByName(name); !ok || r != id {
			t.Errorf("ReservedByName(%s) = %d, %v", name, r, ok)
		}
		if r, ok := ReservedByName("reserved:" + name); !ok || r != id {
			t.Errorf("ReservedByName(reserved:%s) = %d, %v", name, r, ok)
		}
		if !id.IsReserved() || id.ClusterID() != 0 {
			t.Errorf("%s: not reserved or has cluster bits", name)
		}
	}
	if _, ok := ReservedByName("nope"); ok {
		t.Error("unknown name resolved")
	}
	// Reserved label sets resolve without the store (nil store would panic).
	a := New(DefaultConfig(), nil, "n1", nil)
	id, err := a.Allocate(context.Background(), MustParseLabels("reserved:host"), "ep")
	if err != nil || id != Host {
		t.Fatalf("reserved:host = %d, %v", id, err)
	}
	l, ok, err := a.Lookup(context.Background(), RemoteNode)
	if err != nil || !ok || l.String() != "reserved:remote-node" {
		t.Fatalf("Lookup(RemoteNode) = %s %v %v", l, ok, err)
	}
	if err := a.Release(context.Background(), Host, "ep"); err != nil {
		t.Fatal(err)
	}
}

func TestParseLabels(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"app=web", "app=web", ""},
		{"tier=db, k8s:app=web", "k8s:app=web;tier=db", ""},
		{"b=2;a=1", "a=1;b=2", ""},
		{"a=1,a=1", "a=1", ""},
		{"a=", "a=", ""},
		{"", "", ""},
		{"k8s:app.kubernetes.io/name=web-1", "k8s:app.kubernetes.io/name=web-1", ""},
		{"reserved:host", "reserved:host", ""},
		{"reserved:host=", "reserved:host", ""},
		{"a=1,a=2", "", "given twice"},
		{"app", "", "'=' missing"},
		{"=web", "", "empty key"},
		{"a b=c", "", "invalid character"},
		{"a=b=c", "", "invalid character"},
		{":a=b", "", "empty source"},
		{"K8S:a=b", "", "source"},
		{"reserved:nope", "", "unknown reserved"},
		{"reserved:host,a=b", "", "alone"},
		{"reserved:host=x", "", "no value"},
	}
	for _, tt := range tests {
		l, err := ParseLabels(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseLabels(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseLabels(%q): %v", tt.in, err)
			continue
		}
		if l.String() != tt.want {
			t.Errorf("ParseLabels(%q) = %q, want %q", tt.in, l, tt.want)
		}
	}
	m, err := LabelsFromMap(map[string]string{"k8s:app": "web", "tier": "db"})
	if err != nil || m.String() != "k8s:app=web;tier=db" {
		t.Fatalf("LabelsFromMap = %s, %v", m, err)
	}
	if back := m.Map(); back["k8s:app"] != "web" || back["tier"] != "db" || len(back) != 2 {
		t.Fatalf("Map() = %v", back)
	}
	if _, err := LabelsFromMap(map[string]string{"": "x"}); err == nil {
		t.Fatal("empty key accepted")
	}
}

func FuzzParseLabels(f *testing.F) {
	for _, s := range []string{"app=web", "k8s:app=web,tier=db", "a=1;a=2", "reserved:host", "=", ",;,", "a:b:c=d", "x=y@z+1:2/3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLabels(s)
		if err != nil {
			return
		}
		canon := l.String()
		l2, err := ParseLabels(canon)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", canon, s, err)
		}
		if l2.String() != canon || !l2.Equal(l) {
			t.Fatalf("round trip of %q: %q != %q", s, l2, canon)
		}
		l3, err := LabelsFromMap(l.Map())
		if err != nil || l3.String() != canon {
			t.Fatalf("map round trip of %q: %q, %v", canon, l3, err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{{ClusterID: 0, GCGrace: time.Minute}, {ClusterID: 65536, GCGrace: time.Minute}, {ClusterID: 1}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestAllocateLookupRelease(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	cfg := DefaultConfig()
	cfg.ClusterID = 300
	a := New(cfg, st, "n1", nil)
	web := MustParseLabels("app=web")
	id, err := a.Allocate(ctx, web, "ep1")
	if err != nil {
		t.Fatal(err)
	}
	if id.ClusterID() != 300 || id.IsReserved() || id.FitsVNI() {
		t.Fatalf("id %d: cluster %d", id, id.ClusterID())
	}
	if again, err := a.Allocate(ctx, web, "ep2"); err != nil || again != id {
		t.Fatalf("same labels: %d, %v; want %d", again, err, id)
	}
	db, err := a.Allocate(ctx, MustParseLabels("app=db"), "ep3")
	if err != nil || db == id {
		t.Fatalf("different labels got %d (web %d), %v", db, id, err)
	}
	if l, ok, err := a.Lookup(ctx, id); err != nil || !ok || !l.Equal(web) {
		t.Fatalf("Lookup = %s %v %v", l, ok, err)
	}
	if _, ok, err := a.Lookup(ctx, id+12345); err != nil || ok {
		t.Fatalf("Lookup of unknown = %v %v", ok, err)
	}
	if n, err := a.Count(ctx); err != nil || n != 2 {
		t.Fatalf("Count = %d %v", n, err)
	}
	for range 2 {
		if err := a.Release(ctx, id, "ep1"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Allocate(ctx, Labels{}, "ep"); err == nil {
		t.Fatal("empty labels accepted")
	}
	if _, err := a.Allocate(ctx, web, ""); err == nil {
		t.Fatal("empty endpoint accepted")
	}
}

func TestConcurrentAllocation(t *testing.T) {
	st := newStore(t)
	cfg := DefaultConfig()
	const nodes, sets = 16, 24
	type result struct {
		labels string
		id     ID
		err    error
	}
	results := make(chan result, nodes*sets)
	var wg sync.WaitGroup
	for n := range nodes {
		a := New(cfg, st, fmt.Sprintf("node%d", n), nil)
		for s := range sets {
			// Overlapping sets: every node asks for every set, in a different order.
			s := (s + n) % sets
			wg.Go(func() {
				l := MustParseLabels(fmt.Sprintf("app=a%d,k8s:ns=x", s))
				id, err := a.Allocate(context.Background(), l, fmt.Sprintf("ep%d", s))
				results <- result{l.String(), id, err}
			})
		}
	}
	wg.Wait()
	close(results)
	byLabels := map[string]ID{}
	byID := map[ID]string{}
	for r := range results {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if id, ok := byLabels[r.labels]; ok && id != r.id {
			t.Fatalf("%s got %d and %d", r.labels, id, r.id)
		}
		if l, ok := byID[r.id]; ok && l != r.labels {
			t.Fatalf("id %d given to %s and %s", r.id, l, r.labels)
		}
		byLabels[r.labels], byID[r.id] = r.id, r.labels
	}
	if len(byLabels) != sets {
		t.Fatalf("%d sets resolved, want %d", len(byLabels), sets)
	}
	kvs, _, _ := st.List(context.Background(), PrefixRefs)
	if len(kvs) != nodes*sets {
		t.Fatalf("%d refs, want %d", len(kvs), nodes*sets)
	}
}

func TestCollector(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	cfg := DefaultConfig()
	cfg.GCGrace = 10 * time.Minute
	n1, n2 := New(cfg, st, "n1", nil), New(cfg, st, "n2", nil)
	web, db := MustParseLabels("app=web"), MustParseLabels("app=db")
	idWeb, _ := n1.Allocate(ctx, web, "ep1")
	if id, _ := n2.Allocate(ctx, web, "ep1"); id != idWeb {
		t.Fatal("nodes disagree")
	}
	idDB, _ := n1.Allocate(ctx, db, "ep2")

	c := NewCollector(cfg, st, nil)
	t0 := time.Unix(1_000_000, 0)
	step := func(at time.Duration, want string) {
		t.Helper()
		got, err := c.Reconcile(ctx, t0.Add(at))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != want {
			t.Fatalf("at %s collected %v, want %s", at, got, want)
		}
	}
	step(0, "[]")
	n1.Release(ctx, idDB, "ep2")
	n1.Release(ctx, idWeb, "ep1") // n2 still references web
	step(time.Minute, "[]")
	step(5*time.Minute, "[]")
	// db referenced again before the grace: its timer restarts.
	if id, _ := n2.Allocate(ctx, db, "ep9"); id != idDB {
		t.Fatalf("db got %d, want the existing %d", id, idDB)
	}
	step(6*time.Minute, "[]")
	n2.Release(ctx, idDB, "ep9")
	step(7*time.Minute, "[]")
	step(16*time.Minute, "[]")
	step(17*time.Minute, fmt.Sprintf("[%d]", idDB))
	if _, ok, _ := n1.Lookup(ctx, idDB); ok {
		t.Fatal("collected identity still there")
	}
	if kv, ok, _ := st.Get(ctx, PrefixLabels+"app=db"); ok {
		t.Fatalf("labels key left: %v", kv)
	}
	// web is still referenced by n2 long after.
	step(time.Hour, "[]")
	// n2 goes away: its references go, and web is collected after the grace.
	if err := n1.ReleaseNode(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	step(2*time.Hour, "[]")
	// A new collector (leader change) starts over: later, never sooner.
	c = NewCollector(cfg, st, nil)
	step(2*time.Hour+9*time.Minute, "[]")
	step(2*time.Hour+19*time.Minute, fmt.Sprintf("[%d]", idWeb))
	if n, _ := n1.Count(ctx); n != 0 {
		t.Fatalf("%d identities left", n)
	}
	// db asked again gets a fresh identity.
	if _, err := n1.Allocate(ctx, db, "ep2"); err != nil {
		t.Fatal(err)
	}
}

// TestCollectorRace runs allocation and collection at once: an endpoint that
// got an identity must find it in the store afterwards.
func TestCollectorRace(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	cfg := DefaultConfig()
	cfg.GCGrace = time.Nanosecond
	a := New(cfg, st, "n1", nil)
	c := NewCollector(cfg, st, nil)
	l := MustParseLabels("app=racy")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		now := time.Unix(0, 0)
		for {
			select {
			case <-stop:
				return
			default:
			}
			now = now.Add(time.Second)
			if _, err := c.Reconcile(ctx, now); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for i := range 200 {
		ep := fmt.Sprintf("ep%d", i)
		id, err := a.Allocate(ctx, l, ep)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok, err := a.Lookup(ctx, id); err != nil || !ok || !got.Equal(l) {
			t.Fatalf("identity %d of a live endpoint was collected (%v %v)", id, ok, err)
		}
		if err := a.Release(ctx, id, ep); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestExhausted(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	cfg := DefaultConfig()
	// Fill the cluster's number space directly, leaving one number free.
	var t0 store.Txn
	for local := MinLocal; local < 1<<16-1; local++ {
		id, _ := Make(cfg.ClusterID, uint16(local))
		t0.Ops = append(t0.Ops, store.Op{Type: store.OpPut, Key: idKey(id), Value: []byte(`{"labels":"x=y"}`)})
		if len(t0.Ops) == store.MaxOps || local == 1<<16-2 {
			if _, err := st.Txn(ctx, t0); err != nil {
				t.Fatal(err)
			}
			t0 = store.Txn{}
		}
	}
	a := New(cfg, st, "n1", nil)
	id, err := a.Allocate(ctx, MustParseLabels("app=last"), "ep")
	if err != nil || id.Local() != 1<<16-1 {
		t.Fatalf("last free number: %d, %v", id, err)
	}
	if _, err := a.Allocate(ctx, MustParseLabels("app=none"), "ep"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("want ErrExhausted, got %v", err)
	}
}
