package gossip

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"
)

// DefaultPort is the gossip port used when Config.BindPort is left at its
// default and when a join address names no port while BindPort is 0.
const DefaultPort = 7946

// Config is everything a Pool needs. Build it with DefaultConfig, override
// fields, and call Validate (New calls it too).
type Config struct {
	// NodeName must be unique within the cluster; a restarted node should
	// reuse its name so peers treat it as the same member.
	NodeName string
	// ClusterName and ClusterID must match on every member; peers that
	// advertise another value are refused.
	ClusterName string
	ClusterID   uint32

	// BindAddr is the IP to listen on for gossip (UDP and TCP).
	BindAddr string
	// BindPort is the port to listen on; 0 picks a free port (tests), read
	// it back from Pool.Local().Addr.
	BindPort int
	// AdvertiseAddr and AdvertisePort are what peers are told to dial when
	// the bind address is not reachable as is (NAT, 0.0.0.0). Optional.
	AdvertiseAddr string
	AdvertisePort int

	// Keys are AES keys (16, 24 or 32 bytes). Keys[0] is the primary and
	// encrypts; the others are accepted for decryption so that keys can be
	// rotated without a partition. Empty disables encryption (allowed, but
	// logged as a warning).
	Keys [][]byte

	// Failure detection. See DefaultConfig for the reasoning behind the values.
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	GossipInterval time.Duration
	SuspicionMult  int

	// Logger receives the pool's logs and memberlist's own; nil means
	// slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the tuned "fast LAN" profile: a dead node is declared
// dead in well under a second in a 10-node cluster on one L2 segment.
//
// memberlist's LAN profile (1s probes, 500ms timeout, suspicion 4) takes
// several seconds to declare a node dead; a fabric wants traffic moved away
// from a dead node faster than that, and its nodes sit on one low-latency
// underlay. Lifeguard awareness (AwarenessMaxMultiplier) stays on so that a
// node whose CPU is saturated slows its own probing instead of accusing
// healthy peers.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:       host,
		ClusterName:    "default",
		ClusterID:      1,
		BindAddr:       "0.0.0.0",
		BindPort:       DefaultPort,
		ProbeInterval:  100 * time.Millisecond,
		ProbeTimeout:   50 * time.Millisecond,
		GossipInterval: 50 * time.Millisecond,
		SuspicionMult:  2,
	}
}

// MaxClusterID is the largest valid cluster ID; the ID occupies fixed bits of
// every security identity, so it is bounded.
const MaxClusterID = 65535

// Validate reports the first problem in c, naming the field and the fix.
func (c Config) Validate() error {
	if c.NodeName == "" {
		return fmt.Errorf("gossip: NodeName is empty: set a name unique within the cluster (the hostname is a good default)")
	}
	if len(c.NodeName) > 128 {
		return fmt.Errorf("gossip: NodeName %q is %d bytes: use at most 128", c.NodeName, len(c.NodeName))
	}
	if c.ClusterName == "" {
		return fmt.Errorf("gossip: ClusterName is empty: set the same name on every node of the cluster")
	}
	if len(c.ClusterName) > 64 {
		return fmt.Errorf("gossip: ClusterName %q is %d bytes: use at most 64", c.ClusterName, len(c.ClusterName))
	}
	if c.ClusterID == 0 || c.ClusterID > MaxClusterID {
		return fmt.Errorf("gossip: ClusterID %d is invalid: use 1..%d", c.ClusterID, MaxClusterID)
	}
	if _, err := netip.ParseAddr(c.BindAddr); err != nil {
		return fmt.Errorf("gossip: BindAddr %q is not an IP address: use e.g. 0.0.0.0 or 10.10.1.11", c.BindAddr)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return fmt.Errorf("gossip: BindPort %d is invalid: use 1..65535 (default %d), or 0 to pick a free port", c.BindPort, DefaultPort)
	}
	if c.AdvertiseAddr != "" {
		a, err := netip.ParseAddr(c.AdvertiseAddr)
		if err != nil {
			return fmt.Errorf("gossip: AdvertiseAddr %q is not an IP address: use an address peers can reach, or leave it empty", c.AdvertiseAddr)
		}
		if a.IsUnspecified() {
			return fmt.Errorf("gossip: AdvertiseAddr %s is unspecified: use an address peers can reach, or leave it empty", a)
		}
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		return fmt.Errorf("gossip: AdvertisePort %d is invalid: use 1..65535, or 0 for BindPort", c.AdvertisePort)
	}
	seen := make(map[string]bool, len(c.Keys))
	for i, k := range c.Keys {
		if err := checkKey(k); err != nil {
			return fmt.Errorf("gossip: Keys[%d]: %w", i, err)
		}
		if seen[string(k)] {
			return fmt.Errorf("gossip: Keys[%d] repeats an earlier key: list each key once", i)
		}
		seen[string(k)] = true
	}
	if c.ProbeInterval <= 0 {
		return fmt.Errorf("gossip: ProbeInterval %s is invalid: use a positive duration (default 100ms)", c.ProbeInterval)
	}
	if c.ProbeTimeout <= 0 || c.ProbeTimeout >= c.ProbeInterval {
		return fmt.Errorf("gossip: ProbeTimeout %s is invalid: use a positive duration below ProbeInterval %s (default 50ms)", c.ProbeTimeout, c.ProbeInterval)
	}
	if c.GossipInterval <= 0 {
		return fmt.Errorf("gossip: GossipInterval %s is invalid: use a positive duration (default 50ms)", c.GossipInterval)
	}
	if c.SuspicionMult < 1 {
		return fmt.Errorf("gossip: SuspicionMult %d is invalid: use 1 or more (default 2)", c.SuspicionMult)
	}
	return nil
}
