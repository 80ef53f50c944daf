package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Peer is one node as gossip sees it. SetPeers takes the whole set.
type Peer struct {
	ID       string
	Server   bool
	RaftAddr string
	APIAddr  string
	Alive    bool
	// Left is set when the node left on purpose; its server is removed from
	// the Raft configuration at once.
	Left bool
}

// ServerStatus is one member of the Raft configuration.
type ServerStatus struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	Voter bool   `json:"voter"`
	Alive bool   `json:"alive"`
}

// Status is a point-in-time view of this node's store.
type Status struct {
	// Role is leader, follower, candidate, client, bootstrapping or shutdown.
	Role         string         `json:"role"`
	Leader       string         `json:"leader"`
	Term         uint64         `json:"term"`
	CommitIndex  uint64         `json:"commit_index"`
	AppliedIndex uint64         `json:"applied_index"`
	Revision     int64          `json:"revision"`
	Servers      []ServerStatus `json:"servers"`
	// LastContact is how long ago a follower last heard from the leader.
	LastContact time.Duration `json:"last_contact"`
}

const (
	// autopilotInterval is how often the leader reconciles the Raft
	// configuration with gossip when nothing kicks it.
	autopilotInterval = time.Second
	// retryPause is the wait between attempts while there is no leader.
	retryPause = 50 * time.Millisecond
)

// Store is one node's view of the replicated store. On a server it runs a
// Raft voter and serves the RPC; on a client it reaches the servers over the
// RPC. Either way it implements KV.
type Store struct {
	cfg Config
	log *slog.Logger
	fsm *FSM
	id  *tlsIdentity
	rpc *rpcClient

	// Server mode only.
	raft        *raft.Raft
	logStore    *raftboltdb.BoltStore
	transport   *raft.NetworkTransport
	httpSrv     *http.Server
	hadState    bool
	raftAddr    string
	apiAddr     string
	barrierTerm atomic.Uint64

	mu           sync.Mutex
	peers        map[string]Peer
	bootstrapped bool
	leaderHint   string // client mode: the leader the last answer named
	started      bool
	closed       bool

	kick   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ KV = (*Store)(nil)

// New checks cfg and prepares the store; Start opens and starts it.
func New(cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var ips []net.IP
	for _, hp := range []string{cfg.APIAdvertise, cfg.APIBind, cfg.RaftAdvertise, cfg.RaftBind} {
		if host, _, err := net.SplitHostPort(hp); err == nil {
			if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
				ips = append(ips, ip)
			}
		}
	}
	id, err := newTLSIdentity(cfg.Secret, cfg.ClusterName, cfg.NodeID, ips)
	if err != nil {
		return nil, fmt.Errorf("store tls identity: %w", err)
	}
	s := &Store{
		cfg:   cfg,
		log:   cfg.Logger.With("node", cfg.NodeID),
		fsm:   NewFSM(cfg.HistorySize),
		id:    id,
		rpc:   newRPCClient(id),
		peers: map[string]Peer{},
		kick:  make(chan struct{}, 1),
	}
	return s, nil
}

// Start opens the Raft log and starts Raft and the RPC server (servers), or
// just marks the client ready. Background loops stop when ctx ends or on
// Close.
func (s *Store) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started || s.closed {
		s.mu.Unlock()
		return errors.New("start store: already started or closed")
	}
	s.started = true
	s.mu.Unlock()
	ctx, s.cancel = context.WithCancel(ctx)
	if !s.cfg.Server {
		s.log.Info("store client started")
		return nil
	}
	if err := s.startServer(ctx); err != nil {
		s.Close()
		return err
	}
	return nil
}

func (s *Store) startServer(ctx context.Context) error {
	dir := filepath.Join(s.cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create raft directory: %w", err)
	}
	hlog := newRaftLogger(s.log)
	var err error
	s.logStore, err = raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		return fmt.Errorf("open raft log %s: %w", filepath.Join(dir, "raft.db"), err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hlog)
	if err != nil {
		return fmt.Errorf("open raft snapshots in %s: %w", dir, err)
	}
	stream, err := newTLSStreamLayer(s.cfg.RaftBind, s.cfg.RaftAdvertise, s.id)
	if err != nil {
		return err
	}
	s.raftAddr = stream.Addr().String()
	s.transport = raft.NewNetworkTransportWithLogger(stream, 3, 10*time.Second, hlog)

	s.hadState, err = raft.HasExistingState(s.logStore, s.logStore, snaps)
	if err != nil {
		return fmt.Errorf("read raft state: %w", err)
	}

	// The API listener comes up before Raft so that followers can forward
	// to this node as soon as it leads.
	ln, err := net.Listen("tcp", s.cfg.APIBind)
	if err != nil {
		return fmt.Errorf("listen for store rpc on %s: %w", s.cfg.APIBind, err)
	}
	s.apiAddr, err = advertised(s.cfg.APIAdvertise, ln.Addr())
	if err != nil {
		ln.Close()
		return fmt.Errorf("store rpc address: %w", err)
	}
	s.httpSrv = &http.Server{
		Handler:           s.rpcHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	tlsLn := tls.NewListener(ln, s.id.serverConfig())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(tlsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("store rpc server stopped", "err", err)
		}
	}()

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.cfg.NodeID)
	rc.HeartbeatTimeout = s.cfg.HeartbeatTimeout
	rc.ElectionTimeout = s.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = s.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = s.cfg.CommitTimeout
	rc.SnapshotThreshold = s.cfg.SnapshotThreshold
	rc.SnapshotInterval = s.cfg.SnapshotInterval
	rc.Logger = hlog
	leaderCh := make(chan bool, 8)
	rc.NotifyCh = leaderCh
	s.raft, err = raft.NewRaft(rc, &raftFSM{fsm: s.fsm}, s.logStore, s.logStore, snaps, s.transport)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	s.log.Info("store server started", "raft_addr", s.raftAddr, "api_addr", s.apiAddr,
		"existing_state", s.hadState, "bootstrap_expect", s.cfg.BootstrapExpect)

	s.wg.Add(1)
	go s.run(ctx, leaderCh)
	s.poke()
	return nil
}

// run logs leadership changes and drives bootstrap and autopilot.
func (s *Store) run(ctx context.Context, leaderCh <-chan bool) {
	defer s.wg.Done()
	t := time.NewTicker(autopilotInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-leaderCh:
			if leader {
				s.log.Info("became store leader", "term", s.raft.CurrentTerm())
			} else {
				s.log.Info("lost store leadership", "term", s.raft.CurrentTerm())
			}
		case <-s.kick:
		case <-t.C:
		}
		s.maybeBootstrap()
		s.autopilot(ctx)
	}
}

func (s *Store) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// RaftAddr is the advertised Raft address (servers, after Start).
func (s *Store) RaftAddr() string { return s.raftAddr }

// APIAddr is the advertised RPC address (servers, after Start).
func (s *Store) APIAddr() string { return s.apiAddr }

// FSM exposes the local state machine (for watches and diagnostics; reads
// from it are not linearizable on followers).
func (s *Store) FSM() *FSM { return s.fsm }

// SetPeers hands the store the complete current membership from gossip. It
// may be called any number of times with the same set; each call replaces
// the previous one and reconciles bootstrap, the Raft configuration (on the
// leader) and the servers clients talk to.
func (s *Store) SetPeers(peers []Peer) {
	s.mu.Lock()
	s.peers = make(map[string]Peer, len(peers))
	for _, p := range peers {
		s.peers[p.ID] = p
	}
	s.mu.Unlock()
	s.poke()
}

// peerSet returns a copy of the peers with this node filled in as an alive
// server (gossip may not list it, or list it before its addresses).
func (s *Store) peerSet() map[string]Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Peer, len(s.peers)+1)
	for id, p := range s.peers {
		out[id] = p
	}
	if s.cfg.Server {
		out[s.cfg.NodeID] = Peer{ID: s.cfg.NodeID, Server: true, RaftAddr: s.raftAddr, APIAddr: s.apiAddr, Alive: true}
	}
	return out
}

func (p Peer) usableServer() bool {
	return p.Server && p.Alive && !p.Left && p.RaftAddr != ""
}

// maybeBootstrap bootstraps a brand-new cluster once BootstrapExpect servers
// are alive. Every server picks the same first BootstrapExpect by ID, so they
// all propose the identical configuration and the bootstrap is safe to run
// on each of them.
func (s *Store) maybeBootstrap() {
	s.mu.Lock()
	done := s.bootstrapped
	s.mu.Unlock()
	if done || s.hadState || s.cfg.BootstrapExpect == 0 {
		return
	}
	var servers []Peer
	for _, p := range s.peerSet() {
		if p.usableServer() {
			servers = append(servers, p)
		}
	}
	if len(servers) < s.cfg.BootstrapExpect {
		return
	}
	sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
	servers = servers[:s.cfg.BootstrapExpect]
	var conf raft.Configuration
	var ids []string
	self := false
	for _, p := range servers {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
		ids = append(ids, p.ID)
		self = self || p.ID == s.cfg.NodeID
	}
	s.mu.Lock()
	s.bootstrapped = true
	s.mu.Unlock()
	if !self {
		// The leader's autopilot adds this server once the cluster is up.
		s.log.Info("not among the bootstrap servers; waiting to be added", "servers", ids)
		return
	}
	err := s.raft.BootstrapCluster(conf).Error()
	switch {
	case errors.Is(err, raft.ErrCantBootstrap):
		s.log.Info("raft state already present; not bootstrapping")
	case err != nil:
		s.log.Error("bootstrap raft cluster", "err", err, "servers", ids)
		s.mu.Lock()
		s.bootstrapped = false // try again on the next reconcile
		s.mu.Unlock()
	default:
		s.log.Info("bootstrapped raft cluster", "servers", ids)
	}
}

// autopilot makes the leader's Raft configuration follow gossip: alive
// servers are added as voters, servers that left are removed, and failed
// servers are removed only when the cluster keeps a quorum of alive voters
// without them and a replacement has joined.
func (s *Store) autopilot(ctx context.Context) {
	if s.raft.State() != raft.Leader {
		return
	}
	fut := s.raft.GetConfiguration()
	if err := fut.Error(); err != nil {
		s.log.Warn("autopilot: read raft configuration", "err", err)
		return
	}
	peers := s.peerSet()
	if len(peers) <= 1 {
		return // no gossip yet: nothing to reconcile against
	}
	inConf := map[string]raft.Server{}
	for _, srv := range fut.Configuration().Servers {
		inConf[string(srv.ID)] = srv
	}

	ids := make([]string, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		p := peers[id]
		if !p.usableServer() {
			continue
		}
		if srv, ok := inConf[id]; ok && string(srv.Address) == p.RaftAddr && srv.Suffrage == raft.Voter {
			continue
		}
		if err := s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(p.RaftAddr), 0, s.cfg.ApplyTimeout).Error(); err != nil {
			s.log.Warn("autopilot: add voter", "peer", id, "raft_addr", p.RaftAddr, "err", err)
			continue
		}
		s.log.Info("autopilot: added voter", "peer", id, "raft_addr", p.RaftAddr)
		inConf[id] = raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(p.RaftAddr), Suffrage: raft.Voter}
	}

	alive := func(id string) bool { p, ok := peers[id]; return ok && p.Alive && !p.Left }
	voters, aliveVoters := 0, 0
	for id, srv := range inConf {
		if srv.Suffrage == raft.Voter {
			voters++
			if alive(id) {
				aliveVoters++
			}
		}
	}

	confIDs := make([]string, 0, len(inConf))
	for id := range inConf {
		confIDs = append(confIDs, id)
	}
	sort.Strings(confIDs)
	for _, id := range confIDs {
		if id == s.cfg.NodeID || ctx.Err() != nil {
			continue
		}
		p, known := peers[id]
		isVoter := inConf[id].Suffrage == raft.Voter
		reason := ""
		switch {
		case known && p.Left:
			reason = "left"
		case alive(id) || !s.cfg.DeadServerCleanup:
			continue
		default:
			// Removing a dead voter leaves voters-1 members of which
			// aliveVoters are up; that must still be a majority.
			if isVoter && aliveVoters < (voters-1)/2+1 {
				continue
			}
			// A dead server keeps its seat until a replacement has
			// joined: removing it earlier buys no fault tolerance and
			// makes a server that was only cut off rejoin as a new one.
			if voters <= s.cfg.BootstrapExpect {
				continue
			}
			reason = "failed"
		}
		if err := s.raft.RemoveServer(raft.ServerID(id), 0, s.cfg.ApplyTimeout).Error(); err != nil {
			s.log.Warn("autopilot: remove server", "peer", id, "reason", reason, "err", err)
			continue
		}
		if isVoter {
			voters--
			if alive(id) {
				aliveVoters--
			}
		}
		s.log.Info("autopilot: removed server", "peer", id, "reason", reason, "voters", voters)
	}
}

// Close stops Raft and the RPC server and ends local watches with
// ErrClosed. The Raft log stays on disk for the next start.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
	var errs []error
	if s.raft != nil {
		if err := s.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("shutdown raft: %w", err))
		}
	}
	s.fsm.Close()
	if s.httpSrv != nil {
		// Watch handlers end on fsm.Close, so Shutdown does not wait long.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			s.httpSrv.Close()
		}
		cancel()
	}
	if s.transport != nil {
		s.transport.Close()
	}
	if s.logStore != nil {
		if err := s.logStore.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft log: %w", err))
		}
	}
	s.rpc.close()
	s.wg.Wait()
	s.log.Info("store closed")
	return errors.Join(errs...)
}

// Snapshot asks Raft to take a snapshot now (servers only); tests and
// operators use it before maintenance.
func (s *Store) Snapshot() error {
	if s.raft == nil {
		return errors.New("snapshot: not a store server")
	}
	if err := s.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// isLeader reports whether this server currently leads.
func (s *Store) isLeader() bool { return s.raft != nil && s.raft.State() == raft.Leader }

// leaderAPI returns the leader's RPC address as gossip told it.
func (s *Store) leaderAPI() (string, string, bool) {
	_, id := s.raft.LeaderWithID()
	if id == "" {
		return "", "", false
	}
	p, ok := s.peerSet()[string(id)]
	if !ok || p.APIAddr == "" {
		return string(id), "", false
	}
	return string(id), p.APIAddr, true
}

// mapRaftErr turns Raft's errors into the store's sentinels. Only errors
// raised before the entry reached the log are ErrNoLeader (safe to retry);
// the rest leave the outcome open and are ErrNoQuorum.
func mapRaftErr(op string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%s: %v: %w", op, err, ErrNoLeader)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%s: %v: %w", op, err, ErrNoQuorum)
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
}

// waitFuture waits for f without outliving ctx.
func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// applyLocal commits t through Raft on this (leader) server.
func (s *Store) applyLocal(ctx context.Context, t Txn) (TxnResult, error) {
	cmd, err := EncodeTxn(t)
	if err != nil {
		return TxnResult{}, fmt.Errorf("apply txn: %w", err)
	}
	timeout := s.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return TxnResult{}, fmt.Errorf("apply txn: %w", ErrNoQuorum)
	}
	f := s.raft.Apply(cmd, timeout)
	if err := waitFuture(ctx, f); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return TxnResult{}, fmt.Errorf("apply txn: not committed within %s: %w", timeout.Round(time.Millisecond), ErrNoQuorum)
		}
		return TxnResult{}, mapRaftErr("apply txn", err)
	}
	res, _ := f.Response().(applyResult)
	if res.err != nil {
		return TxnResult{}, fmt.Errorf("apply txn: %w", res.err)
	}
	return res.res, nil
}

// readBarrier makes a leader read linearizable: once per term the leader
// waits for a barrier, so everything earlier leaders acknowledged is in its
// FSM, and before every read it confirms it still leads. Writes this leader
// acknowledged are in its FSM already (Raft answers after applying).
func (s *Store) readBarrier(ctx context.Context) error {
	term := s.raft.CurrentTerm()
	if s.barrierTerm.Load() != term {
		if err := waitFuture(ctx, s.raft.Barrier(s.cfg.ApplyTimeout)); err != nil {
			return fmt.Errorf("read barrier: %v: %w", err, ErrNoLeader)
		}
		s.barrierTerm.Store(term)
	}
	if err := waitFuture(ctx, s.raft.VerifyLeader()); err != nil {
		return fmt.Errorf("verify leadership: %v: %w", err, ErrNoLeader)
	}
	return nil
}

// onLeader runs op on the leader: local when this server leads, remote
// against the leader's RPC otherwise, retrying while there is no leader (or
// retry says the error is safe to retry) until ApplyTimeout. A request that
// was already forwarded is not forwarded again, so a stale leader hint
// cannot make requests bounce between servers.
func (s *Store) onLeader(ctx context.Context, op string, forwarded bool,
	local func(context.Context) error, remote func(ctx context.Context, addr string) error, retry func(error) bool,
) error {
	if s.raft == nil {
		return s.onAnyServer(ctx, op, remote, retry)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	var last error
	for {
		var err error
		switch id, addr, ok := s.leaderAPI(); {
		case s.isLeader():
			err = local(ctx)
		case forwarded:
			err = fmt.Errorf("%s: forwarded to %s, which is not the leader: %w", op, s.cfg.NodeID, ErrNoLeader)
			return err
		case ok:
			err = remote(ctx, addr)
		case id != "":
			err = fmt.Errorf("%s: leader %s has no known rpc address yet: %w", op, id, ErrNoLeader)
		default:
			err = fmt.Errorf("%s: no leader elected: %w", op, ErrNoLeader)
		}
		if err == nil || !retry(err) {
			return err
		}
		last = err
		select {
		case <-ctx.Done():
			if errors.Is(last, ErrNoLeader) {
				return last
			}
			return fmt.Errorf("%s: gave up after %s: %v: %w", op, s.cfg.ApplyTimeout, last, ErrNoLeader)
		case <-time.After(retryPause):
		}
	}
}

// onAnyServer runs a client-mode call against the servers: the last known
// leader first, then every other alive server, until one answers or ctx and
// ApplyTimeout run out.
func (s *Store) onAnyServer(ctx context.Context, op string, call func(ctx context.Context, addr string) error, retry func(error) bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout+time.Second)
	defer cancel()
	var last error
	for {
		addrs := s.serverAddrs()
		if len(addrs) == 0 {
			last = fmt.Errorf("%s: %w", op, ErrNoServers)
		}
		for _, addr := range addrs {
			err := call(ctx, addr)
			if err == nil || !retry(err) {
				return err
			}
			// Keep the server's reason rather than our own deadline.
			if last == nil || ctx.Err() == nil {
				last = err
			}
			if ctx.Err() != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(2 * retryPause):
		}
	}
}

// serverAddrs lists the RPC addresses of alive servers, the leader hint
// first; the rest rotate so that clients spread over the servers.
func (s *Store) serverAddrs() []string {
	peers := s.peerSet()
	s.mu.Lock()
	hint := s.leaderHint
	s.mu.Unlock()
	var first string
	var rest []string
	for _, p := range peers {
		if !p.Server || !p.Alive || p.Left || p.APIAddr == "" {
			continue
		}
		if p.ID == hint {
			first = p.APIAddr
		} else {
			rest = append(rest, p.APIAddr)
		}
	}
	sort.Strings(rest)
	if n := len(rest); n > 1 {
		k := int(time.Now().UnixNano() % int64(n))
		rest = append(rest[k:], rest[:k]...)
	}
	if first != "" {
		return append([]string{first}, rest...)
	}
	return rest
}

func (s *Store) setLeaderHint(id string) {
	if id == "" {
		return
	}
	s.mu.Lock()
	s.leaderHint = id
	s.mu.Unlock()
}

// retryRead: reads change nothing, so any failure may be retried elsewhere.
func retryRead(err error) bool {
	return !errors.Is(err, ErrInvalidTxn) && !errors.Is(err, ErrAuth) && !errors.Is(err, context.Canceled)
}

// retryWrite: a write is retried only when it surely was not applied: no
// leader took it, or the connection never opened.
func retryWrite(err error) bool {
	if errors.Is(err, ErrNoLeader) || errors.Is(err, ErrClosed) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// Get implements KV.
func (s *Store) Get(ctx context.Context, key string) (KeyValue, bool, error) {
	return s.get(ctx, key, false)
}

func (s *Store) get(ctx context.Context, key string, forwarded bool) (KeyValue, bool, error) {
	var resp getResponse
	op := fmt.Sprintf("get %q", key)
	err := s.onLeader(ctx, op, forwarded,
		func(ctx context.Context) error {
			if err := s.readBarrier(ctx); err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			resp.KV, resp.Found = s.fsm.Get(key)
			return nil
		},
		func(ctx context.Context, addr string) error {
			return s.call(ctx, addr, "get", s.cfg.Server, getRequest{Key: key}, &resp)
		}, retryRead)
	return resp.KV, resp.Found, err
}

// List implements KV.
func (s *Store) List(ctx context.Context, prefix string) ([]KeyValue, int64, error) {
	return s.list(ctx, prefix, false)
}

func (s *Store) list(ctx context.Context, prefix string, forwarded bool) ([]KeyValue, int64, error) {
	var resp listResponse
	op := fmt.Sprintf("list %q", prefix)
	err := s.onLeader(ctx, op, forwarded,
		func(ctx context.Context) error {
			if err := s.readBarrier(ctx); err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			resp.KVs, resp.Revision = s.fsm.List(prefix)
			return nil
		},
		func(ctx context.Context, addr string) error {
			return s.call(ctx, addr, "list", s.cfg.Server, listRequest{Prefix: prefix}, &resp)
		}, retryRead)
	return resp.KVs, resp.Revision, err
}

// Txn implements KV.
func (s *Store) Txn(ctx context.Context, t Txn) (TxnResult, error) {
	return s.txn(ctx, t, false)
}

func (s *Store) txn(ctx context.Context, t Txn, forwarded bool) (TxnResult, error) {
	if err := ValidateTxn(t); err != nil {
		return TxnResult{}, fmt.Errorf("apply txn: %w", err)
	}
	var res TxnResult
	err := s.onLeader(ctx, "apply txn", forwarded,
		func(ctx context.Context) (err error) {
			res, err = s.applyLocal(ctx, t)
			return err
		},
		func(ctx context.Context, addr string) error {
			return s.call(ctx, addr, "txn", s.cfg.Server, t, &res)
		}, retryWrite)
	return res, err
}

// Watch implements KV. Servers watch their local state machine; clients
// stream from a server and resume on another one without a gap when it goes
// away.
func (s *Store) Watch(ctx context.Context, prefix string, fromRevision int64) <-chan WatchResponse {
	if s.cfg.Server {
		return s.fsm.Watch(ctx, prefix, fromRevision)
	}
	return s.clientWatch(ctx, prefix, fromRevision)
}

// Status reports this node's view of the store.
func (s *Store) Status() Status {
	st := Status{Revision: s.fsm.Revision()}
	peers := s.peerSet()
	if s.raft == nil {
		st.Role = "client"
		s.mu.Lock()
		st.Leader = s.leaderHint
		s.mu.Unlock()
		for _, p := range peers {
			if p.Server {
				st.Servers = append(st.Servers, ServerStatus{ID: p.ID, Addr: p.APIAddr, Voter: true, Alive: p.Alive && !p.Left})
			}
		}
		sort.Slice(st.Servers, func(i, j int) bool { return st.Servers[i].ID < st.Servers[j].ID })
		return st
	}
	state := s.raft.State()
	st.Role = strings.ToLower(state.String())
	_, lid := s.raft.LeaderWithID()
	st.Leader = string(lid)
	st.Term = s.raft.CurrentTerm()
	st.CommitIndex = s.raft.CommitIndex()
	st.AppliedIndex = s.raft.AppliedIndex()
	if state == raft.Follower {
		if lc := s.raft.LastContact(); !lc.IsZero() {
			st.LastContact = time.Since(lc)
		}
	}
	if fut := s.raft.GetConfiguration(); fut.Error() == nil {
		for _, srv := range fut.Configuration().Servers {
			p, ok := peers[string(srv.ID)]
			st.Servers = append(st.Servers, ServerStatus{
				ID: string(srv.ID), Addr: string(srv.Address),
				Voter: srv.Suffrage == raft.Voter, Alive: ok && p.Alive && !p.Left,
			})
		}
	}
	if len(st.Servers) == 0 && state != raft.Shutdown {
		st.Role = "bootstrapping"
	}
	return st
}
