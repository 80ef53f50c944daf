package store

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"
)

// Config configures one node's store. Server nodes run a Raft voter; other
// nodes are clients that reach the servers over the authenticated RPC.
type Config struct {
	// NodeID is the node's unique, stable name; servers use it as Raft ID.
	NodeID string
	// ClusterName scopes the TLS identities: two clusters with the same
	// secret still do not trust each other.
	ClusterName string
	// DataDir holds the Raft log, stable store and snapshots (servers only).
	DataDir string
	// Server makes this node a Raft voter.
	Server bool
	// BootstrapExpect is how many servers must be seen alive before the
	// first cluster configuration is bootstrapped (servers only). 0 never
	// bootstraps: the node waits to be added by an existing leader.
	BootstrapExpect int
	// RaftBind and RaftAdvertise are host:port for Raft traffic. An empty
	// RaftAdvertise uses the bound address, which needs a specific bind IP.
	RaftBind, RaftAdvertise string
	// APIBind and APIAdvertise are host:port for the store RPC. Clients do
	// not listen, so they need neither.
	APIBind, APIAdvertise string
	// Secret is the cluster secret (the gossip key). Every node derives the
	// same CA from it, so only nodes holding it can talk to the store.
	Secret []byte

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// ApplyTimeout bounds how long a write (and a read that needs the
	// leader) waits for a leader and a commit before failing with
	// ErrNoLeader or ErrNoQuorum.
	ApplyTimeout time.Duration

	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// HistorySize is how many events each server keeps for watch replay.
	HistorySize int
	// DeadServerCleanup lets the leader remove failed servers from the Raft
	// configuration, never below a quorum of alive voters.
	DeadServerCleanup bool

	Logger *slog.Logger
}

// minSecretLen matches the smallest memberlist key (AES-128).
const minSecretLen = 16

// DefaultConfig returns timers tuned for failover in about a second without
// flapping on a busy 2-core machine: followers wait 300-600ms without a
// heartbeat before they campaign, and a leader steps down when it has not
// heard from a quorum within 150ms of its lease.
func DefaultConfig() Config {
	return Config{
		ClusterName:        "default",
		BootstrapExpect:    1,
		HeartbeatTimeout:   300 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond,
		CommitTimeout:      20 * time.Millisecond,
		ApplyTimeout:       5 * time.Second,
		SnapshotThreshold:  8192,
		SnapshotInterval:   2 * time.Minute,
		HistorySize:        DefaultHistorySize,
		DeadServerCleanup:  true,
	}
}

// Validate checks c; each error names the field and how to fix it.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.NodeID == "" {
		add("NodeID is empty: set it to the node's unique name")
	}
	if c.ClusterName == "" {
		add("ClusterName is empty: set it to the cluster's name")
	}
	if len(c.Secret) < minSecretLen {
		add("Secret has %d bytes: set it to the cluster secret (the gossip key, at least %d bytes); the store has no unauthenticated mode", len(c.Secret), minSecretLen)
	}
	if c.ApplyTimeout <= 0 {
		add("ApplyTimeout must be positive (e.g. 5s)")
	}
	if c.HistorySize < 0 {
		add("HistorySize is negative: use 0 for the default (%d)", DefaultHistorySize)
	}
	if c.Server {
		if c.DataDir == "" {
			add("DataDir is empty: a server needs a directory for its Raft log and snapshots")
		}
		if c.BootstrapExpect < 0 {
			add("BootstrapExpect is %d: use 1, 3 or 5 (or 0 to join an existing cluster)", c.BootstrapExpect)
		}
		if err := checkHostPort(c.RaftBind); err != nil {
			add("RaftBind %q: %v: set host:port to listen on for Raft", c.RaftBind, err)
		}
		if c.RaftAdvertise != "" {
			if err := checkHostPort(c.RaftAdvertise); err != nil {
				add("RaftAdvertise %q: %v: set the host:port other servers reach Raft on", c.RaftAdvertise, err)
			}
		}
		if err := checkHostPort(c.APIBind); err != nil {
			add("APIBind %q: %v: a server must serve the store RPC; set host:port", c.APIBind, err)
		}
		if c.APIAdvertise != "" {
			if err := checkHostPort(c.APIAdvertise); err != nil {
				add("APIAdvertise %q: %v: set the host:port other nodes reach the store RPC on", c.APIAdvertise, err)
			}
		}
		if c.HeartbeatTimeout < 5*time.Millisecond {
			add("HeartbeatTimeout %s is below 5ms", c.HeartbeatTimeout)
		}
		if c.ElectionTimeout < c.HeartbeatTimeout {
			add("ElectionTimeout %s is below HeartbeatTimeout %s: raise it", c.ElectionTimeout, c.HeartbeatTimeout)
		}
		if c.LeaderLeaseTimeout < 5*time.Millisecond || c.LeaderLeaseTimeout > c.HeartbeatTimeout {
			add("LeaderLeaseTimeout %s must be between 5ms and HeartbeatTimeout %s", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
		}
		if c.CommitTimeout < time.Millisecond {
			add("CommitTimeout %s is below 1ms", c.CommitTimeout)
		}
		if c.SnapshotThreshold == 0 {
			add("SnapshotThreshold is 0: set how many log entries trigger a snapshot (e.g. 8192)")
		}
		if c.SnapshotInterval < 5*time.Millisecond {
			add("SnapshotInterval %s is too short (e.g. 2m)", c.SnapshotInterval)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store config: %w", err)
	}
	return nil
}

func checkHostPort(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// advertised picks the address to tell others: advertise when set, else the
// bound address when its IP is specific.
func advertised(advertise string, bound net.Addr) (string, error) {
	if advertise != "" {
		return advertise, nil
	}
	tcp, ok := bound.(*net.TCPAddr)
	if !ok || tcp.IP == nil || tcp.IP.IsUnspecified() {
		return "", fmt.Errorf("bound to %s, which others cannot reach: set the advertise address", bound)
	}
	return tcp.String(), nil
}
