// Package tunnel owns how workload traffic crosses the underlay between
// nodes: the datapath modes (VXLAN, Geneve, native routing), their
// encapsulation overheads and the MTU workloads get, and the kernel overlay
// devices (the flow-based VXLAN device). It knows nothing of policy or
// services, and it does not program eBPF: the bpf package does, given the
// device this package created.
package tunnel

import (
	"fmt"
	"strings"
)

// Mode is how a cluster carries workload traffic between nodes.
type Mode string

const (
	// ModeVXLAN encapsulates in VXLAN through the kernel's flow-based
	// VXLAN device; the VNI carries the source identity.
	ModeVXLAN Mode = "vxlan"
	// ModeGeneve encapsulates in Geneve in eBPF (these kernels have no
	// geneve module); the VNI carries the source identity.
	ModeGeneve Mode = "geneve"
	// ModeNative routes workload addresses on the underlay unencapsulated;
	// the underlay (BGP) must know the pod CIDRs.
	ModeNative Mode = "native"
)

// Modes lists every mode in the order the CLI shows them.
var Modes = []Mode{ModeVXLAN, ModeGeneve, ModeNative}

const (
	// VXLANPort is the UDP port of the VXLAN overlay: the Linux default
	// (8472) rather than IANA's 4789, like the other Linux fabrics, so that
	// a node can also terminate a standard VXLAN network.
	VXLANPort = 8472
	// GenevePort is the IANA port of Geneve.
	GenevePort = 6081
)

// Encapsulation overheads. Both VXLAN and Geneve without options add an
// outer Ethernet-less L3 header, UDP (8), the tunnel header (8) and the
// inner Ethernet header (14); the underlay's Ethernet header is not part of
// its MTU.
const (
	overheadIPv4 = 20 + 8 + 8 + 14 // 50
	overheadIPv6 = 40 + 8 + 8 + 14 // 70
)

// ParseMode parses the value of the --datapath-mode flag.
func ParseMode(s string) (Mode, error) {
	m := Mode(strings.ToLower(strings.TrimSpace(s)))
	for _, known := range Modes {
		if m == known {
			return m, nil
		}
	}
	return "", fmt.Errorf("--datapath-mode %q is not a datapath mode; use one of %s", s, modeList())
}

func modeList() string {
	names := make([]string, len(Modes))
	for i, m := range Modes {
		names[i] = string(m)
	}
	return strings.Join(names, ", ")
}

// Overhead returns the bytes mode m adds to every workload packet on the
// underlay, whose outer header is IPv6 when underlayIPv6 is set.
func Overhead(m Mode, underlayIPv6 bool) int {
	switch m {
	case ModeVXLAN, ModeGeneve:
		if underlayIPv6 {
			return overheadIPv6
		}
		return overheadIPv4
	default:
		return 0
	}
}

// WorkloadMTU returns the MTU a workload interface must have so that its
// largest packet still fits the underlay MTU once encapsulated over an IPv4
// underlay (the only encapsulated underlay the datapath supports today).
func WorkloadMTU(m Mode, underlayMTU int) int {
	return underlayMTU - Overhead(m, false)
}
