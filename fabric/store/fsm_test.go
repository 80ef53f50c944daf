package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustApply(t testing.TB, f *FSM, txn Txn) TxnResult {
	t.Helper()
	cmd, err := EncodeTxn(txn)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	r, err := f.Apply(cmd)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return r
}

func put(k, v string) Op { return Op{Type: OpPut, Key: k, Value: []byte(v)} }

// dump is the whole observable state, for equality checks.
func dump(f *FSM) string {
	kvs, rev := f.List("")
	var b strings.Builder
	fmt.Fprintf(&b, "rev=%d compacted=%d\n", rev, f.CompactedRevision())
	for _, kv := range kvs {
		fmt.Fprintf(&b, "%q=%q c=%d m=%d v=%d\n", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version)
	}
	return b.String()
}

func TestFSMPutGetRevisions(t *testing.T) {
	f := NewFSM(0)
	r := mustApply(t, f, Txn{Ops: []Op{put("a", "1")}})
	if !r.Succeeded || r.Revision != 1 {
		t.Fatalf("first put: %+v", r)
	}
	r = mustApply(t, f, Txn{Ops: []Op{put("a", "2"), put("b", "x")}})
	if r.Revision != 2 {
		t.Fatalf("second txn revision = %d, want 2", r.Revision)
	}
	kv, ok := f.Get("a")
	if !ok || string(kv.Value) != "2" || kv.CreateRevision != 1 || kv.ModRevision != 2 || kv.Version != 2 {
		t.Fatalf("a = %+v", kv)
	}
	// A delete of an absent key changes nothing and keeps the revision.
	r = mustApply(t, f, Txn{Ops: []Op{{Type: OpDelete, Key: "nope"}}})
	if !r.Succeeded || r.Revision != 2 || f.Revision() != 2 {
		t.Fatalf("no-op delete bumped the revision: %+v", r)
	}
	r = mustApply(t, f, Txn{Ops: []Op{{Type: OpDelete, Key: "a"}}})
	if r.Revision != 3 {
		t.Fatalf("delete revision = %d", r.Revision)
	}
	if _, ok := f.Get("a"); ok {
		t.Fatal("a still present after delete")
	}
	// Re-created keys start over.
	mustApply(t, f, Txn{Ops: []Op{put("a", "3")}})
	kv, _ = f.Get("a")
	if kv.CreateRevision != 4 || kv.Version != 1 {
		t.Fatalf("recreated a = %+v", kv)
	}
}

func TestFSMCompareAndSwap(t *testing.T) {
	f := NewFSM(0)
	m := &Memory{fsm: f}
	ctx := context.Background()
	ok, err := CreateIfAbsent(ctx, m, "k", []byte("v1"))
	if err != nil || !ok {
		t.Fatalf("create: %v %v", ok, err)
	}
	ok, err = CreateIfAbsent(ctx, m, "k", []byte("v2"))
	if err != nil || ok {
		t.Fatalf("second create succeeded: %v %v", ok, err)
	}
	kv, _, _ := m.Get(ctx, "k")
	if ok, _ := CompareAndSwap(ctx, m, "k", kv.ModRevision+1, []byte("bad")); ok {
		t.Fatal("CAS with wrong revision succeeded")
	}
	if ok, _ := CompareAndSwap(ctx, m, "k", kv.ModRevision, []byte("good")); !ok {
		t.Fatal("CAS with right revision failed")
	}
	got, _, _ := m.Get(ctx, "k")
	if string(got.Value) != "good" {
		t.Fatalf("value = %q", got.Value)
	}
	// A failed compare does not bump the revision and reports which failed.
	before := f.Revision()
	r, _ := m.Txn(ctx, Txn{Compares: []Compare{{Key: "k", ModRevision: got.ModRevision}, {Key: "x", ModRevision: 7}}, Ops: []Op{put("y", "1")}})
	if r.Succeeded || r.Revision != before || !reflect.DeepEqual(r.Failed, []int{1}) {
		t.Fatalf("failed txn result = %+v", r)
	}
	if _, ok := f.Get("y"); ok {
		t.Fatal("op of failed txn applied")
	}
}

func TestFSMPrefixCompareAndAtomicity(t *testing.T) {
	f := NewFSM(0)
	mustApply(t, f, Txn{Ops: []Op{put("endpoints/n1/a", "id=5"), put("identities/5", "lbl")}})
	// Guard: delete identity 5 only if no endpoint uses it.
	guard := Txn{Compares: []Compare{{Prefix: "endpoints/"}}, Ops: []Op{{Type: OpDelete, Key: "identities/5"}, put("log", "gc")}}
	if r := mustApply(t, f, guard); r.Succeeded {
		t.Fatal("prefix compare held while a key exists under it")
	}
	if _, ok := f.Get("log"); ok {
		t.Fatal("partial apply of a failed txn")
	}
	if r := mustApply(t, f, Txn{Ops: []Op{{Type: OpDeletePrefix, Key: "endpoints/"}}}); r.Revision != 2 {
		t.Fatalf("delete_prefix revision = %d", r.Revision)
	}
	r := mustApply(t, f, guard)
	if !r.Succeeded || r.Revision != 3 {
		t.Fatalf("guarded txn: %+v", r)
	}
	_, ok1 := f.Get("identities/5")
	kv, ok2 := f.Get("log")
	if ok1 || !ok2 || kv.ModRevision != 3 {
		t.Fatal("guarded txn not applied whole at one revision")
	}
	// "endpoints" (no slash) is not under "endpoints/".
	mustApply(t, f, Txn{Ops: []Op{put("endpoints", "x")}})
	if r := mustApply(t, f, Txn{Compares: []Compare{{Prefix: "endpoints/"}}}); !r.Succeeded {
		t.Fatal("prefix compare matched a sibling key")
	}
}

func TestFSMValidation(t *testing.T) {
	big := bytes.Repeat([]byte("x"), MaxValueSize+1)
	many := make([]Op, MaxOps+1)
	for i := range many {
		many[i] = put(fmt.Sprint("k", i), "v")
	}
	cases := map[string]Txn{
		"empty key":      {Ops: []Op{put("", "v")}},
		"too many ops":   {Ops: many},
		"value too big":  {Ops: []Op{{Type: OpPut, Key: "k", Value: big}}},
		"unknown op":     {Ops: []Op{{Type: "increment", Key: "k"}}},
		"empty op type":  {Ops: []Op{{Key: "k"}}},
		"both forms":     {Compares: []Compare{{Key: "a", Prefix: "b"}}},
		"no form":        {Compares: []Compare{{}}},
		"negative rev":   {Compares: []Compare{{Key: "a", ModRevision: -1}}},
		"delete w value": {Ops: []Op{{Type: OpDelete, Key: "k", Value: []byte("v")}}},
	}
	f := NewFSM(0)
	mustApply(t, f, Txn{Ops: []Op{put("keep", "1")}})
	before := dump(f)
	for name, txn := range cases {
		if _, err := f.ApplyTxn(txn); !errors.Is(err, ErrInvalidTxn) {
			t.Errorf("%s: err = %v, want ErrInvalidTxn", name, err)
		}
		if _, err := EncodeTxn(txn); !errors.Is(err, ErrInvalidTxn) {
			t.Errorf("%s: encode err = %v", name, err)
		}
	}
	for _, cmd := range [][]byte{nil, {}, {2, '{', '}'}, {1}, {1, '['}, append([]byte{1}, `{"ops":[{"type":"put","key":""}]}`...)} {
		if _, err := f.Apply(cmd); !errors.Is(err, ErrInvalidTxn) {
			t.Errorf("cmd %q: err = %v", cmd, err)
		}
	}
	if after := dump(f); after != before {
		t.Fatalf("invalid input changed state:\n%s\n%s", before, after)
	}
}

func TestFSMValuesAreCopied(t *testing.T) {
	f := NewFSM(0)
	v := []byte("abc")
	mustApply(t, f, Txn{Ops: []Op{{Type: OpPut, Key: "k", Value: v}}})
	v[0] = 'X'
	kv, _ := f.Get("k")
	kv.Value[1] = 'Y'
	again, _ := f.Get("k")
	if string(again.Value) != "abc" {
		t.Fatalf("stored value aliased the caller's: %q", again.Value)
	}
}

func TestFSMSnapshotRestore(t *testing.T) {
	f := NewFSM(0)
	for i := range 50 {
		mustApply(t, f, Txn{Ops: []Op{put(fmt.Sprintf("k/%02d", i), fmt.Sprint(i))}})
	}
	mustApply(t, f, Txn{Ops: []Op{{Type: OpDelete, Key: "k/07"}, put("k/01", "again")}})
	snap := f.Snapshot()
	// Writes after the snapshot must not leak into it.
	mustApply(t, f, Txn{Ops: []Op{put("later", "x")}})
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	g := NewFSM(0)
	mustApply(t, g, Txn{Ops: []Op{put("junk", "gone after restore")}})
	if err := g.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if _, ok := g.Get("later"); ok {
		t.Fatal("snapshot holds a write made after it")
	}
	if _, ok := g.Get("junk"); ok {
		t.Fatal("restore kept old keys")
	}
	if g.Revision() != snap.Revision() || g.CompactedRevision() != snap.Revision() {
		t.Fatalf("restored rev=%d compacted=%d, want %d", g.Revision(), g.CompactedRevision(), snap.Revision())
	}
	// Same state as the source at the snapshot: rebuild it by restoring the
	// source too and comparing dumps.
	h := NewFSM(0)
	if err := h.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if dump(g) != dump(h) {
		t.Fatal("two restores of one snapshot differ")
	}
	want, _ := f.List("k/")
	got, _ := g.List("k/")
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("restored keys differ:\n%v\n%v", want, got)
	}
	// Watching from at or below the restored revision is compacted; above is fine.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if r := <-g.Watch(ctx, "", g.Revision()); !errors.Is(r.Err, ErrCompacted) {
		t.Fatalf("watch below restore: %+v", r)
	}
	w := g.Watch(ctx, "", g.Revision()+1)
	mustApply(t, g, Txn{Ops: []Op{put("k/new", "1")}})
	if r := <-w; len(r.Events) != 1 || r.Events[0].KV.ModRevision != g.Revision() {
		t.Fatalf("watch after restore: %+v", r)
	}
}

func TestFSMRestoreRejectsBadSnapshots(t *testing.T) {
	f := NewFSM(0)
	mustApply(t, f, Txn{Ops: []Op{put("a", "1")}})
	before := dump(f)
	for _, s := range []string{
		``, `{`, `{"version":2,"revision":1,"kvs":[]}`,
		`{"version":1,"revision":-1}`,
		`{"version":1,"revision":1,"kvs":[{"key":"","create_revision":1,"mod_revision":1,"version":1}]}`,
		`{"version":1,"revision":1,"kvs":[{"key":"a","create_revision":1,"mod_revision":2,"version":1}]}`,
		`{"version":1,"revision":1,"kvs":[{"key":"a","create_revision":1,"mod_revision":1,"version":0}]}`,
		`{"version":1,"revision":1,"kvs":[{"key":"a","create_revision":1,"mod_revision":1,"version":1},{"key":"a","create_revision":1,"mod_revision":1,"version":1}]}`,
	} {
		if err := f.Restore(strings.NewReader(s)); err == nil {
			t.Errorf("restore of %q succeeded", s)
		}
	}
	if dump(f) != before {
		t.Fatal("bad snapshot changed state")
	}
}

// recv reads one response or fails after a while.
func recv(t testing.TB, ch <-chan WatchResponse) WatchResponse {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no watch response in 5s")
	}
	return WatchResponse{}
}

// collectEvents reads events until it has n of them.
func collectEvents(t testing.TB, ch <-chan WatchResponse, n int) []Event {
	t.Helper()
	var evs []Event
	for len(evs) < n {
		r := recv(t, ch)
		if r.Err != nil {
			t.Fatalf("watch error after %d events: %v", len(evs), r.Err)
		}
		evs = append(evs, r.Events...)
	}
	if len(evs) != n {
		t.Fatalf("got %d events, want %d", len(evs), n)
	}
	return evs
}

func TestWatchReplayAndLive(t *testing.T) {
	f := NewFSM(0)
	mustApply(t, f, Txn{Ops: []Op{put("a/1", "x")}})              // rev 1
	mustApply(t, f, Txn{Ops: []Op{put("b/1", "x")}})              // rev 2
	mustApply(t, f, Txn{Ops: []Op{put("a/2", "y")}})              // rev 3
	mustApply(t, f, Txn{Ops: []Op{{Type: OpDelete, Key: "a/1"}}}) // rev 4
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	w := f.Watch(ctx, "a/", 2)
	evs := collectEvents(t, w, 2)
	if evs[0].KV.Key != "a/2" || evs[0].Type != EventPut || evs[1].KV.Key != "a/1" || evs[1].Type != EventDelete || evs[1].KV.ModRevision != 4 {
		t.Fatalf("replay = %+v", evs)
	}
	// Live.
	mustApply(t, f, Txn{Ops: []Op{put("b/2", "x")}}) // not under a/
	mustApply(t, f, Txn{Ops: []Op{put("a/3", "z")}}) // rev 6
	evs = collectEvents(t, w, 1)
	if evs[0].KV.Key != "a/3" || evs[0].KV.ModRevision != 6 {
		t.Fatalf("live = %+v", evs)
	}

	// From now (0) sees only later changes.
	w0 := f.Watch(ctx, "", 0)
	mustApply(t, f, Txn{Ops: []Op{put("c", "1")}})
	if evs := collectEvents(t, w0, 1); evs[0].KV.Key != "c" {
		t.Fatalf("watch from now = %+v", evs)
	}
}

func TestWatchResume(t *testing.T) {
	f := NewFSM(0)
	ctx, cancel := context.WithCancel(context.Background())
	w := f.Watch(ctx, "k/", 1)
	for i := range 5 {
		mustApply(t, f, Txn{Ops: []Op{put(fmt.Sprint("k/", i), "v")}})
	}
	evs := collectEvents(t, w, 5)
	last := evs[len(evs)-1].KV.ModRevision
	cancel()
	for range w { // drains until the watcher notices the cancel
	}
	// Missed while not watching.
	for i := 5; i < 10; i++ {
		mustApply(t, f, Txn{Ops: []Op{put(fmt.Sprint("k/", i), "v")}})
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	w2 := f.Watch(ctx2, "k/", last+1)
	evs = collectEvents(t, w2, 5)
	for i, ev := range evs {
		if ev.KV.Key != fmt.Sprint("k/", 5+i) || ev.KV.ModRevision != last+1+int64(i) {
			t.Fatalf("resumed event %d = %+v", i, ev)
		}
	}
	select {
	case r := <-w2:
		t.Fatalf("unexpected extra response %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestWatchCompacted(t *testing.T) {
	f := NewFSM(10)
	for i := range 25 {
		mustApply(t, f, Txn{Ops: []Op{put(fmt.Sprint("k", i), "v")}})
	}
	if c := f.CompactedRevision(); c != 15 {
		t.Fatalf("compacted = %d, want 15", c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := recv(t, f.Watch(ctx, "", 3))
	if !errors.Is(r.Err, ErrCompacted) {
		t.Fatalf("watch from compacted revision: %+v", r)
	}
	// The oldest kept revision still replays.
	if evs := collectEvents(t, f.Watch(ctx, "", 16), 10); evs[0].KV.ModRevision != 16 {
		t.Fatalf("first replayed = %+v", evs[0])
	}
}

// A multi-key txn dropped half out of the ring compacts its whole revision.
func TestWatchCompactedPartialRevision(t *testing.T) {
	f := NewFSM(3)
	mustApply(t, f, Txn{Ops: []Op{put("a", "1"), put("b", "1")}}) // rev 1, 2 events
	mustApply(t, f, Txn{Ops: []Op{put("c", "1"), put("d", "1")}}) // rev 2, drops one of rev 1
	if f.CompactedRevision() != 1 {
		t.Fatalf("compacted = %d", f.CompactedRevision())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if r := recv(t, f.Watch(ctx, "", 1)); !errors.Is(r.Err, ErrCompacted) {
		t.Fatalf("partial revision replayed: %+v", r)
	}
	if evs := collectEvents(t, f.Watch(ctx, "", 2), 2); evs[0].KV.Key != "c" {
		t.Fatalf("rev 2 = %+v", evs)
	}
}

// A watcher that never reads does not block Apply; it lags, and once it falls
// behind the history it gets ErrCompacted.
func TestWatchSlowWatcherNeverBlocksApply(t *testing.T) {
	f := NewFSM(100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := f.Watch(ctx, "", 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			mustApply(t, f, Txn{Ops: []Op{put(fmt.Sprint("k", i), "v")}})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("apply blocked on a slow watcher")
	}
	for r := range w {
		if r.Err != nil {
			if !errors.Is(r.Err, ErrCompacted) {
				t.Fatalf("err = %v", r.Err)
			}
			return
		}
	}
	t.Fatal("channel closed without ErrCompacted")
}

func TestWatchLargeBacklogInOrder(t *testing.T) {
	f := NewFSM(0)
	const n = 3000
	for i := 0; i < n; i += 3 {
		mustApply(t, f, Txn{Ops: []Op{put(fmt.Sprint("k", i), "v"), put(fmt.Sprint("k", i+1), "v"), put(fmt.Sprint("k", i+2), "v")}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs := collectEvents(t, f.Watch(ctx, "", 1), n)
	for i := 1; i < len(evs); i++ {
		if evs[i].KV.ModRevision < evs[i-1].KV.ModRevision {
			t.Fatalf("out of order at %d", i)
		}
	}
}

func TestWatchEndsOnClose(t *testing.T) {
	m := NewMemory()
	w := m.Watch(context.Background(), "", 0)
	m.Close()
	if r := recv(t, w); !errors.Is(r.Err, ErrClosed) {
		t.Fatalf("after close: %+v", r)
	}
	if _, ok := <-w; ok {
		t.Fatal("channel not closed")
	}
}

func TestRevisionMonotonic(t *testing.T) {
	m := NewMemory()
	ctx := context.Background()
	var last int64
	for i := range 200 {
		var txn Txn
		switch i % 4 {
		case 0:
			txn = Txn{Ops: []Op{put(fmt.Sprint("k", i%7), "v")}}
		case 1:
			txn = Txn{Ops: []Op{{Type: OpDelete, Key: fmt.Sprint("k", i%5)}}}
		case 2:
			txn = Txn{Compares: []Compare{{Key: "k0", ModRevision: last}}, Ops: []Op{put("k0", "cas")}}
		case 3:
			txn = Txn{Ops: []Op{{Type: OpDeletePrefix, Key: "k1"}}}
		}
		r, err := m.Txn(ctx, txn)
		if err != nil {
			t.Fatal(err)
		}
		if r.Revision < last {
			t.Fatalf("revision went back from %d to %d", last, r.Revision)
		}
		last = r.Revision
	}
	_, rev, _ := m.List(ctx, "")
	if rev != last {
		t.Fatalf("list revision %d, last txn %d", rev, last)
	}
}

func FuzzApply(f *testing.F) {
	seed, _ := EncodeTxn(Txn{Compares: []Compare{{Key: "a", ModRevision: 1}, {Prefix: "p/"}}, Ops: []Op{put("a", "2"), {Type: OpDeletePrefix, Key: "p"}}})
	f.Add(seed)
	f.Add([]byte{1, '{', '}'})
	f.Add([]byte{1})
	f.Add([]byte(`{"ops":[]}`))
	f.Add(append([]byte{1}, `{"ops":[{"type":"put","key":"a","value":"AAAA"}]}`...))
	f.Fuzz(func(t *testing.T, cmd []byte) {
		fsm := NewFSM(16)
		mustApply(t, fsm, Txn{Ops: []Op{put("a", "1"), put("p/x", "1")}})
		before := dump(fsm)
		r, err := fsm.Apply(cmd)
		after := dump(fsm)
		if err != nil {
			if before != after {
				t.Fatalf("failed apply changed state: %v", err)
			}
			return
		}
		if r.Revision != fsm.Revision() {
			t.Fatalf("result revision %d, store %d", r.Revision, fsm.Revision())
		}
		if !r.Succeeded && before != after {
			t.Fatal("failed compares changed state")
		}
		// The state must survive a snapshot round trip.
		var buf bytes.Buffer
		if _, err := fsm.Snapshot().WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		g := NewFSM(16)
		if err := g.Restore(&buf); err != nil {
			t.Fatalf("restore own snapshot: %v", err)
		}
		a, _ := fsm.List("")
		b, _ := g.List("")
		if !reflect.DeepEqual(a, b) {
			t.Fatal("snapshot round trip differs")
		}
	})
}

func FuzzRestore(f *testing.F) {
	src := NewFSM(0)
	mustApply(f, src, Txn{Ops: []Op{put("a", "1"), put("b", "2")}})
	var buf bytes.Buffer
	src.Snapshot().WriteTo(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte(`{"version":1,"revision":0,"kvs":null}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := NewFSM(16)
		mustApply(t, fsm, Txn{Ops: []Op{put("keep", "1")}})
		before := dump(fsm)
		if err := fsm.Restore(bytes.NewReader(data)); err != nil {
			if dump(fsm) != before {
				t.Fatalf("failed restore changed state: %v", err)
			}
			return
		}
		// A restored state keeps working: a write gets the next revision.
		rev := fsm.Revision()
		r := mustApply(t, fsm, Txn{Ops: []Op{put("after", "1")}})
		if r.Revision != rev+1 {
			t.Fatalf("revision after restore %d, want %d", r.Revision, rev+1)
		}
	})
}
