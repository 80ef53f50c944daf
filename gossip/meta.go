package gossip

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"

	"github.com/hashicorp/memberlist"
)

// Well-known roles.
const (
	// RoleServer marks a Raft voter; its Meta carries RaftAddr.
	RoleServer = "server"
)

// MaxMetaSize is the largest encoded Meta memberlist will carry.
const MaxMetaSize = memberlist.MetaMaxSize

// Meta is what a node tells the cluster about itself. It travels in every
// alive message, so it must stay small: encoded it must fit MaxMetaSize (512
// bytes). Put bulky or fast-changing state in the store, not here.
type Meta struct {
	Name      string
	Cluster   string
	ClusterID uint32
	Underlay  []netip.Addr   // addresses the overlay can reach this node on
	PodCIDRs  []netip.Prefix // workload prefixes routed to this node
	Roles     []string       // e.g. RoleServer
	Version   string         // agent version
	Health    string         // "ok", or "degraded: <why>"
	APIAddr   string         // host:port of the node's store RPC endpoint
	RaftAddr  string         // host:port of the raft transport (servers only)
	// Started is when the agent started (Unix milliseconds): the moment
	// every member agrees a node joined, for decisions that must not
	// depend on when each member happened to hear of it.
	Started int64
	// L2Down: the node's announcing interface lost its link; it answers
	// ARP/NDP for no address until it is back.
	L2Down bool
}

// HasRole reports whether r is one of m's roles.
func (m Meta) HasRole(r string) bool { return slices.Contains(m.Roles, r) }

// wireMeta is Meta on the wire: compact JSON with one-letter keys, because
// every byte counts against the 512-byte limit and JSON stays readable in a
// packet capture and tolerant of fields added later.
type wireMeta struct {
	N string         `json:"n"`
	C string         `json:"c"`
	I uint32         `json:"i"`
	U []netip.Addr   `json:"u,omitempty"`
	P []netip.Prefix `json:"p,omitempty"`
	R []string       `json:"r,omitempty"`
	V string         `json:"v,omitempty"`
	H string         `json:"h,omitempty"`
	A string         `json:"a,omitempty"`
	F string         `json:"f,omitempty"`
	// L marks a node that is leaving gracefully. memberlist does not tell
	// its event delegate whether a node left or failed (the State of the
	// Node it passes is never set), so a leaving node says so in its meta
	// before it leaves, as serf does with its leave intent.
	L bool  `json:"l,omitempty"`
	S int64 `json:"s,omitempty"`
	D bool  `json:"d,omitempty"`
}

// EncodeMeta encodes m for the wire. It fails when m holds an invalid address
// or prefix, or when the encoding is over MaxMetaSize.
func EncodeMeta(m Meta) ([]byte, error) { return encodeMeta(m, false) }

func encodeMeta(m Meta, leaving bool) ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("gossip: encode meta: %w", err)
	}
	b, err := json.Marshal(wireMeta{
		N: m.Name, C: m.Cluster, I: m.ClusterID,
		U: m.Underlay, P: m.PodCIDRs, R: m.Roles,
		V: m.Version, H: m.Health, A: m.APIAddr, F: m.RaftAddr,
		L: leaving, S: m.Started, D: m.L2Down,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip: encode meta: %w", err)
	}
	if len(b) > MaxMetaSize {
		return nil, fmt.Errorf("gossip: encode meta: %d bytes is over the %d-byte limit: shorten Health/Version or list fewer Underlay addresses, PodCIDRs or Roles", len(b), MaxMetaSize)
	}
	return b, nil
}

// DecodeMeta decodes meta received from the network. It never panics and
// rejects anything EncodeMeta would not produce: oversize input, invalid
// addresses, prefixes, or a missing name.
func DecodeMeta(b []byte) (Meta, error) {
	m, _, err := decodeMeta(b)
	return m, err
}

// decodeMeta also reports whether the node is leaving.
func decodeMeta(b []byte) (m Meta, leaving bool, err error) {
	if len(b) == 0 {
		return Meta{}, false, fmt.Errorf("gossip: decode meta: empty: the peer is not a fabric node or runs an incompatible version")
	}
	if len(b) > MaxMetaSize {
		return Meta{}, false, fmt.Errorf("gossip: decode meta: %d bytes is over the %d-byte limit", len(b), MaxMetaSize)
	}
	var w wireMeta
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&w); err != nil {
		return Meta{}, false, fmt.Errorf("gossip: decode meta: %w", err)
	}
	if dec.More() {
		return Meta{}, false, fmt.Errorf("gossip: decode meta: trailing data after the object")
	}
	// Empty lists decode as nil, as EncodeMeta omits both, so a decoded Meta
	// compares equal to its re-encoding.
	m = Meta{
		Name: w.N, Cluster: w.C, ClusterID: w.I,
		Underlay: nilIfEmpty(w.U), PodCIDRs: nilIfEmpty(w.P), Roles: nilIfEmpty(w.R),
		Version: w.V, Health: w.H, APIAddr: w.A, RaftAddr: w.F,
		Started: w.S, L2Down: w.D,
	}
	if m.Name == "" {
		return Meta{}, false, fmt.Errorf("gossip: decode meta: no node name")
	}
	if err := m.check(); err != nil {
		return Meta{}, false, fmt.Errorf("gossip: decode meta: %w", err)
	}
	return m, w.L, nil
}

// check rejects values that do not survive a text round trip (the zero
// netip.Addr and netip.Prefix).
func (m Meta) check() error {
	for i, a := range m.Underlay {
		if !a.IsValid() {
			return fmt.Errorf("Underlay[%d] is not a valid address", i)
		}
	}
	for i, p := range m.PodCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("PodCIDRs[%d] is not a valid prefix", i)
		}
	}
	return nil
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
