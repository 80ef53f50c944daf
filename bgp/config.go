package bgp

import (
	"fmt"
	"net/netip"
	"time"
)

// DefaultPort is the BGP port dialled when PeerConfig.Port is 0.
const DefaultPort = 179

// Config is everything a Speaker needs. Build it with DefaultConfig, override
// fields, and call Validate (New calls it too).
type Config struct {
	// RouterID is the BGP identifier; it must be an IPv4 address unique among
	// the speakers a peer sees (the node's underlay address is a good choice).
	RouterID netip.Addr
	// LocalASN is this node's AS number; per-node private ASNs
	// (4200000000..4294967294) let an upstream router spread traffic over
	// nodes with "as-path multipath-relax".
	LocalASN uint32
	// ListenPort is the TCP port to accept sessions on; -1 (the default)
	// does not listen at all: the speaker dials its peers, so a node needs no
	// open port and two agents in one namespace cannot clash.
	ListenPort int32
	// Peers are the routers to dial.
	Peers []PeerConfig
	// Communities are attached to every advertisement: "65000:100",
	// large "1:2:3", or a well-known name such as "no-export".
	Communities []string
	// LocalPref is sent to iBGP peers (0: not set; gobgp then sends 100).
	LocalPref uint32
}

// PeerConfig is one BGP neighbour.
type PeerConfig struct {
	Address   netip.Addr
	RemoteASN uint32
	// LocalASN overrides Config.LocalASN for this session (0: Config's).
	LocalASN uint32
	// Port is the peer's TCP port (0: 179).
	Port uint16
	// HoldTime and Keepalive are proposed to the peer (0: 90s and 30s). A
	// short hold time bounds how long routes of a silently dead node stay
	// at the router.
	HoldTime  time.Duration
	Keepalive time.Duration
	// Password enables TCP MD5 signatures (RFC 2385).
	Password string
	// Multihop is the eBGP multihop TTL (0: directly connected only).
	Multihop uint8
	// GracefulRestart asks the peer to keep our routes for RestartTime when
	// the session drops, so an agent restart does not withdraw them.
	GracefulRestart bool
	RestartTime     time.Duration
}

// DefaultConfig returns a configuration with the defaults filled in; the
// router ID, ASN and peers still have to be set.
func DefaultConfig() Config {
	return Config{ListenPort: -1}
}

// port returns the TCP port to dial.
func (p PeerConfig) port() uint16 {
	if p.Port == 0 {
		return DefaultPort
	}
	return p.Port
}

// Validate reports the first problem in c, naming the field and the fix.
func (c Config) Validate() error {
	if !c.RouterID.IsValid() || !c.RouterID.Is4() || c.RouterID.IsUnspecified() {
		return fmt.Errorf("bgp.routerID: %v is not a usable router ID: use an IPv4 address unique among the peers (the node's underlay IPv4 address)", c.RouterID)
	}
	if c.LocalASN == 0 {
		return fmt.Errorf("bgp.localASN: 0 is not an ASN: use 1..4294967295 (a private one: 64512..65534 or 4200000000..4294967294)")
	}
	if c.ListenPort < -1 || c.ListenPort > 65535 {
		return fmt.Errorf("bgp.listenPort: %d is invalid: use 1..65535, or -1 to only dial out", c.ListenPort)
	}
	for i, s := range c.Communities {
		if _, err := ParseCommunity(s); err != nil {
			return fmt.Errorf("bgp.communities[%d]: %w", i, err)
		}
	}
	seen := make(map[netip.Addr]int, len(c.Peers))
	for i, p := range c.Peers {
		if err := p.validate(); err != nil {
			return fmt.Errorf("bgp.peers[%d].%w", i, err)
		}
		if j, dup := seen[p.Address.Unmap()]; dup {
			return fmt.Errorf("bgp.peers[%d].address: %s is also peers[%d]: list each peer once", i, p.Address, j)
		}
		seen[p.Address.Unmap()] = i
	}
	return nil
}

// validate checks one peer; errors start with the field name so that the
// caller can prefix the peer's position.
func (p PeerConfig) validate() error {
	if !p.Address.IsValid() || p.Address.IsUnspecified() || p.Address.IsMulticast() {
		return fmt.Errorf("address: %v is not a peer address: use the router's unicast IPv4 or IPv6 address", p.Address)
	}
	if p.Address.Zone() != "" {
		return fmt.Errorf("address: %s has a zone: link-local peers are not supported, use a global address", p.Address)
	}
	if p.RemoteASN == 0 {
		return fmt.Errorf("remoteASN: 0 is not an ASN; use 1..4294967295")
	}
	if p.HoldTime != 0 && (p.HoldTime < 3*time.Second || p.HoldTime > 65535*time.Second) {
		return fmt.Errorf("holdTime: %s is invalid: use 3s..65535s, or 0 for 90s", p.HoldTime)
	}
	if p.HoldTime%time.Second != 0 || p.Keepalive%time.Second != 0 {
		return fmt.Errorf("holdTime/keepalive: BGP counts whole seconds: use a multiple of 1s")
	}
	if p.Keepalive < 0 || (p.Keepalive != 0 && p.HoldTime != 0 && p.Keepalive >= p.HoldTime) {
		return fmt.Errorf("keepalive: %s must be shorter than holdTime %s: use a third of it", p.Keepalive, p.HoldTime)
	}
	if p.RestartTime < 0 || p.RestartTime > 4095*time.Second {
		return fmt.Errorf("restartTime: %s is invalid: use 0..4095s (0: 120s)", p.RestartTime)
	}
	if p.RestartTime != 0 && !p.GracefulRestart {
		return fmt.Errorf("restartTime: set but gracefulRestart is off: set gracefulRestart: true, or drop restartTime")
	}
	if len(p.Password) > 80 {
		return fmt.Errorf("password: %d bytes is too long for TCP MD5: use at most 80", len(p.Password))
	}
	return nil
}
