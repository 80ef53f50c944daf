package lbipam

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/fabric-net/fabric/fabric/store"
)

// newAllocator returns an Allocator over a fresh in-memory store holding the
// pools of poolsYAML.
func newAllocator(t testing.TB, poolsYAML string) (*Allocator, *store.Memory) {
	t.Helper()
	st := store.NewMemory()
	t.Cleanup(st.Close)
	a := New(st, nil)
	pools, err := ParsePools([]byte(poolsYAML))
	if err != nil {
		t.Fatalf("ParsePools: %v", err)
	}
	if err := a.SetPools(context.Background(), pools); err != nil {
		t.Fatalf("SetPools: %v", err)
	}
	return a, st
}

func pool(name, spec string) string {
	return fmt.Sprintf("---\napiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: %s}\nspec: %s\n", name, spec)
}

func mustAssign(t testing.TB, a *Allocator, req Request) Status {
	t.Helper()
	s, err := a.Assign(context.Background(), req)
	if err != nil {
		t.Fatalf("Assign %s: %v", req.Service, err)
	}
	return s
}

func ips(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func wantIPs(t testing.TB, s Status, want ...string) {
	t.Helper()
	got := fmt.Sprint(s.IPs)
	if w := fmt.Sprint(ips(want...)); got != w {
		t.Fatalf("IPs = %s, want %s (conditions %+v)", got, w, s.Conditions)
	}
}

func wantCondition(t testing.TB, s Status, ct ConditionType, substr string) {
	t.Helper()
	for _, c := range s.Conditions {
		if c.Type == ct && strings.Contains(c.Message, substr) {
			return
		}
	}
	t.Fatalf("no %s condition containing %q in %+v", ct, substr, s.Conditions)
}

func TestAssignReleaseIdempotent(t *testing.T) {
	ctx := context.Background()
	a, st := newAllocator(t, pool("lb", "{blocks: [{cidr: 10.0.0.0/30}, {start: 10.0.1.10, stop: 10.0.1.11}]}"))
	s := mustAssign(t, a, Request{Service: "default/web"})
	wantIPs(t, s, "10.0.0.0") // allowFirstLastIPs defaults to Yes
	wantCondition(t, s, Assigned, "10.0.0.0 (pool lb)")

	_, rev, _ := st.List(ctx, "")
	again := mustAssign(t, a, Request{Service: "default/web"})
	wantIPs(t, again, "10.0.0.0")
	if _, rev2, _ := st.List(ctx, ""); rev2 != rev {
		t.Errorf("assigning the same request again wrote to the store (revision %d -> %d)", rev, rev2)
	}

	wantIPs(t, mustAssign(t, a, Request{Service: "default/api"}), "10.0.0.1")
	kv, found, _ := st.Get(ctx, PrefixIPs+"10.0.0.1")
	var rec IPRecord
	if !found || json.Unmarshal(kv.Value, &rec) != nil || rec.Pool != "lb" || len(rec.Holders) != 1 || rec.Holders[0].Service != "default/api" || rec.AllocatedAt.IsZero() {
		t.Fatalf("record of 10.0.0.1 = %s", kv.Value)
	}

	if err := a.Release(ctx, "default/web"); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, "default/web"); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if _, found, _ := st.Get(ctx, PrefixIPs+"10.0.0.0"); found {
		t.Error("released address still recorded")
	}
	if _, found, _ := st.Get(ctx, PrefixServices+"default/web"); found {
		t.Error("released service still indexed")
	}
	wantIPs(t, mustAssign(t, a, Request{Service: "other/web"}), "10.0.0.0")

	if _, err := a.Assign(ctx, Request{Service: "no-namespace"}); err == nil || !strings.Contains(err.Error(), "namespace/name") {
		t.Errorf("bad service name: %v", err)
	}
}

func TestRequestedIP(t *testing.T) {
	a, _ := newAllocator(t, `---
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: lb, annotations: {lbipam.fabric.io/exclude: 10.0.0.7}}
spec: {allowFirstLastIPs: "No", blocks: [{cidr: 10.0.0.0/28}]}
`+pool("other", "{blocks: [{cidr: 10.9.0.0/24}], serviceSelector: {matchLabels: {team: x}}}"))

	wantIPs(t, mustAssign(t, a, Request{Service: "ns/a", RequestedIPs: ips("10.0.0.9")}), "10.0.0.9")

	taken := mustAssign(t, a, Request{Service: "ns/b", RequestedIPs: ips("10.0.0.9")})
	wantIPs(t, taken) // never a silent different address
	wantCondition(t, taken, RequestedIPUnavailable, "held by ns/a")

	for ip, why := range map[string]string{
		"10.0.0.7":  "excluded",
		"10.0.0.0":  "allowFirstLastIPs: No",
		"10.0.0.15": "allowFirstLastIPs: No",
		"10.5.0.1":  "in no pool",
		"10.9.0.1":  `pool "other" does not select the service`,
	} {
		s := mustAssign(t, a, Request{Service: "ns/c", RequestedIPs: ips(ip)})
		wantIPs(t, s)
		wantCondition(t, s, RequestedIPUnavailable, why)
	}

	// A service holding an address and asking for a taken one keeps what it has.
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/d"}), "10.0.0.1")
	s := mustAssign(t, a, Request{Service: "ns/d", RequestedIPs: ips("10.0.0.9")})
	wantIPs(t, s, "10.0.0.1")
	wantCondition(t, s, RequestedIPUnavailable, "10.0.0.9")
	// Asking for a free one moves it there and frees the old one.
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/d", RequestedIPs: ips("10.0.0.10")}), "10.0.0.10")
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/e"}), "10.0.0.1")
}

func TestPoolExhausted(t *testing.T) {
	a, _ := newAllocator(t, pool("small", "{blocks: [{start: 10.0.0.1, stop: 10.0.0.2}]}"))
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/a"}), "10.0.0.1")
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/b"}), "10.0.0.2")
	s := mustAssign(t, a, Request{Service: "ns/c"})
	wantIPs(t, s)
	wantCondition(t, s, PoolExhausted, `"small" (10.0.0.1-10.0.0.2)`)
	if err := a.Release(context.Background(), "ns/a"); err != nil {
		t.Fatal(err)
	}
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/c"}), "10.0.0.1")
}

func TestDualStackAndNoPool(t *testing.T) {
	a, _ := newAllocator(t, pool("dual", "{blocks: [{cidr: 10.0.0.0/24}, {cidr: '2001:db8::/64'}]}")+
		pool("v4only", "{blocks: [{cidr: 10.1.0.0/24}], serviceSelector: {matchLabels: {v4: only}}}"))
	s := mustAssign(t, a, Request{Service: "ns/a", Families: []Family{IPv4, IPv6}})
	wantIPs(t, s, "10.0.0.0", "2001:db8::")
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/b", Families: []Family{IPv6}}), "2001:db8::1")

	// A requested v6 covers v6; v4 still comes from the pool.
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/c", Families: []Family{IPv4, IPv6}, RequestedIPs: ips("2001:db8::99")}), "10.0.0.1", "2001:db8::99")

	// Dropping a family gives its address back.
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/a", Families: []Family{IPv6}}), "2001:db8::")
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/d"}), "10.0.0.0")

	both := mustAssign(t, a, Request{Service: "ns/e", Labels: map[string]string{"v4": "only"}, Families: []Family{IPv4, IPv6}})
	// "dual" selects everyone, so v6 comes from it; the lowest v4 comes from "dual" too.
	wantIPs(t, both, "10.0.0.2", "2001:db8::2")

	b, _ := newAllocator(t, pool("v4", "{blocks: [{cidr: 10.0.0.0/24}]}"))
	s = mustAssign(t, b, Request{Service: "ns/a", Families: []Family{IPv4, IPv6}})
	wantIPs(t, s) // all or nothing
	wantCondition(t, s, NoPool, "IPv6")
}

func TestSelectorChoosesPool(t *testing.T) {
	a, _ := newAllocator(t, pool("blue", "{blocks: [{cidr: 10.0.1.0/24}], serviceSelector: {matchLabels: {color: blue}}}")+
		pool("red", "{blocks: [{cidr: 10.0.2.0/24}], serviceSelector: {matchExpressions: [{key: color, operator: In, values: [red, crimson]}]}}")+
		pool("prod", "{blocks: [{cidr: 10.0.3.0/24}], serviceSelector: {matchLabels: {io.kubernetes.service.namespace: prod}}}"))
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/a", Labels: map[string]string{"color": "blue"}}), "10.0.1.0")
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/b", Labels: map[string]string{"color": "crimson"}}), "10.0.2.0")
	wantIPs(t, mustAssign(t, a, Request{Service: "prod/c"}), "10.0.3.0")
	s := mustAssign(t, a, Request{Service: "ns/d", Labels: map[string]string{"color": "green"}})
	wantCondition(t, s, NoPool, "ns/d")

	// Relabelling moves the service to the pool that now selects it.
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/a", Labels: map[string]string{"color": "red"}}), "10.0.2.1")
}

func TestSharingKey(t *testing.T) {
	ctx := context.Background()
	a, st := newAllocator(t, pool("lb", "{blocks: [{cidr: 10.0.0.0/24}]}"))
	web := Request{Service: "ns/web", SharingKey: "front", Ports: []PortKey{{"TCP", 80}, {"TCP", 443}}}
	dns := Request{Service: "ns/dns", SharingKey: "front", Ports: []PortKey{{"UDP", 53}, {"TCP", 53}}}
	wantIPs(t, mustAssign(t, a, web), "10.0.0.0")
	s := mustAssign(t, a, dns)
	wantIPs(t, s, "10.0.0.0")
	wantCondition(t, s, Assigned, "shared")

	kv, _, _ := st.Get(ctx, PrefixIPs+"10.0.0.0")
	var rec IPRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil || rec.SharingKey != "front" || len(rec.Holders) != 2 {
		t.Fatalf("shared record = %s", kv.Value)
	}

	// A clashing port by name is refused; without a name it gets its own address.
	clash := Request{Service: "ns/proxy", SharingKey: "front", Ports: []PortKey{{"TCP", 443}}, RequestedIPs: ips("10.0.0.0")}
	s = mustAssign(t, a, clash)
	wantIPs(t, s)
	wantCondition(t, s, RequestedIPUnavailable, "port TCP/443")
	clash.RequestedIPs = nil
	wantIPs(t, mustAssign(t, a, clash), "10.0.0.1")

	// Other keys, no key and other namespaces are refused.
	for req, why := range map[*Request]string{
		{Service: "ns/x", SharingKey: "back", RequestedIPs: ips("10.0.0.0")}:                                 `not "back"`,
		{Service: "ns/y", RequestedIPs: ips("10.0.0.0")}:                                                     "give this service the same",
		{Service: "other/z", SharingKey: "front", RequestedIPs: ips("10.0.0.0")}:                             "another namespace",
		{Service: "ns/w", SharingKey: "x", RequestedIPs: ips("10.0.0.1")}:                                    "proxy",
		{Service: "ns/v", SharingKey: "front", Ports: []PortKey{{"UDP", 53}}, RequestedIPs: ips("10.0.0.0")}: "UDP/53",
	} {
		s := mustAssign(t, a, *req)
		wantIPs(t, s)
		wantCondition(t, s, RequestedIPUnavailable, why)
	}

	// Releasing one sharer keeps the address for the other.
	if err := a.Release(ctx, "ns/web"); err != nil {
		t.Fatal(err)
	}
	wantIPs(t, mustAssign(t, a, dns), "10.0.0.0")
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/new"}), "10.0.0.2")
	if err := a.Release(ctx, "ns/dns"); err != nil {
		t.Fatal(err)
	}
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/new2"}), "10.0.0.0")
}

func TestPoolRemovedAndDisabled(t *testing.T) {
	ctx := context.Background()
	a, _ := newAllocator(t, pool("one", "{blocks: [{cidr: 10.0.0.0/24}]}")+pool("two", "{blocks: [{cidr: 10.0.1.0/24}]}"))
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/a"}), "10.0.0.0")
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/b", RequestedIPs: ips("10.0.1.7")}), "10.0.1.7")

	two, err := ParsePools([]byte(pool("two", "{disabled: true, blocks: [{cidr: 10.0.1.0/24}]}")))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetPools(ctx, two); err != nil {
		t.Fatal(err)
	}
	if err := a.SetPools(ctx, two); err != nil {
		t.Fatalf("SetPools again: %v", err)
	}
	s := mustAssign(t, a, Request{Service: "ns/a"})
	wantIPs(t, s, "10.0.0.0")
	wantCondition(t, s, PoolGone, `pool "one" was removed`)
	// The disabled pool keeps its assignment but hands out nothing new.
	wantIPs(t, mustAssign(t, a, Request{Service: "ns/b", RequestedIPs: ips("10.0.1.7")}), "10.0.1.7")
	s = mustAssign(t, a, Request{Service: "ns/c"})
	wantCondition(t, s, NoPool, "no enabled pool")
	s = mustAssign(t, a, Request{Service: "ns/c", RequestedIPs: ips("10.0.1.8")})
	wantCondition(t, s, RequestedIPUnavailable, "disabled")

	st, err := a.Pools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].Pool.Name != "two" || st[0].Used != 1 || st[0].Free != 255 || !st[1].Gone || st[1].Pool.Name != "one" || st[1].Used != 1 {
		t.Fatalf("Pools = %+v", st)
	}
}

func TestPoolsCountsAndOverlap(t *testing.T) {
	ctx := context.Background()
	a, _ := newAllocator(t, `---
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: lb, annotations: {lbipam.fabric.io/exclude: "10.0.0.1-10.0.0.2"}}
spec: {allowFirstLastIPs: "No", blocks: [{cidr: 10.0.0.0/29}, {cidr: "2001:db8::/120"}]}
`)
	mustAssign(t, a, Request{Service: "ns/a", Families: []Family{IPv4, IPv6}})
	st, err := a.Pools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// v4: 8 - 2 reserved - 2 excluded = 4; v6: 256 - 2 = 254; two used.
	if len(st) != 1 || st[0].Used != 2 || st[0].Free != 4+254-2 {
		t.Fatalf("Pools = %+v", st)
	}
	err = a.SetPools(ctx, []Pool{
		{Name: "a", Blocks: []Block{{CIDR: netip.MustParsePrefix("10.0.0.0/24")}}},
		{Name: "b", Blocks: []Block{{Start: netip.MustParseAddr("10.0.0.200"), Stop: netip.MustParseAddr("10.0.1.1")}}},
	})
	if err == nil || !strings.Contains(err.Error(), "overlap") {
		t.Fatalf("overlapping pools: %v", err)
	}
}

// TestConcurrentAssign runs 64 services through 8 Allocators (as 8 agents
// would) on one store: every service gets an address and none gets one twice.
func TestConcurrentAssign(t *testing.T) {
	ctx := context.Background()
	first, st := newAllocator(t, pool("lb", "{blocks: [{cidr: 10.0.0.0/25}, {cidr: '2001:db8::/120'}]}"))
	allocs := []*Allocator{first}
	for range 7 {
		allocs = append(allocs, New(st, nil))
	}
	var wg sync.WaitGroup
	got := make([]Status, 64)
	errs := make([]error, 64)
	for i := range 64 {
		wg.Go(func() {
			got[i], errs[i] = allocs[i%len(allocs)].Assign(ctx, Request{Service: fmt.Sprintf("ns/svc-%d", i), Families: []Family{IPv4, IPv6}})
		})
	}
	wg.Wait()
	seen := map[netip.Addr]string{}
	for i, s := range got {
		if errs[i] != nil {
			t.Fatalf("svc-%d: %v", i, errs[i])
		}
		if len(s.IPs) != 2 {
			t.Fatalf("svc-%d got %v, %+v", i, s.IPs, s.Conditions)
		}
		for _, ip := range s.IPs {
			if prev, dup := seen[ip]; dup {
				t.Fatalf("%s given to svc-%d and %s", ip, i, prev)
			}
			seen[ip] = fmt.Sprint("svc-", i)
		}
	}
	kvs, _, _ := st.List(ctx, PrefixIPs)
	if len(kvs) != 128 {
		t.Fatalf("%d records, want 128", len(kvs))
	}

	// One service assigned at once through every Allocator still gets one
	// address per family.
	var same [8]Status
	for i := range allocs {
		wg.Go(func() { same[i], errs[i] = allocs[i].Assign(ctx, Request{Service: "ns/same"}) })
	}
	wg.Wait()
	for i := range allocs {
		if errs[i] != nil || len(same[i].IPs) != 1 || same[i].IPs[0] != same[0].IPs[0] {
			t.Fatalf("allocator %d: %v %v, allocator 0: %v", i, same[i].IPs, errs[i], same[0].IPs)
		}
	}
	kvs, _, _ = st.List(ctx, PrefixIPs)
	if len(kvs) != 129 {
		t.Fatalf("%d records after assigning ns/same 8 times, want 129", len(kvs))
	}
}
