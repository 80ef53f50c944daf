// Package gossip owns cluster membership: it runs one hashicorp/memberlist
// pool per cluster, carries each node's metadata (Meta), reports members
// joining, updating, leaving and failing, refuses peers of another cluster,
// and manages the gossip encryption keys.
//
// It knows nothing of the store or the datapath: consumers read Members and
// Subscribe to events, and decide for themselves what a member means.
package gossip

import (
	"cmp"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a member's liveness as this node sees it.
type State int

const (
	StateAlive   State = iota // answering probes
	StateSuspect              // missed probes; declared dead unless it refutes in time
	StateDead                 // declared dead by failure detection
	StateLeft                 // left gracefully
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Member is one node of the cluster as this node sees it.
type Member struct {
	Meta  Meta
	Addr  netip.AddrPort // gossip address
	State State
	Since time.Time // when this node saw it enter State
}

// How long, and how many, dead or left members are remembered after
// memberlist forgets them, so that status can show what went away.
const (
	goneTTL = 24 * time.Hour
	goneMax = 1024
)

// Pool is this node's membership in its cluster's gossip pool. All methods
// are safe for concurrent use.
type Pool struct {
	cfg     Config
	log     *slog.Logger
	ml      *memberlist.Memberlist
	keyring *memberlist.Keyring // nil when encryption is off
	keyMu   sync.Mutex          // serializes keyring changes
	started time.Time
	limiter *rateLimiter

	// metaMu serializes UpdateMeta so that the meta gossiped last is the
	// meta set last.
	metaMu    sync.Mutex
	meta      atomic.Pointer[Meta]
	metaBytes atomic.Pointer[[]byte]
	leaving   bool // guarded by metaMu; set by Leave, carried in meta

	// mu guards members, subs and closed. It is taken inside memberlist's
	// callbacks (which hold memberlist's node lock), so nothing may call
	// into memberlist while holding it.
	mu        sync.Mutex
	members   map[string]*Member
	subs      map[*subscriber]struct{}
	nextSubID uint64
	closed    bool
	dropped   atomic.Uint64

	shutdownOnce sync.Once
	shutdownErr  error
	// done stops the reconnect loop at Shutdown.
	done chan struct{}
}

// New validates cfg, starts listening and returns a pool that knows only
// itself; call Join to meet the cluster. meta's Name, Cluster and ClusterID
// are filled from cfg when empty and must match it otherwise.
func New(cfg Config, meta Meta) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	p := &Pool{
		cfg:     cfg,
		log:     logger,
		started: time.Now(),
		limiter: newRateLimiter(10 * time.Second),
		members: make(map[string]*Member),
		subs:    make(map[*subscriber]struct{}),
		done:    make(chan struct{}),
	}
	if err := p.setMeta(meta); err != nil {
		return nil, fmt.Errorf("gossip: new: %w", err)
	}

	mlc := memberlist.DefaultLANConfig()
	mlc.Name = cfg.NodeName
	mlc.BindAddr = cfg.BindAddr
	mlc.BindPort = cfg.BindPort
	mlc.AdvertiseAddr = cfg.AdvertiseAddr
	mlc.AdvertisePort = cmp.Or(cfg.AdvertisePort, cfg.BindPort)
	mlc.ProbeInterval = cfg.ProbeInterval
	mlc.ProbeTimeout = cfg.ProbeTimeout
	mlc.GossipInterval = cfg.GossipInterval
	mlc.SuspicionMult = cfg.SuspicionMult
	// Joins and push/pull run over TCP on a LAN; 10s only delays noticing an
	// unreachable seed.
	mlc.TCPTimeout = 2 * time.Second
	// A restarted node keeps its name but may come back on a new address;
	// let it reclaim the name quickly instead of being refused as a conflict.
	mlc.DeadNodeReclaimTime = time.Second
	if len(cfg.Keys) > 0 {
		keys := make([][]byte, len(cfg.Keys))
		for i, k := range cfg.Keys {
			keys[i] = clone(k)
		}
		kr, err := memberlist.NewKeyring(keys, keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip: new: keyring: %w", err)
		}
		mlc.Keyring = kr
		p.keyring = kr
		mlc.GossipVerifyIncoming = true
		mlc.GossipVerifyOutgoing = true
	} else {
		mlc.GossipVerifyIncoming = false
		mlc.GossipVerifyOutgoing = false
		p.log.Warn("gossip encryption is off: anyone who can reach the gossip port can join; set Keys to enable it", "node", cfg.NodeName)
	}
	d := &delegate{p: p}
	mlc.Delegate = d
	mlc.Events = d
	mlc.Alive = d
	mlc.Merge = d
	mlc.Conflict = d
	mlc.LogOutput = nil
	mlc.Logger = log.New(logWriter{log: p.log.With("component", "memberlist")}, "", 0)

	ml, err := memberlist.Create(mlc)
	if err != nil {
		return nil, fmt.Errorf("gossip: new: listen on %s: %w", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	p.ml = ml
	go p.reconnectLoop()
	p.log.Info("gossip pool started", "node", cfg.NodeName, "addr", p.Local().Addr,
		"cluster", cfg.ClusterName, "cluster_id", cfg.ClusterID, "encrypted", len(cfg.Keys) > 0)
	return p, nil
}

// Join contacts the given peers ("ip", "ip:port", "host" or "host:port"; the
// port defaults to cfg.BindPort, or DefaultPort when that is 0) and merges
// state with them. It returns how many were reached; the error is non-nil only
// when none was. Joining a pool already joined is harmless.
func (p *Pool) Join(addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, fmt.Errorf("gossip: join: no addresses given: pass at least one peer")
	}
	port := p.cfg.BindPort
	if port == 0 {
		port = DefaultPort
	}
	targets := make([]string, 0, len(addrs))
	for _, a := range addrs {
		t, err := withPort(a, port)
		if err != nil {
			return 0, fmt.Errorf("gossip: join: %w", err)
		}
		targets = append(targets, t)
	}
	n, err := p.ml.Join(targets)
	if err != nil {
		return n, fmt.Errorf("gossip: join %v: %w", targets, err)
	}
	p.log.Info("gossip joined", "node", p.cfg.NodeName, "contacted", n, "peers", targets)
	return n, nil
}

// withPort returns addr as host:port, adding port when addr has none.
func withPort(addr string, port int) (string, error) {
	if addr == "" {
		return "", fmt.Errorf("empty address: use ip or ip:port")
	}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap.String(), nil
	}
	if ip, err := netip.ParseAddr(addr); err == nil {
		return netip.AddrPortFrom(ip, uint16(port)).String(), nil
	}
	if host, p, err := net.SplitHostPort(addr); err == nil {
		if _, err := strconv.ParseUint(p, 10, 16); err != nil || host == "" {
			return "", fmt.Errorf("address %q: use ip, ip:port, host or host:port", addr)
		}
		return addr, nil
	}
	return net.JoinHostPort(addr, strconv.Itoa(port)), nil
}

// Members returns every member this node knows, sorted by name: alive ones,
// and dead or left ones remembered for up to 24h (the newest 1024). A dead
// member that comes back is reported alive again. Since is when this node saw
// the member enter its State.
//
// The list is built from memberlist's events rather than from
// memberlist.Members: the nodes that returns are pointers into memberlist's
// state, read racily once its lock is released, and their State field is
// never set (v0.5.4), so suspicion is not visible through its API; a suspect
// member is reported alive until it is declared dead.
func (p *Pool) Members() []Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pruneLocked(time.Now())
	out := make([]Member, 0, len(p.members))
	for _, m := range p.members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.Meta.Name, b.Meta.Name) })
	return out
}

// pruneLocked forgets dead and left members older than goneTTL, and the
// oldest ones beyond goneMax, so a churning cluster does not grow the map
// without bound.
func (p *Pool) pruneLocked(now time.Time) {
	var gone []*Member
	for name, m := range p.members {
		if m.State != StateDead && m.State != StateLeft {
			continue
		}
		if now.Sub(m.Since) > goneTTL {
			delete(p.members, name)
			continue
		}
		gone = append(gone, m)
	}
	if len(gone) <= goneMax {
		return
	}
	slices.SortFunc(gone, func(a, b *Member) int { return a.Since.Compare(b.Since) })
	for _, m := range gone[:len(gone)-goneMax] {
		delete(p.members, m.Meta.Name)
	}
}

// Local returns this node as the cluster sees it.
func (p *Pool) Local() Member {
	// memberlist reports the local node's join from Create, so it is
	// recorded by the time New returns.
	var addr netip.AddrPort
	p.mu.Lock()
	if self, ok := p.members[p.cfg.NodeName]; ok {
		addr = self.Addr
	}
	p.mu.Unlock()
	return Member{Meta: *p.meta.Load(), Addr: addr, State: StateAlive, Since: p.started}
}

// UpdateMeta replaces this node's metadata and gossips it. Name, Cluster and
// ClusterID are filled from the config when empty and must match it
// otherwise. It returns once the update has been gossiped to the cluster, or
// with an error after a few seconds if it could not be confirmed; the new
// meta is in effect locally either way and push/pull sync spreads it later.
func (p *Pool) UpdateMeta(m Meta) error {
	p.metaMu.Lock()
	defer p.metaMu.Unlock()
	if err := p.setMeta(m); err != nil {
		return fmt.Errorf("gossip: update meta: %w", err)
	}
	timeout := max(2*time.Second, 20*p.cfg.GossipInterval)
	if err := p.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("gossip: update meta: not confirmed within %s (set locally, push/pull will spread it): %w", timeout, err)
	}
	return nil
}

// setMeta checks and encodes m and makes it the meta memberlist advertises.
func (p *Pool) setMeta(m Meta) error {
	m.Name = cmp.Or(m.Name, p.cfg.NodeName)
	m.Cluster = cmp.Or(m.Cluster, p.cfg.ClusterName)
	m.ClusterID = cmp.Or(m.ClusterID, p.cfg.ClusterID)
	if m.Name != p.cfg.NodeName {
		return fmt.Errorf("meta Name %q differs from Config.NodeName %q: leave it empty or make them equal", m.Name, p.cfg.NodeName)
	}
	if m.Cluster != p.cfg.ClusterName || m.ClusterID != p.cfg.ClusterID {
		return fmt.Errorf("meta cluster %q/%d differs from Config %q/%d: leave it empty or make them equal",
			m.Cluster, m.ClusterID, p.cfg.ClusterName, p.cfg.ClusterID)
	}
	b, err := encodeMeta(m, p.leaving)
	if err != nil {
		return err
	}
	p.meta.Store(&m)
	p.metaBytes.Store(&b)
	return nil
}

// Leave announces a graceful departure and waits up to timeout for it to be
// gossiped, so peers report EventLeave rather than EventFail. Call Shutdown
// afterwards.
func (p *Pool) Leave(timeout time.Duration) error {
	p.log.Info("gossip leaving", "node", p.cfg.NodeName)
	start := time.Now()
	// Mark the meta as leaving first (see wireMeta.L) and give that half the
	// time to spread, so peers can tell this leave from a failure.
	p.metaMu.Lock()
	p.leaving = true
	err := p.setMeta(*p.meta.Load())
	if err == nil {
		err = p.ml.UpdateNode(timeout / 2)
	}
	p.metaMu.Unlock()
	if err != nil {
		p.log.Warn("gossip leave intent not confirmed, peers may report a failure", "node", p.cfg.NodeName, "err", err)
	}
	if err := p.ml.Leave(max(timeout-time.Since(start), timeout/2)); err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossiping and closes every subscriber's channel. Without a
// Leave first, peers declare this node dead. Calling it again is a no-op.
func (p *Pool) Shutdown() error {
	p.shutdownOnce.Do(func() {
		close(p.done)
		if err := p.ml.Shutdown(); err != nil {
			p.shutdownErr = fmt.Errorf("gossip: shutdown: %w", err)
		}
		p.mu.Lock()
		p.closed = true
		for s := range p.subs {
			close(s.ch)
		}
		clear(p.subs)
		p.mu.Unlock()
		p.log.Info("gossip pool stopped", "node", p.cfg.NodeName)
	})
	return p.shutdownErr
}

// Stats is a snapshot of the pool's health.
type Stats struct {
	Alive, Suspect, Dead, Left int
	// HealthScore is memberlist's Lifeguard awareness: 0 is healthy, higher
	// means this node has been slow to answer and probes less aggressively.
	HealthScore int
	// DroppedEvents counts events not delivered because a subscriber's
	// buffer was full.
	DroppedEvents uint64
	Subscribers   int
	Encrypted     bool
}

// Stats returns counts of members by state and the pool's health.
func (p *Pool) Stats() Stats {
	var s Stats
	for _, m := range p.Members() {
		switch m.State {
		case StateAlive:
			s.Alive++
		case StateSuspect:
			s.Suspect++
		case StateDead:
			s.Dead++
		case StateLeft:
			s.Left++
		}
	}
	s.HealthScore = p.ml.GetHealthScore()
	s.DroppedEvents = p.dropped.Load()
	p.mu.Lock()
	s.Subscribers = len(p.subs)
	p.mu.Unlock()
	s.Encrypted = p.keyring != nil
	return s
}

// memberFromNode converts memberlist's view of a node. Meta that fails to
// decode (only possible for nodes admitted before a refusal rule existed)
// leaves just the name.
func (p *Pool) memberFromNode(n *memberlist.Node) Member {
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		meta = Meta{Name: n.Name}
	}
	return Member{Meta: meta, Addr: nodeAddr(n), State: stateOf(n.State)}
}

func nodeAddr(n *memberlist.Node) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(n.Addr)
	return netip.AddrPortFrom(ip.Unmap(), n.Port)
}

func stateOf(s memberlist.NodeStateType) State {
	switch s {
	case memberlist.StateSuspect:
		return StateSuspect
	case memberlist.StateDead:
		return StateDead
	case memberlist.StateLeft:
		return StateLeft
	}
	return StateAlive
}

// How often, and for how long after its death, a failed member is tried
// again. Memberlist never probes a member it declared dead, so without this
// a healed partition would leave both sides thinking the other is dead
// forever (serf's reconnect does the same job).
const (
	reconnectInterval = time.Second
	reconnectFor      = 24 * time.Hour
)

// reconnectLoop tries, once a reconnectInterval, to join every member that
// failed (not one that left) in the last reconnectFor. A successful join
// merges state both ways: the member refutes its death and is alive again
// everywhere.
func (p *Pool) reconnectLoop() {
	tick := time.NewTicker(reconnectInterval)
	defer tick.Stop()
	// A member dead for long is tried less often (a tenth of its time dead,
	// up to 30s), so a node that is gone for good costs little.
	lastTry := map[string]time.Time{}
	for {
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
		now := time.Now()
		var targets []string
		p.mu.Lock()
		for _, m := range p.members {
			dead := now.Sub(m.Since)
			if m.State != StateDead || dead >= reconnectFor || !m.Addr.IsValid() {
				continue
			}
			t := m.Addr.String()
			if now.Sub(lastTry[t]) >= min(max(dead/10, reconnectInterval), 30*time.Second) {
				targets = append(targets, t)
				lastTry[t] = now
			}
		}
		p.mu.Unlock()
		for t, at := range lastTry {
			if now.Sub(at) > time.Hour {
				delete(lastTry, t)
			}
		}
		for _, t := range targets {
			select {
			case <-p.done:
				return
			default:
			}
			if n, err := p.ml.Join([]string{t}); err == nil && n > 0 {
				p.log.Info("reconnected to a failed member", "node", p.cfg.NodeName, "addr", t)
			}
		}
	}
}
