package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
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
	Logger      *slog.Logger
}

// DefaultConfig returns the configuration of a node with one underlay
// interface eth0 in VXLAN mode; UnderlayIPv4 must still be set.
func DefaultConfig() Config {
	return Config{
		PinDir:         "/sys/fs/bpf/fabric",
		Mode:           ModeVXLAN,
		UnderlayIfName: "eth0",
		VXLANIfName:    "fabric_vxlan",
		GenevePort:     6081,
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

// State is the whole desired content of the datapath.
type State struct {
	Endpoints []Endpoint
	IPCache   []IPCacheEntry
}
