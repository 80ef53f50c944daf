package gossip

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuf collects a pool's logs so tests can assert on them and print them
// when a test fails, without calling t.Log from memberlist's goroutines after
// the test returned.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type testNode struct {
	*Pool
	logs *logBuf
}

// addr is the pool's gossip address, to pass to Join.
func (n testNode) addr() string { return n.Local().Addr.String() }

type poolOpt func(*Config, *Meta)

func withCluster(name string, id uint32) poolOpt {
	return func(c *Config, _ *Meta) { c.ClusterName, c.ClusterID = name, id }
}

func withKeys(keys ...[]byte) poolOpt {
	return func(c *Config, _ *Meta) { c.Keys = keys }
}

// newTestPool starts a pool on a free loopback port and shuts it down at the
// end of the test.
func newTestPool(t testing.TB, name string, opts ...poolOpt) testNode {
	t.Helper()
	logs := &logBuf{}
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.ClusterName = "test"
	cfg.ClusterID = 1
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	meta := Meta{
		Underlay: []netip.Addr{netip.MustParseAddr("10.10.1.11")},
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.200.1.0/24")},
		Roles:    []string{RoleServer},
		Version:  "test",
		Health:   "ok",
		APIAddr:  "10.10.1.11:7000",
		RaftAddr: "10.10.1.11:7001",
	}
	for _, o := range opts {
		o(&cfg, &meta)
	}
	p, err := New(cfg, meta)
	if err != nil {
		t.Fatalf("new pool %s: %v", name, err)
	}
	if p.Local().Addr.Port() == 0 {
		t.Fatalf("pool %s: BindPort 0 did not report the real port", name)
	}
	t.Cleanup(func() {
		_ = p.Shutdown()
		if t.Failed() {
			t.Logf("logs of %s:\n%s", name, logs.String())
		}
	})
	return testNode{Pool: p, logs: logs}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// memberStates renders Members as "name=state,..." for comparisons.
func memberStates(p *Pool) string {
	var s []string
	for _, m := range p.Members() {
		s = append(s, fmt.Sprintf("%s=%s", m.Meta.Name, m.State))
	}
	return strings.Join(s, ",")
}

// waitEvent returns the first event of type typ about node, skipping others.
func waitEvent(t testing.TB, ch <-chan Event, typ EventType, node string, d time.Duration) Event {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("event channel closed waiting for %s of %s", typ, node)
			}
			if ev.Type == typ && ev.Member.Meta.Name == node {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no %s event for %s within %s", typ, node, d)
		}
	}
}

// joinAll joins every node to the first and waits until all see all alive.
func joinAll(t testing.TB, nodes ...testNode) {
	t.Helper()
	for _, n := range nodes[1:] {
		if _, err := n.Join([]string{nodes[0].addr()}); err != nil {
			t.Fatalf("join %s: %v", n.cfg.NodeName, err)
		}
	}
	var want []string
	for _, n := range nodes {
		want = append(want, n.cfg.NodeName+"=alive")
	}
	slices.Sort(want)
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.cfg.NodeName+" to see all members", func() bool {
			return memberStates(n.Pool) == strings.Join(want, ",")
		})
	}
}
