// Package bgp owns the node's BGP speaker: the sessions to the routers it
// peers with, the set of prefixes the node announces (pod CIDRs,
// load-balancer IPs) and the routes it learns back. It runs gobgp in-process
// and is the only package that imports gobgp.
//
// It knows nothing of where prefixes come from or where learned routes go:
// the agent hands it the whole desired set of advertisements and installs
// the learned routes itself.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// ErrNotStarted is returned by calls that need a running speaker.
var ErrNotStarted = errors.New("bgp: speaker not started: call Start first")

// connectRetry is how often a speaker redials a peer that is not up. gobgp's
// default of 120s would leave a node dark for two minutes after a router
// restart.
const connectRetry = 5 * time.Second

// Speaker is one node's BGP speaker. Its methods are safe for concurrent use.
type Speaker struct {
	cfg   Config
	log   *slog.Logger
	srv   *server.BgpServer
	comms []Community // Config.Communities, parsed once

	mu      sync.Mutex // serializes reconciles and guards the fields below
	started bool
	closed  bool
	peers   map[netip.Addr]PeerConfig
	adv     map[netip.Prefix]advertised
}

// New checks cfg and builds a speaker; nothing is dialled until Start.
func New(cfg Config, log *slog.Logger) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	comms, err := parseCommunities(cfg.Communities)
	if err != nil {
		return nil, fmt.Errorf("bgp: %w", err)
	}
	s := &Speaker{
		cfg:   cfg,
		log:   log,
		comms: comms,
		peers: make(map[netip.Addr]PeerConfig),
		adv:   make(map[netip.Prefix]advertised),
	}
	s.srv = server.NewBgpServer(server.LoggerOption(newLogger(log)))
	return s, nil
}

// Start runs the BGP server, dials the configured peers and announces
// whatever Advertise was given before. It returns once the server runs, not
// when sessions are up: see Peers.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("bgp: start: speaker is closed")
	}
	if s.started {
		return errors.New("bgp: start: already started")
	}
	go s.srv.Serve()
	g := &api.Global{
		Asn:        s.cfg.LocalASN,
		RouterId:   s.cfg.RouterID.String(),
		ListenPort: s.cfg.ListenPort,
	}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		s.srv.Stop()
		return fmt.Errorf("bgp: start server (asn %d, router-id %s): %w", s.cfg.LocalASN, s.cfg.RouterID, err)
	}
	s.started = true
	// Paths first, then peers: a session that comes up gets the whole set in
	// its first updates instead of a trickle.
	pending := s.adv
	s.adv = make(map[netip.Prefix]advertised, len(pending))
	for p, a := range pending {
		if err := s.addPath(ctx, p, a); err != nil {
			return err
		}
	}
	if err := s.setPeersLocked(ctx, s.cfg.Peers); err != nil {
		return err
	}
	s.log.Info("bgp speaker started", "asn", s.cfg.LocalASN, "router_id", s.cfg.RouterID, "peers", len(s.cfg.Peers), "prefixes", len(s.adv))
	return nil
}

// Close tears the sessions down (peers see a Cease notification and drop
// our routes at once) and stops the server. It is safe to call twice.
func (s *Speaker) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.started {
		s.srv.Stop()
	}
	return nil
}

// SetPeers makes the speaker's sessions match peers: new ones are dialled,
// missing ones are torn down, changed ones are reset with the new settings.
// Calling it again with the same list changes nothing.
func (s *Speaker) SetPeers(peers []PeerConfig) error {
	c := s.cfg
	c.Peers = peers
	if err := c.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		s.cfg.Peers = slices.Clone(peers)
		return nil
	}
	return s.setPeersLocked(context.Background(), peers)
}

func (s *Speaker) setPeersLocked(ctx context.Context, peers []PeerConfig) error {
	want := make(map[netip.Addr]PeerConfig, len(peers))
	for _, p := range peers {
		want[p.Address.Unmap()] = p
	}
	var errs []error
	for addr, old := range s.peers {
		if p, ok := want[addr]; ok && peerEqual(p, old) {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: remove peer %s: %w", addr, err))
			continue
		}
		delete(s.peers, addr)
		s.log.Info("bgp peer removed", "peer", addr)
	}
	for addr, p := range want {
		if _, ok := s.peers[addr]; ok {
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: add peer %s (asn %d): %w", addr, p.RemoteASN, err))
			continue
		}
		s.peers[addr] = p
		s.log.Info("bgp peer added", "peer", addr, "asn", p.RemoteASN)
	}
	s.cfg.Peers = slices.Clone(peers)
	return errors.Join(errs...)
}

func peerEqual(a, b PeerConfig) bool {
	return a == b
}

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// apiPeer translates a PeerConfig into gobgp's neighbour description.
func (s *Speaker) apiPeer(p PeerConfig) *api.Peer {
	local := p.LocalASN
	if local == 0 {
		local = s.cfg.LocalASN
	}
	hold, keep := p.HoldTime, p.Keepalive
	if hold == 0 {
		hold = 90 * time.Second
	}
	if keep == 0 {
		keep = hold / 3
	}
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.Unmap().String(),
			PeerAsn:         p.RemoteASN,
			LocalAsn:        local,
			AuthPassword:    p.Password,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      uint64(connectRetry / time.Second),
			HoldTime:          uint64(hold / time.Second),
			KeepaliveInterval: uint64(keep / time.Second),
		}},
		Transport: &api.Transport{RemotePort: uint32(p.port())},
	}
	if p.Multihop > 0 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.Multihop)}
	}
	// A session carries the address family of its peer's address: an IPv6
	// prefix over an IPv4 session would need an IPv6 next hop the session
	// cannot supply, and routers (FRR by default) activate only that family.
	family := familyV4
	if p.Address.Unmap().Is6() {
		family = familyV6
	}
	for _, f := range []*api.Family{family} {
		as := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if p.GracefulRestart {
			as.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		ap.AfiSafis = append(ap.AfiSafis, as)
	}
	if p.GracefulRestart {
		rt := p.RestartTime
		if rt == 0 {
			rt = 120 * time.Second
		}
		ap.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(rt / time.Second)}
	}
	return ap
}

// PeerStatus is one session as the speaker sees it.
type PeerStatus struct {
	Address netip.Addr
	ASN     uint32
	// State is the FSM state in lower case: "idle", "connect", "active",
	// "opensent", "openconfirm" or "established".
	State string
	// Uptime is how long the session has been established (0 when down).
	Uptime time.Duration
	// Prefix counts over all address families.
	Received, Accepted, Advertised uint64
}

// Peers reports every configured session, sorted by address.
func (s *Speaker) Peers() []PeerStatus {
	s.mu.Lock()
	started := s.started && !s.closed
	s.mu.Unlock()
	if !started {
		return nil
	}
	var out []PeerStatus
	err := s.srv.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		st := PeerStatus{State: "unknown"}
		if p.Conf != nil {
			st.Address, _ = netip.ParseAddr(p.Conf.NeighborAddress)
			st.ASN = p.Conf.PeerAsn
		}
		if p.State != nil {
			st.State = strings.ToLower(strings.TrimPrefix(p.State.SessionState.String(), "SESSION_STATE_"))
			if st.ASN == 0 {
				st.ASN = p.State.PeerAsn
			}
		}
		if st.State == "established" && p.Timers != nil && p.Timers.State != nil && p.Timers.State.Uptime != nil {
			st.Uptime = time.Since(p.Timers.State.Uptime.AsTime()).Round(time.Second)
		}
		for _, as := range p.AfiSafis {
			if as.State != nil {
				st.Received += as.State.Received
				st.Accepted += as.State.Accepted
				st.Advertised += as.State.Advertised
			}
		}
		out = append(out, st)
	})
	if err != nil {
		s.log.Warn("bgp list peers failed", "err", err)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return out
}
