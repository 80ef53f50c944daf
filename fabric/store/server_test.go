package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func testLogger() *slog.Logger {
	// Raft keeps logging while tests tear clusters down, which t.Log does
	// not allow; FABRIC_STORE_TEST_LOG=1 shows the logs on stderr.
	if os.Getenv("FABRIC_STORE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testConfig(t testing.TB, id string, expect int) Config {
	cfg := DefaultConfig()
	cfg.NodeID = id
	cfg.ClusterName = "test"
	cfg.Server = true
	cfg.BootstrapExpect = expect
	cfg.DataDir = t.TempDir()
	cfg.RaftBind = "127.0.0.1:0"
	cfg.APIBind = "127.0.0.1:0"
	cfg.Secret = testSecret
	cfg.ApplyTimeout = 3 * time.Second
	cfg.Logger = testLogger()
	return cfg
}

func startStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("new %s: %v", cfg.NodeID, err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("start %s: %v", cfg.NodeID, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type cluster struct {
	t       testing.TB
	servers []*Store
	down    map[int]bool
}

// newCluster starts n servers that bootstrap through SetPeers.
func newCluster(t testing.TB, n int, tweak func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, down: map[int]bool{}}
	for i := range n {
		cfg := testConfig(t, fmt.Sprintf("s%d", i), n)
		if tweak != nil {
			tweak(&cfg)
		}
		c.servers = append(c.servers, startStore(t, cfg))
	}
	c.gossip()
	c.waitLeader(10 * time.Second)
	return c
}

func (c *cluster) peers() []Peer {
	var ps []Peer
	for i, s := range c.servers {
		ps = append(ps, Peer{ID: s.cfg.NodeID, Server: true, RaftAddr: s.RaftAddr(), APIAddr: s.APIAddr(), Alive: !c.down[i]})
	}
	return ps
}

// gossip hands every running server the current membership, as the agent does.
func (c *cluster) gossip() {
	ps := c.peers()
	for i, s := range c.servers {
		if !c.down[i] {
			s.SetPeers(ps)
		}
	}
}

func (c *cluster) stop(i int) {
	c.servers[i].Close()
	c.down[i] = true
	c.gossip()
}

// waitLeader waits until every running server names the same leader.
func (c *cluster) waitLeader(within time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		leader, agree := -1, true
		var name string
		for i, s := range c.servers {
			if c.down[i] {
				continue
			}
			st := s.Status()
			if st.Role == "leader" {
				leader = i
			}
			if name == "" {
				name = st.Leader
			}
			agree = agree && st.Leader != "" && st.Leader == name
		}
		if leader >= 0 && agree && c.servers[leader].cfg.NodeID == name {
			return leader
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("no agreed leader within %s", within)
	return -1
}

func (c *cluster) follower(leader int) int {
	for i := range c.servers {
		if i != leader && !c.down[i] {
			return i
		}
	}
	c.t.Fatal("no follower")
	return -1
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Server = true
	err := cfg.Validate()
	if err == nil {
		t.Fatal("empty config validated")
	}
	for _, field := range []string{"NodeID", "Secret", "DataDir", "RaftBind", "APIBind"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
	good := testConfig(t, "n1", 1)
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	good.LeaderLeaseTimeout = time.Second
	if err := good.Validate(); err == nil || !strings.Contains(err.Error(), "LeaderLeaseTimeout") {
		t.Fatalf("lease above heartbeat: %v", err)
	}
}

func TestNoSecretRefused(t *testing.T) {
	cfg := testConfig(t, "n1", 1)
	cfg.Secret = nil
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "Secret") {
		t.Fatalf("New without secret: %v", err)
	}
}

func TestDerivedCAIsDeterministic(t *testing.T) {
	a, _, err := deriveCA(testSecret, "c1")
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := deriveCA(testSecret, "c1")
	if !bytes.Equal(a.Raw, b.Raw) {
		t.Fatal("two derivations of the CA differ")
	}
	other, _, _ := deriveCA(testSecret, "c2")
	if bytes.Equal(a.Raw, other.Raw) {
		t.Fatal("cluster name does not change the CA")
	}
}

func TestClusterBootstrapAndForward(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.waitLeader(5 * time.Second)
	f := c.follower(leader)
	ctx := ctxT(t, 10*time.Second)

	rev, err := Put(ctx, c.servers[f], "nodes/a", []byte("1"))
	if err != nil {
		t.Fatalf("put via follower: %v", err)
	}
	ok, err := CreateIfAbsent(ctx, c.servers[f], "nodes/a", []byte("2"))
	if err != nil || ok {
		t.Fatalf("create of existing key via follower: ok=%v err=%v", ok, err)
	}
	for i, s := range c.servers {
		kv, found, err := s.Get(ctx, "nodes/a")
		if err != nil || !found || string(kv.Value) != "1" || kv.ModRevision != rev {
			t.Fatalf("get on s%d: %+v %v %v", i, kv, found, err)
		}
	}
	kvs, lrev, err := c.servers[f].List(ctx, "nodes/")
	if err != nil || len(kvs) != 1 || lrev != rev {
		t.Fatalf("list via follower: %v rev=%d err=%v", kvs, lrev, err)
	}
	if _, err := c.servers[f].Txn(ctx, Txn{Ops: []Op{{Type: OpPut, Key: ""}}}); !errors.Is(err, ErrInvalidTxn) {
		t.Fatalf("invalid txn: %v", err)
	}
	st := c.servers[leader].Status()
	if len(st.Servers) != 3 || st.Revision != rev || st.Term == 0 {
		t.Fatalf("leader status = %+v", st)
	}
	for _, srv := range st.Servers {
		if !srv.Voter || !srv.Alive {
			t.Fatalf("server %+v not an alive voter", srv)
		}
	}
}

func newClient(t testing.TB, id string, secret []byte, peers []Peer) *Store {
	cfg := DefaultConfig()
	cfg.NodeID = id
	cfg.ClusterName = "test"
	cfg.Secret = secret
	cfg.ApplyTimeout = 3 * time.Second
	cfg.Logger = testLogger()
	s := startStore(t, cfg)
	s.SetPeers(peers)
	return s
}

func TestClientModeReadWriteWatch(t *testing.T) {
	c := newCluster(t, 3, nil)
	cl := newClient(t, "client1", testSecret, c.peers())
	ctx := ctxT(t, 15*time.Second)

	w := cl.Watch(ctx, "ipam/", 0)
	// The watch resolves "now" when its stream opens; give it a moment so
	// the first write lands after it.
	time.Sleep(200 * time.Millisecond)
	rev, err := Put(ctx, cl, "ipam/10.0.0.1", []byte("ep1"))
	if err != nil {
		t.Fatalf("put via client: %v", err)
	}
	kv, found, err := cl.Get(ctx, "ipam/10.0.0.1")
	if err != nil || !found || kv.ModRevision != rev {
		t.Fatalf("get via client: %+v %v %v", kv, found, err)
	}
	if ok, err := CompareAndSwap(ctx, cl, "ipam/10.0.0.1", rev, []byte("ep2")); err != nil || !ok {
		t.Fatalf("cas via client: %v %v", ok, err)
	}
	kvs, _, err := cl.List(ctx, "ipam/")
	if err != nil || len(kvs) != 1 || string(kvs[0].Value) != "ep2" {
		t.Fatalf("list via client: %v %v", kvs, err)
	}
	evs := collectEvents(t, w, 2)
	if evs[0].KV.ModRevision != rev || string(evs[1].KV.Value) != "ep2" {
		t.Fatalf("client watch events = %+v", evs)
	}
	if st := cl.Status(); st.Role != "client" || len(st.Servers) != 3 {
		t.Fatalf("client status = %+v", st)
	}
}

func TestWrongSecretRejected(t *testing.T) {
	c := newCluster(t, 1, nil)
	bad := newClient(t, "intruder", []byte("another-secret-of-enough-length"), c.peers())
	ctx := ctxT(t, 10*time.Second)
	_, _, err := bad.Get(ctx, "anything")
	if err == nil {
		t.Fatal("client with a wrong secret was served")
	}
	if !strings.Contains(err.Error(), "secret") {
		t.Errorf("error does not point at the secret: %v", err)
	}
	if _, err := Put(ctx, bad, "x", []byte("1")); err == nil {
		t.Fatal("client with a wrong secret wrote")
	}
	// A Raft peer with another secret cannot join either: its TLS dial fails.
	id, err := newTLSIdentity([]byte("another-secret-of-enough-length"), "test", "evil", nil)
	if err != nil {
		t.Fatal(err)
	}
	layer := &tlsStreamLayer{client: id.clientConfig()}
	conn, err := layer.Dial(raftAddr(c.servers[0]), time.Second)
	if err == nil {
		// TLS 1.3 clients finish before the server checks their cert;
		// the server's rejection shows on the first read.
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Fatal("raft peer with a wrong secret was accepted")
	}
}

func TestLeaderFailoverNoLostWrites(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.waitLeader(5 * time.Second)
	ctx := ctxT(t, 30*time.Second)
	var acked []string
	for i := range 20 {
		k := fmt.Sprintf("k/%02d", i)
		if _, err := Put(ctx, c.servers[(leader+i)%3], k, []byte("v")); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
		acked = append(acked, k)
	}
	start := time.Now()
	c.stop(leader)
	next := c.waitLeader(10 * time.Second)
	failover := time.Since(start)
	t.Logf("leader failover took %s (old s%d, new s%d)", failover.Round(time.Millisecond), leader, next)
	if failover > 5*time.Second {
		t.Errorf("failover took %s", failover)
	}
	f := c.follower(next)
	kvs, _, err := c.servers[f].List(ctx, "k/")
	if err != nil {
		t.Fatalf("list after failover: %v", err)
	}
	if len(kvs) != len(acked) {
		t.Fatalf("after failover %d keys, %d were acknowledged", len(kvs), len(acked))
	}
	if _, err := Put(ctx, c.servers[f], "after", []byte("1")); err != nil {
		t.Fatalf("write after failover: %v", err)
	}
}

func TestClientWatchResumesOnAnotherServer(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := ctxT(t, 30*time.Second)
	// The client first knows only s0, so its stream is on s0.
	only := c.peers()[:1]
	cl := newClient(t, "client1", testSecret, only)
	w := cl.Watch(ctx, "ep/", 1)
	for i := range 5 {
		if _, err := Put(ctx, c.servers[1], fmt.Sprintf("ep/%02d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	got := collectEvents(t, w, 5)
	cl.SetPeers(c.peers())
	c.stop(0)
	cl.SetPeers(c.peers())
	c.waitLeader(10 * time.Second)
	for i := 5; i < 10; i++ {
		if _, err := Put(ctx, c.servers[1], fmt.Sprintf("ep/%02d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	got = append(got, collectEvents(t, w, 5)...)
	for i, ev := range got {
		if ev.KV.Key != fmt.Sprintf("ep/%02d", i) {
			t.Fatalf("event %d = %s: gap or duplicate across the resume", i, ev.KV.Key)
		}
	}
	select {
	case r := <-w:
		t.Fatalf("extra response after resume: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestNoQuorumFailsWithinApplyTimeout(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.ApplyTimeout = 2 * time.Second })
	leader := c.waitLeader(5 * time.Second)
	ctx := ctxT(t, 20*time.Second)
	if _, err := Put(ctx, c.servers[leader], "before", []byte("1")); err != nil {
		t.Fatal(err)
	}
	// Keep the old leader, the worst case: it must notice it lost its quorum.
	for i := range c.servers {
		if i != leader {
			c.stop(i)
		}
	}
	for _, name := range []string{"first", "second"} {
		start := time.Now()
		_, err := Put(ctx, c.servers[leader], "after", []byte("1"))
		took := time.Since(start)
		if !errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrNoQuorum) {
			t.Fatalf("%s write without quorum: err = %v", name, err)
		}
		if took > 2*time.Second+500*time.Millisecond {
			t.Fatalf("%s write took %s, ApplyTimeout is 2s", name, took)
		}
		t.Logf("%s write without quorum failed after %s: %v", name, took.Round(time.Millisecond), err)
	}
	if _, _, err := c.servers[leader].Get(ctx, "before"); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("read without quorum: %v", err)
	}
}

func TestRestartKeepsData(t *testing.T) {
	cfg := testConfig(t, "solo", 1)
	cfg.SnapshotThreshold = 5
	s := startStore(t, cfg)
	s.SetPeers([]Peer{{ID: "solo", Server: true, RaftAddr: s.RaftAddr(), APIAddr: s.APIAddr(), Alive: true}})
	c := &cluster{t: t, servers: []*Store{s}, down: map[int]bool{}}
	c.waitLeader(5 * time.Second)
	ctx := ctxT(t, 20*time.Second)
	for i := range 10 {
		if _, err := Put(ctx, s, fmt.Sprintf("k%d", i), []byte("before")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	// Some writes only in the log, after the snapshot.
	if _, err := Put(ctx, s, "k3", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if _, err := Delete(ctx, s, "k4"); err != nil {
		t.Fatal(err)
	}
	wantKVs, wantRev, _ := s.List(ctx, "")
	s.Close()

	cfg.RaftBind, cfg.APIBind = s.RaftAddr(), s.APIAddr()
	s2 := startStore(t, cfg)
	s2.SetPeers([]Peer{{ID: "solo", Server: true, RaftAddr: s2.RaftAddr(), APIAddr: s2.APIAddr(), Alive: true}})
	c.servers[0] = s2
	c.waitLeader(5 * time.Second)
	kvs, rev, err := s2.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if rev != wantRev || fmt.Sprint(kvs) != fmt.Sprint(wantKVs) {
		t.Fatalf("after restart rev=%d keys=%v\nwant rev=%d keys=%v", rev, kvs, wantRev, wantKVs)
	}
}

func TestFollowerRestartCatchesUp(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotThreshold = 4 })
	leader := c.waitLeader(5 * time.Second)
	f := c.follower(leader)
	ctx := ctxT(t, 30*time.Second)
	for i := range 10 {
		if _, err := Put(ctx, c.servers[leader], fmt.Sprintf("k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.servers[f].Snapshot(); err != nil {
		t.Fatal(err)
	}
	cfg := c.servers[f].cfg
	cfg.RaftBind, cfg.APIBind = c.servers[f].RaftAddr(), c.servers[f].APIAddr()
	c.stop(f)
	for i := 10; i < 15; i++ {
		if _, err := Put(ctx, c.servers[leader], fmt.Sprintf("k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	want := c.servers[leader].FSM().Revision()
	c.servers[f] = startStore(t, cfg)
	c.down[f] = false
	c.gossip()
	deadline := time.Now().Add(10 * time.Second)
	for c.servers[f].FSM().Revision() < want {
		if time.Now().After(deadline) {
			t.Fatalf("restarted follower at revision %d, leader at %d", c.servers[f].FSM().Revision(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if kvs, _ := c.servers[f].FSM().List("k"); len(kvs) != 15 {
		t.Fatalf("restarted follower has %d keys", len(kvs))
	}
}

func raftAddr(s *Store) raft.ServerAddress { return raft.ServerAddress(s.RaftAddr()) }

// A dead server keeps its seat until a replacement joins; then the
// replacement becomes a voter and the dead one is removed, so the cluster
// is back to its size with every voter alive.
func TestDeadServerReplacedWhenNewServerJoins(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.waitLeader(10 * time.Second)
	victim := (leader + 1) % 3
	victimID := c.servers[victim].cfg.NodeID
	c.stop(victim)
	time.Sleep(2 * time.Second) // several autopilot rounds: no replacement yet
	if !hasServer(t, c.servers[leader], victimID) {
		t.Fatalf("dead server %s removed before a replacement joined", victimID)
	}
	c.servers = append(c.servers, startStore(t, testConfig(t, "s3", 3)))
	c.gossip()
	deadline := time.Now().Add(15 * time.Second)
	for {
		leader = c.waitLeader(10 * time.Second)
		st := c.servers[leader].Status()
		voters, hasNew, hasDead := 0, false, false
		for _, sv := range st.Servers {
			if sv.Voter {
				voters++
			}
			hasNew = hasNew || (sv.ID == "s3" && sv.Voter)
			hasDead = hasDead || sv.ID == victimID
		}
		if hasNew && !hasDead && voters == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("configuration did not converge: %+v", st.Servers)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The replacement serves reads and writes like any voter.
	if _, err := Put(context.Background(), c.servers[len(c.servers)-1], "after/replace", []byte("x")); err != nil {
		t.Fatal(err)
	}
}

func hasServer(t *testing.T, s *Store, id string) bool {
	t.Helper()
	for _, sv := range s.Status().Servers {
		if sv.ID == id {
			return true
		}
	}
	return false
}
