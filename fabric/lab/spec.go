package lab

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Limits that keep names and addresses inside the plan (10.99.c.(10+k)).
const (
	MaxClusters = 16
	MaxNodes    = 99
)

// Spec describes a lab to build.
type Spec struct {
	// Name is unique per machine; it prefixes every namespace (fl-<name>-).
	Name string
	// Clusters (default 1), Nodes per cluster (default 3) and Servers per
	// cluster (default min(3, Nodes), made odd so Raft keeps a majority).
	Clusters, Nodes, Servers int
	// Binary is the fabric binary run as the agent; default os.Executable().
	Binary string
	// AgentConfig is merged over the generated agent.yaml of every node (and
	// wins), e.g. {"cidrReleaseGrace": "3s"} to shorten timers in tests.
	AgentConfig map[string]any
	// Timeout bounds the wait for every node to be ready (default 90s).
	Timeout time.Duration
	// Dir is the base directory of all labs (default DefaultDir).
	Dir string
	// NoAgents builds only the namespaces and links, without agents.
	NoAgents bool
	// Mode is the agents' datapathMode: vxlan (default), geneve, native,
	// or none for a control-plane-only lab (no bpffs, no workloads).
	Mode string
	// Workloads per node (default 0) are created through the CNI plugin
	// once the agents are ready; the CLI asks for 2 unless told otherwise.
	Workloads int
	// Racks splits each cluster's nodes over that many segments (default
	// 1), each its own subnet behind the router: node k is in rack
	// (k-1)%Racks+1. Nodes in different racks reach each other only
	// through the router.
	Racks int
	// BGP runs FRR as the router (AS 64512) and gives every agent a BGP
	// speaker peering with its rack's router address (node k of cluster c
	// is AS 65000+100c+k): pod CIDRs and load-balancer IPs are routed by
	// what the nodes announce.
	BGP bool
}

// MaxRacks bounds Spec.Racks.
const MaxRacks = 4

// RouterASN is the lab router's AS number when Spec.BGP is set.
const RouterASN = 64512

// NodeASN is the AS number of node k of cluster c in a BGP lab.
func NodeASN(c, k int) uint32 { return uint32(65000 + 100*c + k) }

// Modes are the datapath modes a lab can run, as the agent names them.
var Modes = []string{"vxlan", "geneve", "native", "none"}

// MaxWorkloads bounds Spec.Workloads: the check matrix grows with its
// square.
const MaxWorkloads = 16

// WithDefaults returns s with every zero field set to its default.
func (s Spec) WithDefaults() Spec {
	if s.Clusters == 0 {
		s.Clusters = 1
	}
	if s.Nodes == 0 {
		s.Nodes = 3
	}
	if s.Servers == 0 {
		s.Servers = min(3, s.Nodes)
		if s.Servers%2 == 0 {
			s.Servers--
		}
	}
	if s.Timeout == 0 {
		s.Timeout = 90 * time.Second
	}
	if s.Dir == "" {
		s.Dir = DefaultDir
	}
	if s.Mode == "" {
		s.Mode = "vxlan"
	}
	if s.Racks == 0 {
		s.Racks = 1
	}
	return s
}

// Validate checks a spec after WithDefaults; each error names the flag and
// the fix, and all problems are reported together.
func (s Spec) Validate() error {
	var errs []error
	if err := ValidateName(s.Name); err != nil {
		errs = append(errs, err)
	}
	if s.Clusters < 1 || s.Clusters > MaxClusters {
		errs = append(errs, fmt.Errorf("--clusters: %d is out of range: use 1..%d", s.Clusters, MaxClusters))
	}
	if s.Nodes < 1 || s.Nodes > MaxNodes {
		errs = append(errs, fmt.Errorf("--nodes: %d is out of range: use 1..%d", s.Nodes, MaxNodes))
	}
	if s.Servers < 1 || s.Servers > s.Nodes {
		errs = append(errs, fmt.Errorf("--servers: %d is out of range: use 1..%d (the nodes per cluster)", s.Servers, s.Nodes))
	} else if s.Servers%2 == 0 {
		errs = append(errs, fmt.Errorf("--servers: %d cannot keep a Raft majority through a failure any better than %d: use an odd number", s.Servers, s.Servers-1))
	}
	if !slices.Contains(Modes, s.Mode) {
		errs = append(errs, fmt.Errorf("--mode: %q is unknown: use %s", s.Mode, strings.Join(Modes, ", ")))
	}
	switch {
	case s.Workloads < 0 || s.Workloads > MaxWorkloads:
		errs = append(errs, fmt.Errorf("--workloads: %d is out of range: use 0..%d per node", s.Workloads, MaxWorkloads))
	case s.Workloads > 0 && s.NoAgents:
		errs = append(errs, fmt.Errorf("--workloads: workloads need agents: drop --no-agents or use --workloads 0"))
	case s.Workloads > 0 && s.Mode == "none":
		errs = append(errs, fmt.Errorf("--workloads: workloads need a datapath: use --mode vxlan, geneve or native, or --workloads 0"))
	}
	if s.Racks < 1 || s.Racks > MaxRacks || s.Racks > s.Nodes {
		errs = append(errs, fmt.Errorf("--racks: %d is out of range: use 1..%d, at most the nodes per cluster", s.Racks, MaxRacks))
	}
	if s.BGP && (s.NoAgents || s.Mode == "none") {
		errs = append(errs, fmt.Errorf("--bgp: BGP needs agents with a datapath: drop --no-agents and use --mode vxlan, geneve or native"))
	}
	if s.Timeout < 0 {
		errs = append(errs, fmt.Errorf("--timeout: %s is negative: use e.g. 90s", s.Timeout))
	}
	// The longest socket path is that of the last node; the kernel limit
	// is 108 bytes and we keep a margin.
	if sock := nodeDir(s.Dir, s.Name, nodeName(s.Clusters, s.Nodes)) + "/api.sock"; len(sock) >= 100 {
		errs = append(errs, fmt.Errorf("--dir: socket path %s is %d bytes, unix sockets need under 100: use a shorter --dir", sock, len(sock)))
	}
	return errors.Join(errs...)
}
