package agent_test

// Lab tests: real agents as processes in network namespaces. They need root
// and skip with a reason otherwise (labtest.New).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/lab"
	"github.com/fabric-net/fabric/fabric/lab/labtest"
)

// leaderOf asks every given node who leads and returns the answer once one
// is known (and not in the excluded set).
func waitLeader(t *testing.T, l *lab.Lab, nodes []string, exclude string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			st, err := l.Client(n).Status(ctx)
			cancel()
			if err == nil && st.Store.Leader != "" && st.Store.Leader != exclude {
				return st.Store.Leader
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no leader other than %q among %v within %s", exclude, nodes, within)
	return ""
}

func without(names []string, drop ...string) []string {
	var out []string
next:
	for _, n := range names {
		for _, d := range drop {
			if n == d {
				continue next
			}
		}
		out = append(out, n)
	}
	return out
}

func nodeNames(l *lab.Lab) []string {
	var out []string
	for _, n := range l.Nodes() {
		out = append(out, n.Name)
	}
	return out
}

// put writes through a node, retrying while the store has no leader (as a
// real caller would); only a confirmed write counts as acknowledged.
func put(ctx context.Context, c *api.Client, key, value string) error {
	for {
		res, err := c.Put(ctx, api.PutRequest{Key: key, Value: value})
		if err == nil && res.Succeeded {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("put %s: %v (last error: %v)", key, ctx.Err(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestLabLeaderKillNoLostWrite(t *testing.T) {
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 3, Servers: 3, Mode: "none"})
	names := nodeNames(l)
	leader := waitLeader(t, l, names, "", 10*time.Second)

	// Writers on every node keep writing through the kill; every write
	// that was acknowledged must be readable afterwards.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
		stop  = make(chan struct{})
	)
	for _, n := range without(names, leader) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := l.Client(n)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("test/acked/%s/%04d", n, i)
				wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
				res, err := c.Put(wctx, api.PutRequest{Key: key, Value: key})
				wcancel()
				if err == nil && res.Succeeded {
					mu.Lock()
					acked = append(acked, key)
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	killed := time.Now()
	if err := l.Kill(leader, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	newLeader := waitLeader(t, l, without(names, leader), leader, 10*time.Second)
	failover := time.Since(killed)
	t.Logf("leader %s killed; %s leads after %s", leader, newLeader, failover.Round(time.Millisecond))
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 20 {
		t.Fatalf("only %d writes were acknowledged: the store did not make progress", len(acked))
	}
	c := l.Client(newLeader)
	kvs, err := c.List(ctx, "test/acked/")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, kv := range kvs {
		have[kv.Key] = true
	}
	for _, k := range acked {
		if !have[k] {
			t.Errorf("acknowledged write %s is lost", k)
		}
	}
	t.Logf("%d acknowledged writes, all present", len(acked))

	// The killed node comes back as a follower and catches up.
	if err := l.Start(leader); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitReady(ctx, leader); err != nil {
		t.Fatal(err)
	}
	kvs, err = l.Client(leader).List(ctx, "test/acked/")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) < len(acked) {
		t.Errorf("restarted node sees %d keys, want at least %d", len(kvs), len(acked))
	}
}

func TestLabConcurrentAllocationsWithLeaderKills(t *testing.T) {
	const perNode = 50
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 5, Servers: 3, Mode: "none"})
	names := nodeNames(l)
	labelSets := []string{"app=web", "app=db", "app=cache", "app=web,tier=front", "app=queue",
		"app=api", "app=api,tier=back", "team=a", "team=b", "app=batch"}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := l.Client(n)
			for i := 0; i < perNode; i++ {
				req := api.EndpointRequest{ID: fmt.Sprintf("ep-%s-%02d", n, i), Labels: labelSets[(i+len(n))%len(labelSets)]}
				for {
					rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
					_, err := c.CreateEndpoint(rctx, req)
					rcancel()
					if err == nil {
						break
					}
					if ctx.Err() != nil {
						errs <- fmt.Errorf("%s: endpoint %s: %v", n, req.ID, err)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	// Kill the leader twice while the allocations run; each killed agent
	// comes back, as a supervisor would restart it.
	for round := 0; round < 2; round++ {
		time.Sleep(time.Second)
		leader := waitLeader(t, l, names, "", 15*time.Second)
		t.Logf("round %d: killing leader %s", round+1, leader)
		if err := l.Kill(leader, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitLeader(t, l, without(names, leader), leader, 15*time.Second)
		if err := l.Start(leader); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	// The last restarted agent may still be starting.
	if err := l.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	eps, err := l.Client(names[0]).Endpoints(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != perNode*len(names) {
		t.Errorf("%d endpoints recorded, want %d", len(eps), perNode*len(names))
	}
	ipOwner := map[string]string{}
	idOf := map[string]uint32{}
	labelsOf := map[uint32]string{}
	for _, ep := range eps {
		for _, ip := range ep.IPs {
			if prev, dup := ipOwner[ip]; dup {
				t.Errorf("IP %s given to both %s and %s", ip, prev, ep.ID)
			}
			ipOwner[ip] = ep.ID
		}
		if id, ok := idOf[ep.Labels]; ok && id != ep.Identity {
			t.Errorf("labels %q have two identities: %d and %d", ep.Labels, id, ep.Identity)
		}
		idOf[ep.Labels] = ep.Identity
		if ls, ok := labelsOf[ep.Identity]; ok && ls != ep.Labels {
			t.Errorf("identity %d stands for two label sets: %q and %q", ep.Identity, ls, ep.Labels)
		}
		labelsOf[ep.Identity] = ep.Labels
	}
	// The IPAM records agree with the endpoints: one record per address.
	ips, err := l.Client(names[0]).List(ctx, "ipam/ips/")
	if err != nil {
		t.Fatal(err)
	}
	if len(ips) != len(ipOwner) {
		t.Errorf("%d IPAM records for %d endpoint addresses", len(ips), len(ipOwner))
	}
	t.Logf("%d endpoints, %d addresses, %d identities for %d label sets", len(eps), len(ipOwner), len(labelsOf), len(idOf))
}

func TestLabRestartKeepsCIDRAndIPs(t *testing.T) {
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 3, Servers: 3, Mode: "none"})
	node := l.Nodes()[2].Name
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := l.Client(node)
	before, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var eps []api.Endpoint
	for i := 0; i < 5; i++ {
		ep, err := c.CreateEndpoint(ctx, api.EndpointRequest{ID: fmt.Sprintf("keep-%d", i), Labels: "app=keep"})
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, ep)
	}
	if err := l.Kill(node, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := l.Start(node); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitReady(ctx, node); err != nil {
		t.Fatal(err)
	}
	after, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(after.Node.PodCIDRs, ",") != strings.Join(before.Node.PodCIDRs, ",") || len(after.Node.PodCIDRs) == 0 {
		t.Fatalf("pod CIDRs changed across restart: %v → %v", before.Node.PodCIDRs, after.Node.PodCIDRs)
	}
	used := map[string]bool{}
	for _, ep := range eps {
		again, err := c.CreateEndpoint(ctx, api.EndpointRequest{ID: ep.ID, Labels: "app=keep"})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(again.IPs, ",") != strings.Join(ep.IPs, ",") || again.Identity != ep.Identity {
			t.Errorf("endpoint %s: %v/%d before restart, %v/%d after", ep.ID, ep.IPs, ep.Identity, again.IPs, again.Identity)
		}
		for _, ip := range ep.IPs {
			used[ip] = true
		}
	}
	fresh, err := c.CreateEndpoint(ctx, api.EndpointRequest{ID: "fresh", Labels: "app=keep"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range fresh.IPs {
		if used[ip] {
			t.Errorf("a new endpoint got %s, which a live endpoint holds", ip)
		}
	}
	t.Logf("CIDRs %v kept; endpoints kept their IPs; new endpoint got %v", after.Node.PodCIDRs, fresh.IPs)
}

func TestLabMinorityPartition(t *testing.T) {
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 3, Servers: 3, Mode: "none"})
	names := nodeNames(l)
	cut := names[2]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := put(ctx, l.Client(names[0]), "test/before", "1"); err != nil {
		t.Fatal(err)
	}
	if err := l.LinkDown(cut); err != nil {
		t.Fatal(err)
	}
	// The cut-off node's writes fail with a clear error once it notices it
	// has no majority; they never succeed.
	var lastErr error
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		wctx, wcancel := context.WithTimeout(ctx, 8*time.Second)
		res, err := l.Client(cut).Put(wctx, api.PutRequest{Key: "test/minority", Value: "x"})
		wcancel()
		if err == nil && res.Succeeded {
			// Only possible before the cut took effect; keep trying.
			time.Sleep(200 * time.Millisecond)
			continue
		}
		lastErr = err
		break
	}
	if lastErr == nil {
		t.Fatal("writes on the cut-off node kept succeeding")
	}
	msg := lastErr.Error()
	if !strings.Contains(msg, "majority") && !strings.Contains(msg, "leader") && !strings.Contains(msg, "server") {
		t.Errorf("minority write error is not clear: %q", msg)
	}
	t.Logf("minority write error: %s", msg)

	// The majority goes on.
	majority := names[:2]
	waitLeader(t, l, majority, cut, 15*time.Second)
	for i := 0; i < 10; i++ {
		if err := put(ctx, l.Client(majority[i%2]), fmt.Sprintf("test/majority/%d", i), "y"); err != nil {
			t.Fatal(err)
		}
	}

	if err := l.LinkUp(cut); err != nil {
		t.Fatal(err)
	}
	// After healing everyone converges: the cut node sees the majority's
	// writes, and every member is alive again.
	deadline = time.Now().Add(30 * time.Second)
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		kvs, err := l.Client(cut).List(rctx, "test/majority/")
		st, serr := l.Client(cut).Status(rctx)
		rcancel()
		alive := 0
		if serr == nil {
			for _, m := range st.Members {
				if m.State == "alive" {
					alive++
				}
			}
		}
		if err == nil && len(kvs) == 10 && alive == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no convergence after healing: %d/10 keys (err %v), %d/3 alive", len(kvs), err, alive)
		}
		time.Sleep(200 * time.Millisecond)
	}
	revs := map[int64][]string{}
	deadline = time.Now().Add(10 * time.Second)
	for {
		revs = map[int64][]string{}
		for _, n := range names {
			st, err := l.Client(n).Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			revs[st.Store.Revision] = append(revs[st.Store.Revision], n)
		}
		if len(revs) == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(revs) != 1 {
		t.Errorf("servers did not converge on one revision: %v", revs)
	}
}

func TestLabDeadNodeDetectionAndCIDRGrace(t *testing.T) {
	const grace = 6 * time.Second
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 4, Servers: 3, Mode: "none",
		AgentConfig: map[string]any{"cidrReleaseGrace": grace.String()}})
	names := nodeNames(l)
	victim := names[3]
	watcher := l.Client(names[0])
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := watcher.Get(ctx, "ipam/nodes/"+victim+"/v4"); err != nil {
		t.Fatalf("victim has no CIDR record: %v", err)
	}
	killed := time.Now()
	if err := l.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var detected time.Duration
	for detected == 0 {
		st, err := watcher.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range st.Members {
			if m.Name == victim && m.State == "dead" {
				detected = time.Since(killed)
			}
		}
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("%s not marked dead 5s after kill -9", victim)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s marked dead %s after kill -9", victim, detected.Round(time.Millisecond))
	if detected > 2*time.Second {
		t.Errorf("dead node noticed after %s, want about a second", detected)
	}
	// The CIDR stays through the grace and goes after it.
	var released time.Duration
	for released == 0 {
		_, err := watcher.Get(ctx, "ipam/nodes/"+victim+"/v4")
		switch {
		case errors.Is(err, api.ErrNotFound):
			released = time.Since(killed)
		case err != nil:
			t.Fatal(err)
		}
		if time.Since(killed) > grace+15*time.Second {
			t.Fatalf("CIDR of %s not released %s after its death (grace %s)", victim, time.Since(killed), grace)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("CIDR of %s released %s after kill (grace %s)", victim, released.Round(time.Millisecond), grace)
	if released < grace {
		t.Errorf("CIDR released after %s, before the grace of %s", released, grace)
	}
	nodes, err := watcher.List(ctx, "nodes/")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range nodes {
		var rec map[string]any
		_ = json.Unmarshal([]byte(kv.Value), &rec)
		if rec["name"] == victim {
			t.Errorf("node record of %s still present after release", victim)
		}
	}
}
