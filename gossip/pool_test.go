package gossip

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestJoinMetaAndUpdate(t *testing.T) {
	a := newTestPool(t, "a")
	b := newTestPool(t, "b")
	c := newTestPool(t, "c")
	events, cancel := b.Subscribe(0)
	defer cancel()
	joinAll(t, a, b, c)

	for _, n := range []testNode{a, b, c} {
		for _, m := range n.Members() {
			if m.Meta.Cluster != "test" || m.Meta.ClusterID != 1 || !m.Meta.HasRole(RoleServer) ||
				m.Meta.APIAddr != "10.10.1.11:7000" || len(m.Meta.PodCIDRs) != 1 || m.Addr.Port() == 0 {
				t.Errorf("%s sees %s with meta %+v addr %s", n.cfg.NodeName, m.Meta.Name, m.Meta, m.Addr)
			}
		}
	}
	waitEvent(t, events, EventJoin, "c", 2*time.Second)

	meta := a.Local().Meta
	meta.Health = "degraded: disk"
	meta.PodCIDRs = append(meta.PodCIDRs, netip.MustParsePrefix("fd00:200:1::/64"))
	if err := a.UpdateMeta(meta); err != nil {
		t.Fatalf("update meta: %v", err)
	}
	ev := waitEvent(t, events, EventUpdate, "a", 2*time.Second)
	if ev.Member.Meta.Health != "degraded: disk" || len(ev.Member.Meta.PodCIDRs) != 2 {
		t.Errorf("update event carries %+v", ev.Member.Meta)
	}
	waitFor(t, 2*time.Second, "c to see a's new meta", func() bool {
		for _, m := range c.Members() {
			if m.Meta.Name == "a" {
				return m.Meta.Health == "degraded: disk"
			}
		}
		return false
	})
	if got := a.Local().Meta.Health; got != "degraded: disk" {
		t.Errorf("Local().Meta.Health = %q", got)
	}
	if s := a.Stats(); s.Alive != 3 || s.Encrypted {
		t.Errorf("stats = %+v", s)
	}
}

func TestUpdateMetaRejectsBadMeta(t *testing.T) {
	a := newTestPool(t, "a")
	meta := a.Local().Meta
	meta.Health = strings.Repeat("x", MaxMetaSize)
	if err := a.UpdateMeta(meta); err == nil || !strings.Contains(err.Error(), "512-byte limit") {
		t.Errorf("oversize meta: err = %v", err)
	}
	meta = a.Local().Meta
	meta.ClusterID = 9
	if err := a.UpdateMeta(meta); err == nil {
		t.Error("meta of another cluster ID accepted")
	}
	if a.Local().Meta.Health != "ok" {
		t.Error("rejected meta replaced the local meta")
	}
}

func TestRefuseOtherCluster(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	for _, tc := range []struct {
		name, cluster string
		id            uint32
	}{
		{"other-id", "test", 2},
		{"other-name", "prod", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTestPool(t, "a", withKeys(key))
			b := newTestPool(t, "b", withKeys(key))
			joinAll(t, a, b)
			x := newTestPool(t, "x", withKeys(key), withCluster(tc.cluster, tc.id))

			if n, err := x.Join([]string{a.addr()}); err == nil {
				t.Errorf("join of another cluster succeeded, contacted %d", n)
			}
			// Give gossip time to leak if it were going to.
			time.Sleep(500 * time.Millisecond)
			if got := memberStates(a.Pool); got != "a=alive,b=alive" {
				t.Errorf("a members = %s", got)
			}
			if got := memberStates(x.Pool); got != "x=alive" {
				t.Errorf("x members = %s", got)
			}
			for _, n := range []testNode{a, x} {
				if !strings.Contains(n.logs.String(), "refusing member of another cluster") {
					t.Errorf("%s logged no refusal", n.cfg.NodeName)
				}
			}
			if !strings.Contains(a.logs.String(), "their_cluster="+tc.cluster) {
				t.Errorf("a's refusal does not name their cluster")
			}
		})
	}
}

func TestEncryptionWrongKeyCannotJoin(t *testing.T) {
	a := newTestPool(t, "a", withKeys(bytes.Repeat([]byte{1}, 32)))
	b := newTestPool(t, "b", withKeys(bytes.Repeat([]byte{2}, 32)))
	if _, err := b.Join([]string{a.addr()}); err == nil {
		t.Error("join with a different key succeeded")
	}
	c := newTestPool(t, "c")
	if _, err := c.Join([]string{a.addr()}); err == nil {
		t.Error("join without a key succeeded")
	}
	time.Sleep(300 * time.Millisecond)
	if got := memberStates(a.Pool); got != "a=alive" {
		t.Errorf("a members = %s", got)
	}
}

func TestKeyRotation(t *testing.T) {
	k1 := bytes.Repeat([]byte{1}, 32)
	k2 := bytes.Repeat([]byte{2}, 16)
	a := newTestPool(t, "a", withKeys(k1))
	b := newTestPool(t, "b", withKeys(k1))
	c := newTestPool(t, "c", withKeys(k1))
	joinAll(t, a, b, c)
	nodes := []testNode{a, b, c}

	for _, n := range nodes {
		if err := n.InstallKey(k2); err != nil {
			t.Fatalf("install: %v", err)
		}
	}
	for _, n := range nodes {
		if err := n.UseKey(k2); err != nil {
			t.Fatalf("use: %v", err)
		}
	}
	if err := a.RemoveKey(k2); err == nil {
		t.Error("removing the primary key succeeded")
	}
	for _, n := range nodes {
		if err := n.RemoveKey(k1); err != nil {
			t.Fatalf("remove: %v", err)
		}
	}
	primary, all := a.Keys()
	if !bytes.Equal(primary, k2) || len(all) != 1 {
		t.Errorf("keys after rotation: primary %x, %d keys", primary, len(all))
	}

	// Still gossiping under the new key.
	events, cancel := b.Subscribe(16)
	defer cancel()
	meta := a.Local().Meta
	meta.Version = "rotated"
	if err := a.UpdateMeta(meta); err != nil {
		t.Fatalf("update meta: %v", err)
	}
	waitEvent(t, events, EventUpdate, "a", 2*time.Second)

	// A node with only the old key is locked out; one with the new key joins.
	old := newTestPool(t, "old", withKeys(k1))
	if _, err := old.Join([]string{b.addr()}); err == nil {
		t.Error("node with the removed key joined")
	}
	d := newTestPool(t, "d", withKeys(k2))
	if _, err := d.Join([]string{b.addr()}); err != nil {
		t.Fatalf("node with the new key: %v", err)
	}
	for _, n := range append(nodes, d) {
		waitFor(t, 3*time.Second, n.cfg.NodeName+" to see d", func() bool {
			return memberStates(n.Pool) == "a=alive,b=alive,c=alive,d=alive"
		})
	}
}

func TestKeysNeedEncryption(t *testing.T) {
	a := newTestPool(t, "a")
	if err := a.InstallKey(bytes.Repeat([]byte{1}, 32)); err == nil || !strings.Contains(err.Error(), "encryption is off") {
		t.Errorf("install key without encryption: %v", err)
	}
	if p, all := a.Keys(); p != nil || all != nil {
		t.Error("Keys reports keys with encryption off")
	}
}

func TestFailureDetection(t *testing.T) {
	a := newTestPool(t, "a")
	b := newTestPool(t, "b")
	c := newTestPool(t, "c")
	joinAll(t, a, b, c)
	evA, cancelA := a.Subscribe(0)
	defer cancelA()
	evB, cancelB := b.Subscribe(0)
	defer cancelB()

	const bound = 1500 * time.Millisecond
	start := time.Now()
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		name string
		ch   <-chan Event
	}{{"a", evA}, {"b", evB}} {
		ev := waitEvent(t, w.ch, EventFail, "c", 5*time.Second)
		took := ev.At.Sub(start)
		t.Logf("%s declared c dead after %s", w.name, took.Round(time.Millisecond))
		if took > bound {
			t.Errorf("%s took %s to declare c dead, want under %s", w.name, took, bound)
		}
	}
	if got := memberStates(a.Pool); got != "a=alive,b=alive,c=dead" {
		t.Errorf("after failure a sees %s", got)
	}
	if s := a.Stats(); s.Alive != 2 || s.Dead != 1 {
		t.Errorf("stats = %+v", s)
	}

	// The node restarts under the same name on a new port and is alive
	// again, once memberlist's DeadNodeReclaimTime has passed.
	time.Sleep(1200 * time.Millisecond)
	c2 := newTestPool(t, "c")
	if _, err := c2.Join([]string{a.addr()}); err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	ev := waitEvent(t, evA, EventJoin, "c", 3*time.Second)
	if ev.Member.Addr != c2.Local().Addr {
		t.Errorf("rejoined c at %s, want %s", ev.Member.Addr, c2.Local().Addr)
	}
	waitFor(t, 2*time.Second, "a to see c alive", func() bool {
		return memberStates(a.Pool) == "a=alive,b=alive,c=alive"
	})
}

func TestGracefulLeave(t *testing.T) {
	a := newTestPool(t, "a")
	b := newTestPool(t, "b")
	c := newTestPool(t, "c")
	joinAll(t, a, b, c)
	events, cancel := a.Subscribe(0)
	defer cancel()

	if err := c.Leave(time.Second); err != nil {
		t.Fatalf("leave: %v", err)
	}
	_ = c.Shutdown()
	ev := waitEvent(t, events, EventLeave, "c", 2*time.Second)
	if ev.Member.State != StateLeft {
		t.Errorf("leave event state = %s", ev.Member.State)
	}
	if got := memberStates(a.Pool); got != "a=alive,b=alive,c=left" {
		t.Errorf("after leave a sees %s", got)
	}
}

func TestSubscribeSlowAndCancel(t *testing.T) {
	a := newTestPool(t, "a")
	slow, cancelSlow := a.Subscribe(1)
	defer cancelSlow()
	b := newTestPool(t, "b")
	c := newTestPool(t, "c")
	joinAll(t, a, b, c)
	// b and c joined; the one-slot subscriber kept the first and dropped the rest.
	if got := (<-slow).Member.Meta.Name; got != "b" && got != "c" {
		t.Errorf("first event about %q", got)
	}
	if a.Stats().DroppedEvents == 0 {
		t.Error("no dropped events counted")
	}
	if !strings.Contains(a.logs.String(), "dropping events") {
		t.Error("no warning about the slow subscriber")
	}

	ch, cancel := a.Subscribe(4)
	cancel()
	cancel()
	if _, ok := <-ch; ok {
		t.Error("cancelled channel still open")
	}
	ch, _ = a.Subscribe(4)
	_ = a.Shutdown()
	if _, ok := <-ch; ok {
		t.Error("channel open after shutdown")
	}
	if _, ok := <-slow; ok {
		t.Error("slow channel open after shutdown")
	}
}

// TestFailureDetectionTenNodes checks the DefaultConfig promise: in a
// 10-node cluster every survivor declares a killed node dead within ~1s.
func TestFailureDetectionTenNodes(t *testing.T) {
	var nodes []testNode
	for i := range 10 {
		nodes = append(nodes, newTestPool(t, string(rune('a'+i))))
	}
	joinAll(t, nodes...)
	var subs []<-chan Event
	for _, n := range nodes[:9] {
		ch, cancel := n.Subscribe(0)
		defer cancel()
		subs = append(subs, ch)
	}
	victim := nodes[9].cfg.NodeName
	start := time.Now()
	_ = nodes[9].Shutdown()
	var slowest time.Duration
	first := time.Hour
	for _, ch := range subs {
		took := waitEvent(t, ch, EventFail, victim, 5*time.Second).At.Sub(start)
		slowest, first = max(slowest, took), min(first, took)
	}
	t.Logf("10 nodes: first survivor declared %s dead after %s, last after %s",
		victim, first.Round(time.Millisecond), slowest.Round(time.Millisecond))
	if slowest > 1500*time.Millisecond {
		t.Errorf("last survivor took %s, want under 1.5s", slowest)
	}
}
