package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
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

func testConfig(pools ...string) Config {
	cfg := DefaultConfig()
	cfg.Pools = nil
	for _, p := range pools {
		cfg.Pools = append(cfg.Pools, netip.MustParsePrefix(p))
	}
	return cfg
}

func mustCIDRs(t testing.TB, a *Allocator) []netip.Prefix {
	t.Helper()
	cidrs, err := a.NodeCIDRs(context.Background())
	if err != nil {
		t.Fatalf("NodeCIDRs: %v", err)
	}
	return cidrs
}

func mustIPs(t testing.TB, a *Allocator, ep string) []netip.Addr {
	t.Helper()
	ips, err := a.AllocateIP(context.Background(), ep)
	if err != nil {
		t.Fatalf("AllocateIP(%s): %v", ep, err)
	}
	return ips
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string // substring of the error; "" means valid
	}{
		{"several pools per family", func(c *Config) { c.Pools = append(c.Pools, netip.MustParsePrefix("10.201.0.0/16")) }, ""},
		{"no pools", func(c *Config) { c.Pools = nil }, "ipam.pools: no pool"},
		{"overlap", func(c *Config) { c.Pools = append(c.Pools, netip.MustParsePrefix("10.200.128.0/17")) }, "overlaps ipam.pools[0]"},
		{"host bits", func(c *Config) { c.Pools[0] = netip.MustParsePrefix("10.200.0.1/16") }, "use 10.200.0.0/16"},
		{"mask shorter than pool", func(c *Config) { c.Pools[0] = netip.MustParsePrefix("10.200.0.0/25") }, "smaller than one node CIDR"},
		{"v4 mask too long", func(c *Config) { c.NodeMaskV4 = 31 }, "ipam.node-mask-v4"},
		{"v6 mask too long", func(c *Config) { c.NodeMaskV6 = 127 }, "ipam.node-mask-v6"},
		{"zero mask", func(c *Config) { c.NodeMaskV4 = 0 }, "ipam.node-mask-v4"},
		{"grace", func(c *Config) { c.ReleaseGrace = 0 }, "ipam.release-grace"},
		{"invalid prefix", func(c *Config) { c.Pools[0] = netip.Prefix{} }, "invalid prefix"},
		{"mapped", func(c *Config) { c.Pools[0] = netip.MustParsePrefix("::ffff:10.0.0.0/104") }, "IPv4-mapped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Pools = append([]netip.Prefix(nil), c.Pools...)
			tt.edit(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("want error containing %q, got %v", tt.want, err)
			}
		})
	}
}

func TestNthSubnetAndLast(t *testing.T) {
	tests := []struct {
		pool string
		mask int
		i    uint64
		want string
		last string
	}{
		{"10.0.0.0/16", 24, 0, "10.0.0.0/24", "10.0.0.255"},
		{"10.0.0.0/16", 24, 255, "10.0.255.0/24", "10.0.255.255"},
		{"10.0.0.0/8", 30, 3, "10.0.0.12/30", "10.0.0.15"},
		{"fd00::/96", 112, 1, "fd00::1:0/112", "fd00::1:ffff"},
		{"fd00::/48", 64, 65535, "fd00:0:0:ffff::/64", "fd00::ffff:ffff:ffff:ffff:ffff"},
		{"::/0", 64, 1 << 40, "0:100::/64", "0:100::ffff:ffff:ffff:ffff"},
	}
	for _, tt := range tests {
		got := nthSubnet(netip.MustParsePrefix(tt.pool), tt.mask, tt.i)
		if got.String() != netip.MustParsePrefix(tt.want).String() {
			t.Errorf("nthSubnet(%s, /%d, %d) = %s, want %s", tt.pool, tt.mask, tt.i, got, tt.want)
		}
		if l := lastAddr(got); l != netip.MustParseAddr(tt.last) {
			t.Errorf("lastAddr(%s) = %s, want %s", got, l, tt.last)
		}
	}
}

func TestAllocateDualStack(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	a := New(testConfig("10.1.0.0/16", "fd00:1::/96"), st, "n1", nil)
	cidrs := mustCIDRs(t, a)
	if len(cidrs) != 2 || !cidrs[0].Addr().Is4() || !cidrs[1].Addr().Is6() {
		t.Fatalf("cidrs = %v, want one v4 then one v6", cidrs)
	}
	if gw := a.Gateway(IPv4); gw != cidrs[0].Addr().Next() {
		t.Errorf("v4 gateway = %s, want %s", gw, cidrs[0].Addr().Next())
	}
	if gw := a.Gateway(IPv6); gw != cidrs[1].Addr().Next() {
		t.Errorf("v6 gateway = %s", gw)
	}
	ips := mustIPs(t, a, "ep1")
	if len(ips) != 2 || ips[0] != cidrs[0].Addr().Next().Next() || ips[1] != cidrs[1].Addr().Next().Next() {
		t.Fatalf("ips = %v, want the first address after the gateway in each cidr %v", ips, cidrs)
	}
	// Idempotent per endpoint.
	if again := mustIPs(t, a, "ep1"); fmt.Sprint(again) != fmt.Sprint(ips) {
		t.Fatalf("second AllocateIP(ep1) = %v, want %v", again, ips)
	}
	ips2 := mustIPs(t, a, "ep2")
	if ips2[0] != ips[0].Next() {
		t.Fatalf("ep2 = %v, want the next address after %v", ips2, ips)
	}
	// Release frees the lowest address, which the next endpoint reuses.
	if err := a.ReleaseIP(ctx, "ep1"); err != nil {
		t.Fatal(err)
	}
	if err := a.ReleaseIP(ctx, "ep1"); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if ips3 := mustIPs(t, a, "ep3"); fmt.Sprint(ips3) != fmt.Sprint(ips) {
		t.Fatalf("ep3 = %v, want the released %v", ips3, ips)
	}
	if _, err := a.AllocateIP(ctx, ""); err == nil {
		t.Fatal("empty endpoint accepted")
	}
}

func TestGatewayBeforeNodeCIDRs(t *testing.T) {
	a := New(testConfig("10.1.0.0/16"), newStore(t), "n1", nil)
	if gw := a.Gateway(IPv4); gw.IsValid() {
		t.Fatalf("gateway before NodeCIDRs = %s, want zero", gw)
	}
	mustCIDRs(t, a)
	if gw := a.Gateway(IPv6); gw.IsValid() {
		t.Fatalf("gateway of a family without pool = %s", gw)
	}
}

func TestNodeCIDRExhaustion(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig("10.9.0.0/29")
	cfg.NodeMaskV4 = 30 // .0 network, .1 gateway, .2 endpoint, .3 broadcast
	st := newStore(t)
	a := New(cfg, st, "n1", nil)
	cidrs := mustCIDRs(t, a)
	ips := mustIPs(t, a, "ep1")
	if want := cidrs[0].Addr().Next().Next(); ips[0] != want {
		t.Fatalf("ip = %s, want %s", ips[0], want)
	}
	_, err := a.AllocateIP(ctx, "ep2")
	if !errors.Is(err, ErrNodeCIDRExhausted) || !strings.Contains(err.Error(), cidrs[0].String()) {
		t.Fatalf("want ErrNodeCIDRExhausted naming %s, got %v", cidrs[0], err)
	}
	// A second node takes the other /30; a third finds the pool exhausted.
	mustCIDRs(t, New(cfg, st, "n2", nil))
	_, err = New(cfg, st, "n3", nil).NodeCIDRs(ctx)
	if !errors.Is(err, ErrPoolExhausted) || !strings.Contains(err.Error(), "10.9.0.0/29") || !strings.Contains(err.Error(), "node-mask-v4") {
		t.Fatalf("want ErrPoolExhausted naming the pool and the fix, got %v", err)
	}
	// Releasing ep1 makes room again.
	if err := a.ReleaseIP(ctx, "ep1"); err != nil {
		t.Fatal(err)
	}
	mustIPs(t, a, "ep2")
}

func TestV6NoBroadcast(t *testing.T) {
	cfg := testConfig("fd00::/125")
	cfg.NodeMaskV6 = 126 // ::0 subnet-router, ::1 gateway, ::2 and ::3 endpoints
	a := New(cfg, newStore(t), "n1", nil)
	mustCIDRs(t, a)
	got := []netip.Addr{mustIPs(t, a, "a")[0], mustIPs(t, a, "b")[0]}
	if got[1] != netip.MustParseAddr("fd00::3") && got[1] != netip.MustParseAddr("fd00::7") {
		t.Fatalf("v6 should use the top address too, got %v", got)
	}
	if _, err := a.AllocateIP(context.Background(), "c"); !errors.Is(err, ErrNodeCIDRExhausted) {
		t.Fatalf("want exhaustion, got %v", err)
	}
}

func TestRestartKeepsCIDRAndIPs(t *testing.T) {
	st := newStore(t)
	cfg := testConfig("10.1.0.0/16", "fd00:1::/96")
	// Other nodes first, so n1 does not trivially get the lowest CIDR.
	for i := range 5 {
		mustCIDRs(t, New(cfg, st, fmt.Sprintf("other%d", i), nil))
	}
	a := New(cfg, st, "n1", nil)
	cidrs := mustCIDRs(t, a)
	ips := mustIPs(t, a, "ep1")
	mustIPs(t, a, "ep2")

	b := New(cfg, st, "n1", nil) // the agent restarted
	if got := mustCIDRs(t, b); fmt.Sprint(got) != fmt.Sprint(cidrs) {
		t.Fatalf("after restart cidrs = %v, want %v", got, cidrs)
	}
	if got := mustIPs(t, b, "ep1"); fmt.Sprint(got) != fmt.Sprint(ips) {
		t.Fatalf("after restart ep1 = %v, want %v", got, ips)
	}
	ep3 := mustIPs(t, b, "ep3")
	for _, ip := range ep3 {
		for _, old := range ips {
			if ip == old {
				t.Fatalf("restart reused live ip %s", ip)
			}
		}
	}
}

func TestConcurrentNodesNeverShareCIDR(t *testing.T) {
	st := newStore(t)
	cfg := testConfig("10.0.0.0/16", "fd00::/104") // 256 v4 and 256 v6 node cidrs
	const nodes = 64
	var wg sync.WaitGroup
	got := make([][]netip.Prefix, nodes)
	errs := make([]error, nodes)
	for i := range nodes {
		wg.Go(func() {
			// Two processes per node name race too: they must agree.
			a := New(cfg, st, fmt.Sprintf("node%d", i%(nodes/2)), nil)
			got[i], errs[i] = a.NodeCIDRs(context.Background())
		})
	}
	wg.Wait()
	owner := map[netip.Prefix]string{}
	for i := range nodes {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		name := fmt.Sprintf("node%d", i%(nodes/2))
		for _, p := range got[i] {
			if o, ok := owner[p]; ok && o != name {
				t.Fatalf("cidr %s given to %s and %s", p, o, name)
			}
			owner[p] = name
		}
	}
	if len(owner) != nodes { // 32 names × 2 families
		t.Fatalf("%d distinct cidrs, want %d", len(owner), nodes)
	}
	kvs, _, _ := st.List(context.Background(), PrefixCIDRs)
	if len(kvs) != nodes {
		t.Fatalf("%d cidr keys in the store, want %d", len(kvs), nodes)
	}
}

func TestConcurrentEndpoints(t *testing.T) {
	st := newStore(t)
	cfg := testConfig("10.0.0.0/16")
	// Two allocators of the same node (a restart overlapping the old process)
	// plus many endpoints: no address may be given twice.
	a, b := New(cfg, st, "n1", nil), New(cfg, st, "n1", nil)
	const eps = 64
	var wg sync.WaitGroup
	got := make([]netip.Addr, eps)
	errs := make([]error, eps)
	for i := range eps {
		al := a
		if i%2 == 1 {
			al = b
		}
		wg.Go(func() {
			ips, err := al.AllocateIP(context.Background(), fmt.Sprintf("ep%d", i))
			errs[i] = err
			if err == nil {
				got[i] = ips[0]
			}
		})
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, ip := range got {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if j, ok := seen[ip]; ok {
			t.Fatalf("ip %s given to ep%d and ep%d", ip, j, i)
		}
		seen[ip] = i
	}
}

func TestInvalidNodeName(t *testing.T) {
	if _, err := New(testConfig("10.0.0.0/16"), newStore(t), "a/b", nil).NodeCIDRs(context.Background()); err == nil {
		t.Fatal("node name with '/' accepted")
	}
}

func TestReleaserGrace(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	cfg := testConfig("10.0.0.0/16", "fd00::/104")
	cfg.ReleaseGrace = 5 * time.Minute
	a1, a2 := New(cfg, st, "n1", nil), New(cfg, st, "n2", nil)
	mustCIDRs(t, a1)
	mustCIDRs(t, a2)
	mustIPs(t, a1, "ep1")
	mustIPs(t, a2, "ep1")

	r := NewReleaser(cfg, st, nil)
	t0 := time.Unix(1_000_000, 0)
	both := map[string]bool{"n1": true, "n2": true}
	onlyN2 := map[string]bool{"n2": true}
	step := func(alive map[string]bool, at time.Duration, want string) {
		t.Helper()
		got, err := r.Reconcile(ctx, alive, t0.Add(at))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != want {
			t.Fatalf("at %s released %v, want %s", at, got, want)
		}
	}
	step(both, 0, "[]")
	step(onlyN2, time.Minute, "[]")             // n1 absent from t0+1m
	step(onlyN2, 5*time.Minute, "[]")           // 4m absent
	step(both, 5*time.Minute+time.Second, "[]") // back: timer resets
	step(onlyN2, 6*time.Minute, "[]")           // absent again from 6m
	step(onlyN2, 10*time.Minute, "[]")          // 4m
	step(onlyN2, 11*time.Minute, "[n1]")        // 5m: released
	step(onlyN2, 20*time.Minute, "[]")          // nothing left to release

	for _, prefix := range []string{PrefixNodes + "n1/", PrefixCIDRs, PrefixIPs} {
		kvs, _, _ := st.List(ctx, prefix)
		for _, kv := range kvs {
			if strings.Contains(kv.Key, "n1") || strings.Contains(string(kv.Value), `"n1"`) {
				t.Fatalf("n1 still holds %s", kv.Key)
			}
		}
	}
	// n2 kept everything.
	if kvs, _, _ := st.List(ctx, PrefixIPs); len(kvs) != 2 {
		t.Fatalf("n2 ips = %d keys, want 2", len(kvs))
	}
	// n1 coming back later simply allocates again.
	a3 := New(cfg, st, "n1", nil)
	if got := mustCIDRs(t, a3); len(got) != 2 {
		t.Fatalf("n1 after release: %v", got)
	}

	// A new Releaser (leader change) restarts the timer: never sooner.
	r2 := NewReleaser(cfg, st, nil)
	if got, _ := r2.Reconcile(ctx, onlyN2, t0.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("new leader released %v at once", got)
	}
	if got, _ := r2.Reconcile(ctx, onlyN2, t0.Add(time.Hour+5*time.Minute)); fmt.Sprint(got) != "[n1]" {
		t.Fatalf("new leader after grace released %v", got)
	}
}

func TestReleaserManyIPs(t *testing.T) {
	// More keys than one store transaction may touch.
	ctx := context.Background()
	st := newStore(t)
	cfg := testConfig("10.0.0.0/16")
	a := New(cfg, st, "n1", nil)
	for i := range 200 {
		mustIPs(t, a, fmt.Sprintf("ep%d", i))
	}
	r := NewReleaser(cfg, st, nil)
	t0 := time.Unix(0, 0)
	r.Reconcile(ctx, nil, t0)
	got, err := r.Reconcile(ctx, nil, t0.Add(cfg.ReleaseGrace))
	if err != nil || fmt.Sprint(got) != "[n1]" {
		t.Fatalf("released %v, %v", got, err)
	}
	for _, p := range []string{"ipam/"} {
		if kvs, _, _ := st.List(ctx, p); len(kvs) != 0 {
			t.Fatalf("%d keys left under %s", len(kvs), p)
		}
	}
}
