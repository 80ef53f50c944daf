package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"time"
)

// ErrNotSupported is returned where this system or kernel lacks something
// the datapath needs (Linux, bpffs, TCX); the error wrapping it names the
// feature.
var ErrNotSupported = errors.New("not supported")

// Mode is how traffic crosses between nodes. Its values are those of the
// tunnel package's Mode; bpf does not import tunnel (DESIGN: layout).
type Mode string

const (
	ModeVXLAN  Mode = "vxlan"
	ModeGeneve Mode = "geneve"
	ModeNative Mode = "native"
)

// Config is what Open needs to know about the node it runs on.
type Config struct {
	// PinDir is this node's own folder on a bpffs mount; maps and links
	// pinned there outlive the agent.
	PinDir string
	Mode   Mode
	// UnderlayIfName is the interface towards other nodes (eth0).
	UnderlayIfName string
	// UnderlayIPv4 is this node's address on the underlay: the outer
	// source of Geneve and what Geneve packets for us are addressed to.
	// UnderlayIPv6 is optional.
	UnderlayIPv4, UnderlayIPv6 netip.Addr
	// VXLANIfName is the flow-based VXLAN device (VXLAN mode), created
	// beforehand by tunnel.EnsureVXLAN.
	VXLANIfName string
	GenevePort  int
	// CTEntries is the size of the connection-tracking table (an LRU
	// map: when it is full the least recently used connection is
	// forgotten, and its next packet is judged by policy again). 0 means
	// DefaultCTEntries. Changing it needs the pinned ct map removed.
	CTEntries int
	// ServiceEntries is the most service frontends (and Maglev tables),
	// BackendEntries the most distinct backends (address and port),
	// AffinityEntries the most {service, client} session-affinity
	// records (an LRU map). 0 means the Default*Entries. The per-connection
	// service state (lb_ct, lb_revnat) is sized by CTEntries. Changing a
	// size needs the pinned map removed.
	ServiceEntries  int
	BackendEntries  int
	AffinityEntries int
	// NATEntries is the most external connections forwarded to a backend
	// on another node at once (the lb_nat LRU map); 0 means
	// DefaultNATEntries. Changing it needs the pinned map removed.
	NATEntries int
	// NATPortMin..NATPortMax (inclusive) are the source ports such
	// connections get on this node's address, so the backend's replies
	// come back here. Both 0 mean DefaultNATPortMin..DefaultNATPortMax,
	// above the kernel's default ip_local_port_range (32768 60999): the
	// node's own connections must not use these ports (a reply to one
	// from a backend, on the same backend address and port, would be
	// taken for the translated connection's). Open warns when the node's
	// ip_local_port_range overlaps them. Each {backend, protocol} has the
	// whole range to itself.
	NATPortMin, NATPortMax int
	// Connection-tracking lifetimes: an entry idle for longer counts as
	// absent and GCConntrack removes it. CTTCPTimeout is for TCP once
	// both sides were seen, CTSYNTimeout for TCP before the reply,
	// CTTCPClosingTimeout after a FIN or RST, CTAnyTimeout for UDP and
	// every other protocol. The service maps (lb_ct, lb_nat) live as long
	// as CTTCPTimeout for TCP and CTAnyTimeout otherwise. 0 means the
	// DefaultCT*Timeout; else between MinCTTimeout and MaxCTTimeout.
	CTTCPTimeout        time.Duration
	CTSYNTimeout        time.Duration
	CTTCPClosingTimeout time.Duration
	CTAnyTimeout        time.Duration
	Logger              *slog.Logger
}

// Defaults of the NAT and connection-tracking settings when their Config
// fields are 0.
const (
	DefaultNATEntries          = 65536
	DefaultNATPortMin          = 61000
	DefaultNATPortMax          = 65535
	DefaultCTTCPTimeout        = time.Hour
	DefaultCTSYNTimeout        = time.Minute
	DefaultCTTCPClosingTimeout = 10 * time.Second
	DefaultCTAnyTimeout        = 5 * time.Minute
)

// Bounds of the Config.CT*Timeout fields. The programs refresh an entry's
// time at most once a second, so a shorter lifetime would end busy
// connections.
const (
	MinCTTimeout = 2 * time.Second
	MaxCTTimeout = 7 * 24 * time.Hour
)

// natPorts is the NAT port range cfg asks for, defaults filled in.
func (c Config) natPorts() (lo, hi int) {
	if c.NATPortMin == 0 && c.NATPortMax == 0 {
		return DefaultNATPortMin, DefaultNATPortMax
	}
	return c.NATPortMin, c.NATPortMax
}

// ctTimeouts are the connection-tracking lifetimes cfg asks for, defaults
// filled in.
type ctTimeouts struct{ tcp, syn, closing, other time.Duration }

func (c Config) ctTimeouts() ctTimeouts {
	or := func(v, d time.Duration) time.Duration {
		if v == 0 {
			return d
		}
		return v
	}
	return ctTimeouts{
		tcp:     or(c.CTTCPTimeout, DefaultCTTCPTimeout),
		syn:     or(c.CTSYNTimeout, DefaultCTSYNTimeout),
		closing: or(c.CTTCPClosingTimeout, DefaultCTTCPClosingTimeout),
		other:   or(c.CTAnyTimeout, DefaultCTAnyTimeout),
	}
}

// Sizes of the service maps when their Config fields are 0.
const (
	DefaultServiceEntries  = 65536
	DefaultBackendEntries  = 65536
	DefaultAffinityEntries = 65536
)

// DefaultCTEntries is the connection-tracking table's size when
// Config.CTEntries is 0.
const DefaultCTEntries = 65536

// DefaultConfig returns the configuration of a node with one underlay
// interface eth0 in VXLAN mode; UnderlayIPv4 must still be set.
func DefaultConfig() Config {
	return Config{
		PinDir:              "/sys/fs/bpf/fabric",
		Mode:                ModeVXLAN,
		UnderlayIfName:      "eth0",
		VXLANIfName:         "fabric_vxlan",
		GenevePort:          6081,
		CTEntries:           DefaultCTEntries,
		ServiceEntries:      DefaultServiceEntries,
		BackendEntries:      DefaultBackendEntries,
		AffinityEntries:     DefaultAffinityEntries,
		NATEntries:          DefaultNATEntries,
		NATPortMin:          DefaultNATPortMin,
		NATPortMax:          DefaultNATPortMax,
		CTTCPTimeout:        DefaultCTTCPTimeout,
		CTSYNTimeout:        DefaultCTSYNTimeout,
		CTTCPClosingTimeout: DefaultCTTCPClosingTimeout,
		CTAnyTimeout:        DefaultCTAnyTimeout,
	}
}

// Validate says what is wrong with c, if anything.
func (c Config) Validate() error {
	var errs []error
	if c.PinDir == "" || !filepath.IsAbs(c.PinDir) {
		errs = append(errs, fmt.Errorf("pin dir %q must be an absolute path on a bpffs mount", c.PinDir))
	}
	switch c.Mode {
	case ModeVXLAN, ModeGeneve, ModeNative:
	default:
		errs = append(errs, fmt.Errorf("mode %q is not a datapath mode; use vxlan, geneve or native", c.Mode))
	}
	if c.UnderlayIfName == "" {
		errs = append(errs, errors.New("underlay interface name is empty"))
	}
	if !c.UnderlayIPv4.Is4() {
		errs = append(errs, fmt.Errorf("underlay IPv4 address %v is not an IPv4 address", c.UnderlayIPv4))
	}
	if c.UnderlayIPv6.IsValid() && !c.UnderlayIPv6.Is6() {
		errs = append(errs, fmt.Errorf("underlay IPv6 address %v is not an IPv6 address", c.UnderlayIPv6))
	}
	if c.Mode == ModeVXLAN && c.VXLANIfName == "" {
		errs = append(errs, errors.New("vxlan mode needs the VXLAN device's name"))
	}
	if c.GenevePort <= 0 || c.GenevePort > 65535 {
		errs = append(errs, fmt.Errorf("geneve port %d is out of range 1..65535", c.GenevePort))
	}
	if c.CTEntries < 0 || c.CTEntries > 1<<24 {
		errs = append(errs, fmt.Errorf("conntrack entries %d are out of range 0..%d (0: %d)", c.CTEntries, 1<<24, DefaultCTEntries))
	}
	for _, n := range []struct {
		name     string
		v, deflt int
	}{{"ServiceEntries", c.ServiceEntries, DefaultServiceEntries}, {"BackendEntries", c.BackendEntries, DefaultBackendEntries},
		{"AffinityEntries", c.AffinityEntries, DefaultAffinityEntries}, {"NATEntries", c.NATEntries, DefaultNATEntries}} {
		if n.v < 0 || n.v > 1<<24 {
			errs = append(errs, fmt.Errorf("%s %d is out of range 0..%d (0: %d)", n.name, n.v, 1<<24, n.deflt))
		}
	}
	if c.NATPortMin != 0 || c.NATPortMax != 0 {
		if c.NATPortMin < 1024 || c.NATPortMax > 65535 || c.NATPortMin > c.NATPortMax {
			errs = append(errs, fmt.Errorf("NATPortMin..NATPortMax %d..%d is not a port range within 1024..65535; set both (min <= max) or both 0 for %d..%d",
				c.NATPortMin, c.NATPortMax, DefaultNATPortMin, DefaultNATPortMax))
		}
	}
	for _, t := range []struct {
		name string
		v    time.Duration
	}{{"CTTCPTimeout", c.CTTCPTimeout}, {"CTSYNTimeout", c.CTSYNTimeout},
		{"CTTCPClosingTimeout", c.CTTCPClosingTimeout}, {"CTAnyTimeout", c.CTAnyTimeout}} {
		if t.v != 0 && (t.v < MinCTTimeout || t.v > MaxCTTimeout) {
			errs = append(errs, fmt.Errorf("%s %v is out of range %v..%v; use 0 for the default", t.name, t.v, MinCTTimeout, MaxCTTimeout))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("datapath config: %w", err)
	}
	return nil
}

// Endpoint is a workload attachment on this node.
type Endpoint struct {
	IPs         []netip.Addr
	HostIfIndex int              // host side of the workload's veth
	HostMAC     net.HardwareAddr // the host side's MAC: the workload's gateway
	MAC         net.HardwareAddr // the workload interface's MAC
	Identity    uint32
	// Policy is what the endpoint may send and receive; the zero value
	// enforces nothing.
	Policy EndpointPolicy
}

// Direction is the direction of traffic relative to a local endpoint.
type Direction uint8

const (
	Ingress Direction = 0 // traffic to the endpoint
	Egress  Direction = 1 // traffic from the endpoint
)

func (d Direction) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

// IANA protocol numbers PolicyEntry.Proto knows ports (or ICMP types) of.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// MaxPortRange is the most ports (or ICMP types) one PolicyEntry may span:
// ranges are expanded into one map entry per port.
const MaxPortRange = 1024

// PolicyEntry is one verdict of an endpoint for a peer and an L4 match.
type PolicyEntry struct {
	Direction Direction
	// Identity is the peer's (the source on ingress, the destination on
	// egress); 0 is any peer. Destinations outside the cluster, and
	// sources the ipcache does not know, have identity 2 (world).
	Identity uint32
	// Proto is the IANA protocol number, 0 for any. With ports, any
	// protocol means TCP, UDP and SCTP.
	Proto uint8
	// PortLo..PortHi is the destination port range, 0..0 for any port;
	// for ICMP and ICMPv6 it holds the message type (so type 0, the echo
	// reply, can only be matched as any type). At most MaxPortRange
	// ports; port 0 cannot be matched on its own.
	PortLo, PortHi uint16
	// Deny drops what the entry matches, whatever an Allow entry says.
	Deny bool
}

// EndpointPolicy is the policy of one endpoint. A direction that is not
// enforced lets everything pass but what a Deny entry matches; an enforced
// one drops all that no Allow entry matches. Replies and later packets of a
// connection that passed either direction pass too (connection tracking).
type EndpointPolicy struct {
	IngressEnforced, EgressEnforced bool
	Entries                         []PolicyEntry
}

// IPCacheEntry tells the datapath what it needs to know about an address
// or prefix elsewhere in the cluster: a remote endpoint (/32, /128) with its
// identity and node, or a node's pod CIDR with its node.
type IPCacheEntry struct {
	Prefix   netip.Prefix
	Identity uint32 // 0: unknown, treated as world
	// Node is the tunnel endpoint (overlay modes: an IPv4 underlay
	// address) or the nexthop (native mode: either family; an IPv6 nexthop
	// for IPv6 prefixes where the node has one). Invalid for none.
	Node netip.Addr
}

// Backend is one address and port a service frontend forwards to.
type Backend struct {
	Addr netip.AddrPort
}

// Service is one frontend of a service: a virtual address, port and
// protocol (a cluster IP, a load-balancer or external IP, or for a node
// port the node's own address) and the backends behind it.
type Service struct {
	Frontend netip.AddrPort
	Proto    uint8 // ProtoTCP or ProtoUDP
	// Backends are of the frontend's family. A frontend without backends
	// drops what is sent to it (reason "no service backend").
	Backends []Backend
	// Maglev is the lookup table: each slot is an index into Backends.
	// Its length (a prime) is the table size; a connection's first packet
	// picks the slot by hashing its 5-tuple, so every node picks the same
	// backend for it. Empty when Backends is.
	Maglev []uint16
	// AffinityTimeout, when not 0, sends a client address's new
	// connections to the backend its last one used, until the client has
	// been idle that long (ClientIP session affinity).
	AffinityTimeout time.Duration
	// External frontends (node ports, load-balancer and external IPs) are
	// also served to traffic arriving from outside the cluster on the
	// underlay interface; others only to local workloads.
	External bool
}

// State is the whole desired content of the datapath.
type State struct {
	Endpoints []Endpoint
	IPCache   []IPCacheEntry
	Services  []Service
}
