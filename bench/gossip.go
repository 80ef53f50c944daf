package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabric-net/fabric/gossip"
)

// gossipProfile is a set of failure-detection timers.
type gossipProfile struct {
	name  string
	apply func(*gossip.Config)
}

var (
	fabricProfile = gossipProfile{"fabric (DefaultConfig)", func(*gossip.Config) {}}
	// stockProfile is memberlist's DefaultLANConfig timers.
	stockProfile = gossipProfile{"memberlist LAN defaults", func(c *gossip.Config) {
		c.ProbeInterval = time.Second
		c.ProbeTimeout = 500 * time.Millisecond
		c.GossipInterval = 200 * time.Millisecond
		c.SuspicionMult = 4
	}}
)

// suspicionCounter is a slog handler that throws the pools' logs away but
// counts memberlist's "Suspect X has failed, no acks received" (this node's
// probe of X failed and it started a suspicion) and "Marking X as failed".
type suspicionCounter struct {
	suspects atomic.Int64
	marked   atomic.Int64
}

func (h *suspicionCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *suspicionCounter) Handle(_ context.Context, r slog.Record) error {
	switch {
	case strings.HasPrefix(r.Message, "Suspect ") && strings.Contains(r.Message, "has failed"):
		h.suspects.Add(1)
	case strings.HasPrefix(r.Message, "Marking ") && strings.Contains(r.Message, "as failed"):
		h.marked.Add(1)
	}
	return nil
}
func (h *suspicionCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *suspicionCounter) WithGroup(string) slog.Handler      { return h }

// gossipCluster is n pools in this process on 127.0.0.1, sharing a fresh
// random key, all joined through the first.
type gossipCluster struct {
	pools []*gossip.Pool
	names []string
	log   *suspicionCounter
}

func startGossip(ctx context.Context, cl *cleanup, prof gossipProfile, n int) (*gossipCluster, func(), error) {
	key := make([]byte, 32)
	rand.Read(key)
	g := &gossipCluster{log: &suspicionCounter{}}
	stop := cl.add(func() {
		var wg sync.WaitGroup
		for _, p := range g.pools {
			wg.Go(func() { p.Shutdown() })
		}
		wg.Wait()
	})
	cluster := "bench-" + rand.Text()[:8]
	for i := range n {
		cfg := gossip.DefaultConfig()
		prof.apply(&cfg)
		cfg.NodeName = fmt.Sprintf("node%02d", i)
		cfg.ClusterName = cluster
		cfg.BindAddr = "127.0.0.1"
		cfg.BindPort = 0
		cfg.Keys = [][]byte{key}
		cfg.Logger = slog.New(g.log)
		p, err := gossip.New(cfg, gossip.Meta{})
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("start pool %d: %w", i, err)
		}
		g.pools = append(g.pools, p)
		g.names = append(g.names, cfg.NodeName)
	}
	seed := g.pools[0].Local().Addr.String()
	for i, p := range g.pools[1:] {
		if _, err := p.Join([]string{seed}); err != nil {
			stop()
			return nil, nil, fmt.Errorf("pool %d join %s: %w", i+1, seed, err)
		}
	}
	if err := g.waitAlive(ctx, 15*time.Second); err != nil {
		stop()
		return nil, nil, err
	}
	return g, stop, nil
}

// waitAlive waits until every pool sees every member alive.
func (g *gossipCluster) waitAlive(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for _, p := range g.pools {
			alive := 0
			for _, m := range p.Members() {
				if m.State == gossip.StateAlive {
					alive++
				}
			}
			if alive != len(g.pools) {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gossip pools of %d did not converge within %s", len(g.pools), timeout)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// failTrial shuts the last member down without Leave and returns how long
// until every other member reported EventFail for it, and until the first did.
func failTrial(ctx context.Context, cl *cleanup, prof gossipProfile, n int, limit time.Duration) (all, first time.Duration, err error) {
	g, stop, err := startGossip(ctx, cl, prof, n)
	if err != nil {
		return 0, 0, err
	}
	defer stop()
	victim := g.pools[n-1]
	victimName := g.names[n-1]
	type seen struct {
		at  time.Time
		err error
	}
	results := make(chan seen, n-1)
	var cancels []func()
	for _, p := range g.pools[:n-1] {
		ch, cancel := p.Subscribe(0)
		cancels = append(cancels, cancel)
		go func() {
			for ev := range ch {
				if ev.Type == gossip.EventFail && ev.Member.Meta.Name == victimName {
					results <- seen{at: ev.At}
					return
				}
			}
			results <- seen{err: errors.New("subscription closed before the failure was seen")}
		}()
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	t0 := time.Now()
	if err := victim.Shutdown(); err != nil {
		return 0, 0, fmt.Errorf("shutdown victim: %w", err)
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for range n - 1 {
		select {
		case s := <-results:
			if s.err != nil {
				return 0, 0, s.err
			}
			d := s.at.Sub(t0)
			all = max(all, d)
			if first == 0 || d < first {
				first = d
			}
		case <-timer.C:
			return 0, 0, fmt.Errorf("not every member saw %s fail within %s", victimName, limit)
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
	}
	return all, first, nil
}

func benchGossip(ctx context.Context, o options, cl *cleanup, w io.Writer) error {
	fmt.Fprintf(w, "\n## Gossip failure detection: Fabric's timers vs memberlist's LAN defaults\n\n")
	fmt.Fprintf(w, "One member of an N-member pool (in this process, 127.0.0.1, encrypted with a fresh random key) is shut down without Leave; "+
		"the time is from Shutdown until every other member has reported EventFail for it. %d trials per cell, a fresh pool for each.\n\n", o.trials)
	fmt.Fprintf(w, "| N | profile | timers (probe / timeout / gossip / suspicion mult) | median | max | first member, median | per trial |\n")
	fmt.Fprintf(w, "|---:|---|---|---:|---:|---:|---|\n")
	type cell struct{ median, max time.Duration }
	cells := map[string]cell{}
	for _, n := range []int{3, 10} {
		for _, prof := range []gossipProfile{fabricProfile, stockProfile} {
			var alls, firsts []time.Duration
			limit := 30 * time.Second
			for t := range o.trials {
				all, first, err := failTrial(ctx, cl, prof, n, limit)
				if err != nil {
					return fmt.Errorf("N=%d, %s, trial %d: %w", n, prof.name, t+1, err)
				}
				alls = append(alls, all)
				firsts = append(firsts, first)
			}
			var per []string
			for _, d := range alls {
				per = append(per, ms(d))
			}
			c := cell{medianDuration(alls), slices.Max(alls)}
			cells[fmt.Sprint(n, prof.name)] = c
			cfg := gossip.DefaultConfig()
			prof.apply(&cfg)
			fmt.Fprintf(w, "| %d | %s | %s / %s / %s / %d | %s | %s | %s | %s |\n", n, prof.name,
				cfg.ProbeInterval, cfg.ProbeTimeout, cfg.GossipInterval, cfg.SuspicionMult,
				ms(c.median), ms(c.max), ms(medianDuration(firsts)), strings.Join(per, ", "))
			progress("gossip: N=%d %s: median %s, max %s", n, prof.name, ms(c.median), ms(c.max))
		}
	}
	fmt.Fprintf(w, "\n| N | detection time fabric/stock, median (lower is better) | max |\n|---:|---:|---:|\n")
	for _, n := range []int{3, 10} {
		f, s := cells[fmt.Sprint(n, fabricProfile.name)], cells[fmt.Sprint(n, stockProfile.name)]
		fmt.Fprintf(w, "| %d | %s | %s |\n", n, ratio(float64(f.median), float64(s.median)), ratio(float64(f.max), float64(s.max)))
	}
	fmt.Fprintf(w, "\nNoise: detection time is dominated by where the probe round-robin happens to stand when the member dies "+
		"(up to one probe interval per member ahead of it) and by the suspicion timeout, which memberlist shortens as "+
		"independent confirmations arrive (fewer possible with N=3); so trials spread by up to a probe interval or two, and the max matters as much as the median.\n")

	return falsePositives(ctx, o, cl, w)
}

// falsePositives runs 10 pools per profile while busy loops keep every core
// saturated, and counts failures and suspicions of members that are in fact
// alive. Fabric's timers are the subject; memberlist's stock timers, run the
// same way, say how much of what is seen is the price of the faster timers.
func falsePositives(ctx context.Context, o options, cl *cleanup, w io.Writer) error {
	const n = 10
	fmt.Fprintf(w, "\n## Gossip false failures under CPU load\n\n")
	fmt.Fprintf(w, "%d pools (this process, 127.0.0.1) per profile, each watched for %s while %d `sh -c 'while :; do :; done'` loops keep all %d cores busy. "+
		"No member dies, so every failure is false. The profiles run one after the other, each on a fresh pool.\n\n",
		n, o.fpDuration, o.burners, runtime.NumCPU())
	fmt.Fprintf(w, "| profile | EventFail for a live member (target 0) | suspicions started (\"Suspect X has failed\") | members marked failed | rejoins | max Lifeguard health score |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|\n")
	for _, prof := range []gossipProfile{fabricProfile, stockProfile} {
		r, err := falsePositiveRun(ctx, o, cl, prof, n)
		if err != nil {
			return fmt.Errorf("false positives, %s: %w", prof.name, err)
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d |\n", prof.name, r.fails, r.suspects, r.marked, r.joins, r.maxHealth)
		progress("gossip: under load, %s: %d false failures, %d suspicions", prof.name, r.fails, r.suspects)
	}
	fmt.Fprintf(w, "\nA suspicion that is refuted in time is harmless (the member stays alive everywhere); only EventFail moves traffic. "+
		"All %d pools share this one process, so a starved process delays every member at once, which is harsher than one node per machine. "+
		"Noise: the result depends on how the kernel schedules this process against the busy loops, so a run is one sample, not a bound.\n", n)
	return nil
}

type fpResult struct {
	fails, joins, suspects, marked int64
	maxHealth                      int
}

func falsePositiveRun(ctx context.Context, o options, cl *cleanup, prof gossipProfile, n int) (fpResult, error) {
	var r fpResult
	g, stop, err := startGossip(ctx, cl, prof, n)
	if err != nil {
		return r, err
	}
	defer stop()
	startSuspects, startMarked := g.log.suspects.Load(), g.log.marked.Load()

	var fails, joins atomic.Int64
	var cancels []func()
	for _, p := range g.pools {
		ch, cancel := p.Subscribe(0)
		cancels = append(cancels, cancel)
		go func() {
			for ev := range ch {
				switch ev.Type {
				case gossip.EventFail:
					fails.Add(1)
				case gossip.EventJoin:
					joins.Add(1) // a member coming back after being declared dead
				}
			}
		}()
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()

	var stops []func()
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	for range o.burners {
		s, err := cl.startProcess(exec.Command("sh", "-c", "while :; do :; done"))
		if err != nil {
			return r, fmt.Errorf("start busy loop: %w", err)
		}
		stops = append(stops, s)
	}
	progress("gossip: %s: %d pools for %s with %d busy loops", prof.name, n, o.fpDuration, o.burners)

	// Suspicions refuted in time raise no event; they are counted from
	// memberlist's log. The poll samples Lifeguard's health score.
	deadline := time.Now().Add(o.fpDuration)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		for _, p := range g.pools {
			r.maxHealth = max(r.maxHealth, p.Stats().HealthScore)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, s := range stops {
		s() // stop the load before reading the counters
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}
	r.fails, r.joins = fails.Load(), joins.Load()
	r.suspects = g.log.suspects.Load() - startSuspects
	r.marked = g.log.marked.Load() - startMarked
	return r, nil
}
