// Package agent wires one node's subsystems together: gossip membership, the
// store (as a Raft server or a client of the servers), IPAM, identities and
// the local API. It owns their lifecycle and the loops that connect them; the
// logic lives in the subsystems.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fabric-net/fabric/bgp"
	"github.com/fabric-net/fabric/fabric/config"
	"github.com/fabric-net/fabric/fabric/identity"
	"github.com/fabric-net/fabric/fabric/ipam"
	"github.com/fabric-net/fabric/fabric/lbipam"
	"github.com/fabric-net/fabric/fabric/store"
	"github.com/fabric-net/fabric/gossip"
)

// Version is the agent's version, stamped at build time.
var Version = "0.1.0-dev"

// RoleServer is the gossip role of store servers.
const RoleServer = "server"

// Agent is one running node.
type Agent struct {
	cfg     config.Config
	log     *slog.Logger
	started time.Time

	pool  *gossip.Pool
	store *store.Store
	ipam  *ipam.Allocator
	ids   *identity.Allocator
	// lbipam assigns load-balancer addresses from the stored pools.
	lbipam *lbipam.Allocator
	// svcs decodes stored services for the reconcilers.
	svcs *serviceCache
	// l2 answers ARP/NDP for owned load-balancer IPs; nil when off.
	l2  *l2Reconciler
	bgp *bgpReconciler // nil when BGP is off
	api *apiServer
	dp  *dpReconciler // nil in datapath mode none
	// nodes mirrors nodes/: every node the cluster has recorded.
	nodes  *mirror
	meta   gossip.Meta
	metaMu sync.Mutex

	cidrMu sync.RWMutex
	cidrs  []netip.Prefix

	// epMu serialises endpoint changes on this node so two requests for one
	// endpoint ID cannot both allocate.
	epMu sync.Mutex
}

// New checks the configuration and prepares the agent; Run starts it.
func New(cfg config.Config, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return &Agent{cfg: cfg, log: log, started: time.Now()}, nil
}

func (a *Agent) underlay() string { return a.cfg.Underlay[0] }

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// Run starts every subsystem, serves until ctx ends, then shuts down in the
// reverse order: API, gossip (graceful leave), store.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	keys := a.cfg.Keys()

	scfg := store.DefaultConfig()
	scfg.NodeID = a.cfg.NodeName
	scfg.ClusterName = a.cfg.ClusterName
	scfg.DataDir = filepath.Join(a.cfg.DataDir, "store")
	scfg.Server = a.cfg.Server
	scfg.BootstrapExpect = a.cfg.BootstrapExpect
	scfg.RaftBind = hostPort(a.underlay(), a.cfg.RaftPort)
	scfg.RaftAdvertise = scfg.RaftBind
	scfg.APIBind = hostPort(a.underlay(), a.cfg.APIPort)
	scfg.APIAdvertise = scfg.APIBind
	scfg.Secret = keys[0]
	scfg.Logger = a.log.With("subsys", "store")
	st, err := store.New(scfg)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	a.store = st
	if err := st.Start(ctx); err != nil {
		return fmt.Errorf("start store: %w", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			a.log.Warn("store close", "err", err)
		}
	}()

	gcfg := gossip.DefaultConfig()
	gcfg.NodeName = a.cfg.NodeName
	gcfg.ClusterName = a.cfg.ClusterName
	gcfg.ClusterID = a.cfg.ClusterID
	gcfg.BindAddr = a.underlay()
	gcfg.BindPort = a.cfg.GossipPort
	gcfg.Keys = keys
	gcfg.Logger = a.log.With("subsys", "gossip")
	a.meta = gossip.Meta{
		Name:      a.cfg.NodeName,
		Cluster:   a.cfg.ClusterName,
		ClusterID: a.cfg.ClusterID,
		Version:   Version,
		Health:    "starting",
		APIAddr:   scfg.APIAdvertise,
		Started:   a.started.UnixMilli(),
	}
	for _, u := range a.cfg.Underlay {
		a.meta.Underlay = append(a.meta.Underlay, netip.MustParseAddr(u))
	}
	if a.cfg.Server {
		a.meta.Roles = []string{RoleServer}
		a.meta.RaftAddr = scfg.RaftAdvertise
	}
	pool, err := gossip.New(gcfg, a.meta)
	if err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	a.pool = pool
	defer func() {
		if err := pool.Leave(2 * time.Second); err != nil {
			a.log.Warn("gossip leave", "err", err)
		}
		_ = pool.Shutdown()
	}()

	a.ipam = ipam.New(a.ipamConfig(), st, a.cfg.NodeName, a.log.With("subsys", "ipam"))
	a.ids = identity.New(a.identityConfig(), st, a.cfg.NodeName, a.log.With("subsys", "identity"))
	a.lbipam = lbipam.New(st, a.log.With("subsys", "lbipam"))
	a.svcs = newServiceCache(a.log.With("subsys", "service"))

	a.nodes = newMirror("nodes/", a.log.With("subsys", "nodes"))
	loops := []func(context.Context){func(ctx context.Context) { a.nodes.run(ctx, st) }, a.rejoinLoop}
	if a.cfg.DatapathMode != "none" {
		dp, err := a.openDatapath()
		if err != nil {
			return err
		}
		defer dp.Close()
		a.dp = newDPReconciler(a, dp)
		loops = append(loops, a.dp.run)
		if a.cfg.L2Announcements {
			a.l2 = newL2Reconciler(a)
			loops = append(loops, a.l2.run)
		}
	}

	if a.cfg.BGP.Enabled() {
		u4 := ""
		for _, u := range a.cfg.Underlay {
			if ip := netip.MustParseAddr(u); ip.Is4() {
				u4 = u
				break
			}
		}
		bcfg, err := a.cfg.BGP.Speaker(u4)
		if err != nil {
			return err
		}
		sp, err := bgp.New(bcfg, a.log.With("subsys", "bgp"))
		if err != nil {
			return fmt.Errorf("bgp: %w", err)
		}
		if err := sp.Start(ctx); err != nil {
			return fmt.Errorf("start bgp: %w", err)
		}
		defer sp.Close()
		a.bgp = newBGPReconciler(a, sp)
		loops = append(loops, a.bgp.run)
	}

	srv, err := newAPIServer(a, a.cfg.Socket)
	if err != nil {
		return err
	}
	a.api = srv
	defer srv.Close()

	var wg sync.WaitGroup
	loops = append(loops, a.joinLoop, a.peerLoop, a.cidrLoop, a.leaderLoop, a.lbLoop, a.serveMetrics)
	for _, loop := range loops {
		wg.Add(1)
		go func() { defer wg.Done(); loop(ctx) }()
	}
	a.log.Info("agent started", "node", a.cfg.NodeName, "cluster", a.cfg.ClusterName,
		"cluster_id", a.cfg.ClusterID, "server", a.cfg.Server, "underlay", a.cfg.Underlay,
		"socket", a.cfg.Socket, "version", Version)
	<-ctx.Done()
	a.log.Info("agent stopping")
	srv.Close()
	wg.Wait()
	return nil
}

func (a *Agent) ipamConfig() ipam.Config {
	c := ipam.DefaultConfig()
	c.Pools = nil
	for _, p := range a.cfg.PodPools {
		c.Pools = append(c.Pools, netip.MustParsePrefix(p))
	}
	c.NodeMaskV4 = a.cfg.NodeMaskV4
	c.NodeMaskV6 = a.cfg.NodeMaskV6
	c.ReleaseGrace = a.cfg.CIDRGrace
	return c
}

func (a *Agent) identityConfig() identity.Config {
	c := identity.DefaultConfig()
	c.ClusterID = a.cfg.ClusterID
	c.GCGrace = a.cfg.IdentityGC
	return c
}

// joinLoop joins the configured addresses, retrying until at least one
// answers: servers may start in any order.
func (a *Agent) joinLoop(ctx context.Context) {
	if len(a.cfg.Join) == 0 {
		return
	}
	var addrs []string
	self := a.underlay()
	for _, j := range a.cfg.Join {
		if j != self && j != hostPort(self, a.cfg.GossipPort) {
			addrs = append(addrs, j)
		}
	}
	if len(addrs) == 0 {
		return
	}
	backoff := 200 * time.Millisecond
	for {
		n, err := a.pool.Join(addrs)
		if n > 0 {
			a.log.Info("joined cluster", "contacted", n)
			return
		}
		a.log.Warn("join failed, retrying", "addrs", addrs, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// peerLoop hands the store the whole set of peers gossip knows every time
// membership changes, and once a second to be safe.
func (a *Agent) peerLoop(ctx context.Context) {
	events, cancel := a.pool.Subscribe(256)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		a.store.SetPeers(a.peers())
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			a.log.Info("member "+ev.Type.String(), "member", ev.Member.Meta.Name, "addr", ev.Member.Addr.String(), "state", ev.Member.State.String())
		case <-tick.C:
		}
	}
}

func (a *Agent) peers() []store.Peer {
	var out []store.Peer
	for _, m := range a.pool.Members() {
		out = append(out, store.Peer{
			ID:       m.Meta.Name,
			Server:   m.Meta.HasRole(RoleServer),
			RaftAddr: m.Meta.RaftAddr,
			APIAddr:  m.Meta.APIAddr,
			Alive:    m.State == gossip.StateAlive || m.State == gossip.StateSuspect,
			Left:     m.State == gossip.StateLeft,
		})
	}
	return out
}

// rejoinLoop joins, through gossip, every node the store knows that gossip
// does not. A restarted server only knows its join addresses (often just
// the servers); without this it would learn of the other nodes only at the
// next push/pull, and meanwhile think them absent.
func (a *Agent) rejoinLoop(ctx context.Context) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.nodes.Changed():
		case <-tick.C:
		}
		recs, ok := a.nodes.Snapshot()
		if !ok {
			continue
		}
		known := map[string]bool{}
		for _, m := range a.pool.Members() {
			known[m.Meta.Name] = true
		}
		var addrs []string
		for _, raw := range recs {
			var rec nodeRecord
			if json.Unmarshal(raw, &rec) != nil || rec.Name == a.cfg.NodeName || known[rec.Name] || len(rec.Underlay) == 0 {
				continue
			}
			addrs = append(addrs, rec.Underlay[0])
		}
		if len(addrs) == 0 {
			continue
		}
		if n, err := a.pool.Join(addrs); err == nil {
			a.log.Info("joined nodes known to the store but not to gossip", "addrs", addrs, "contacted", n)
		} else {
			a.log.Debug("rejoin from the store", "addrs", addrs, "err", err)
		}
	}
}

// nodeRecord is what the agent keeps under nodes/<name>.
type nodeRecord struct {
	Name      string   `json:"name"`
	Underlay  []string `json:"underlay"`
	PodCIDRs  []string `json:"podCIDRs"`
	Server    bool     `json:"server"`
	Version   string   `json:"version"`
	UpdatedAt string   `json:"updatedAt"`
	// Labels are the node's labels (config nodeLabels) plus its hostname.
	Labels map[string]string `json:"labels,omitempty"`
}

// cidrLoop gets the node its pod CIDRs from the store (allocating them the
// first time, reading them back after a restart), then announces them in
// gossip and in nodes/<name>.
func (a *Agent) cidrLoop(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cidrs, err := a.ipam.NodeCIDRs(cctx)
		if err == nil {
			err = a.writeNodeRecord(cctx, cidrs)
		}
		cancel()
		if err == nil {
			a.cidrMu.Lock()
			a.cidrs = cidrs
			a.cidrMu.Unlock()
			a.updateMeta(func(m *gossip.Meta) { m.PodCIDRs = cidrs; m.Health = "ok" })
			a.log.Info("node CIDRs ready", "cidrs", cidrs)
			return
		}
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("node CIDR not allocated yet, retrying", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 3*time.Second)
	}
}

func (a *Agent) writeNodeRecord(ctx context.Context, cidrs []netip.Prefix) error {
	rec := nodeRecord{Name: a.cfg.NodeName, Underlay: a.cfg.Underlay, Server: a.cfg.Server, Version: Version,
		UpdatedAt: time.Now().UTC().Format(time.RFC3339), Labels: a.nodeLabels()}
	for _, c := range cidrs {
		rec.PodCIDRs = append(rec.PodCIDRs, c.String())
	}
	b, _ := json.Marshal(rec)
	_, err := store.Put(ctx, a.store, "nodes/"+a.cfg.NodeName, b)
	return err
}

func (a *Agent) updateMeta(change func(*gossip.Meta)) {
	a.metaMu.Lock()
	defer a.metaMu.Unlock()
	change(&a.meta)
	if err := a.pool.UpdateMeta(a.meta); err != nil {
		a.log.Warn("update gossip metadata", "err", err)
	}
}

// podCIDRs returns the node's CIDRs, or an error while they are not known.
func (a *Agent) podCIDRs() ([]netip.Prefix, error) {
	a.cidrMu.RLock()
	defer a.cidrMu.RUnlock()
	if len(a.cidrs) == 0 {
		return nil, errors.New("the node has no pod CIDR yet: the store is not reachable or has no leader; see `fabric status`")
	}
	return a.cidrs, nil
}

// leaderLoop runs the cluster-wide collectors on whichever node leads the
// store: node CIDR release after the grace, and identity garbage collection.
// Their timers are in memory, so a leader change restarts them: releases
// come later, never sooner.
func (a *Agent) leaderLoop(ctx context.Context) {
	var (
		releaser  *ipam.Releaser
		collector *identity.Collector
	)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if a.store.Status().Role != "leader" {
			releaser, collector = nil, nil
			continue
		}
		if releaser == nil {
			releaser = ipam.NewReleaser(a.ipamConfig(), a.store, a.log.With("subsys", "ipam"))
			collector = identity.NewCollector(a.identityConfig(), a.store, a.log.With("subsys", "identity"))
			a.log.Info("leading the store: running CIDR release and identity collection")
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		alive := a.presumedAlive()
		released, err := releaser.Reconcile(cctx, alive, time.Now())
		if err != nil {
			a.log.Warn("CIDR release", "err", err)
		}
		for _, node := range released {
			a.forgetNode(cctx, node)
		}
		if _, err := collector.Reconcile(cctx, time.Now()); err != nil {
			a.log.Warn("identity collection", "err", err)
		}
		cancel()
	}
}

// gossipSettle is how long after start a node that gossip has not heard of
// at all is presumed alive rather than absent: a restarted agent learns
// the cluster's members over its first seconds, and must not release their
// CIDRs meanwhile. Nodes gossip knows to be dead count as absent at once.
const gossipSettle = 30 * time.Second

// presumedAlive returns the nodes the CIDR release must treat as present.
func (a *Agent) presumedAlive() map[string]bool {
	alive := map[string]bool{}
	known := map[string]bool{}
	for _, m := range a.pool.Members() {
		known[m.Meta.Name] = true
		if m.State == gossip.StateAlive || m.State == gossip.StateSuspect {
			alive[m.Meta.Name] = true
		}
	}
	if time.Since(a.started) < gossipSettle {
		recs, _ := a.nodes.Snapshot()
		for _, raw := range recs {
			var rec nodeRecord
			if json.Unmarshal(raw, &rec) == nil && !known[rec.Name] {
				alive[rec.Name] = true
			}
		}
	}
	return alive
}

// forgetNode removes what a released node left in the store besides its
// CIDRs: its endpoints, its identity references and its node record.
func (a *Agent) forgetNode(ctx context.Context, node string) {
	if err := a.ids.ReleaseNode(ctx, node); err != nil {
		a.log.Warn("release identities of gone node", "node", node, "err", err)
	}
	_, err := a.store.Txn(ctx, store.Txn{Ops: []store.Op{
		{Type: store.OpDeletePrefix, Key: endpointPrefix(node)},
		{Type: store.OpDelete, Key: "nodes/" + node},
	}})
	if err != nil {
		a.log.Warn("forget gone node", "node", node, "err", err)
		return
	}
	a.log.Info("node gone past the grace: released its CIDRs, endpoints and identities", "node", node)
}

// nodeLabels are the node's configured labels and its hostname label.
func (a *Agent) nodeLabels() map[string]string {
	m := map[string]string{"kubernetes.io/hostname": a.cfg.NodeName}
	for _, l := range a.cfg.NodeLabels {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}
