// Package config holds the agent's configuration: one struct loaded once from
// a YAML file, FABRIC_* environment variables and command-line flags (in that
// order of precedence, lowest first), validated once, then handed down to
// every subsystem as plain values. It knows nothing of how the values are
// used.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fabric-net/fabric/bgp"

	"github.com/fabric-net/fabric/gossip"
)

// Config is the whole agent configuration. YAML keys are shown in the tags;
// the environment variable of a field is FABRIC_ plus its flag name in upper
// case with dashes as underscores (e.g. FABRIC_CLUSTER_ID).
type Config struct {
	ClusterName string `yaml:"clusterName"`
	ClusterID   uint32 `yaml:"clusterID"`
	NodeName    string `yaml:"nodeName"`
	// Underlay lists the node's underlay addresses; the first is used to
	// bind gossip, the store RPC and Raft.
	Underlay []string `yaml:"underlay"`
	// Server makes the node a Raft voter.
	Server          bool     `yaml:"server"`
	BootstrapExpect int      `yaml:"bootstrapExpect"`
	Join            []string `yaml:"join"`
	// GossipKeys are base64 AES keys (16, 24 or 32 bytes); the first one
	// encrypts, all of them decrypt, which is how a key is rotated.
	GossipKeys []string `yaml:"gossipKeys"`
	GossipPort int      `yaml:"gossipPort"`
	RaftPort   int      `yaml:"raftPort"`
	APIPort    int      `yaml:"apiPort"`
	DataDir    string   `yaml:"dataDir"`
	// Socket is the local API's unix socket.
	Socket string `yaml:"socket"`
	// PodPools are the cluster's pod address pools (IPv4 and/or IPv6).
	PodPools   []string      `yaml:"podPools"`
	NodeMaskV4 int           `yaml:"nodeMaskV4"`
	NodeMaskV6 int           `yaml:"nodeMaskV6"`
	CIDRGrace  time.Duration `yaml:"cidrReleaseGrace"`
	IdentityGC time.Duration `yaml:"identityGCGrace"`
	// ServiceCIDRs are where cluster IPs are allocated from, at most one
	// per family; a service's cluster IP is of the first one's family
	// unless it asks for another.
	ServiceCIDRs []string `yaml:"serviceCIDRs"`
	// NodePortRange bounds the ports NodePort services get, "min-max".
	NodePortRange string `yaml:"nodePortRange"`
	// MaglevTableSize is the Maglev table size of every service without
	// its own: a prime, at least 100 times the most backends a service
	// has. The same on every node.
	MaglevTableSize int `yaml:"maglevTableSize"`
	// Masquerade gives workload traffic leaving the cluster the node's
	// address (off where the network routes the pod pools itself, e.g.
	// when BGP announces them).
	Masquerade bool `yaml:"masquerade"`
	// L2Announcements makes the node answer ARP and NDP for the
	// load-balancer and external IPs it owns (see fabric l2-policy).
	L2Announcements bool `yaml:"l2Announcements"`
	// NodeLabels are this node's labels ("key=value"), for the node
	// selectors of L2 announcement policies.
	NodeLabels []string `yaml:"nodeLabels"`
	// Conntrack sizes and times out the datapath's connection tracking.
	Conntrack Conntrack `yaml:"conntrack"`
	// BGP, when LocalASN is set, runs a BGP speaker that announces the
	// node's pod CIDRs and the load-balancer IPs it serves to the peers
	// (top-of-rack routers), and learns the routes to other nodes' pods.
	BGP BGP `yaml:"bgp"`
	// DatapathMode is how workload traffic crosses nodes: vxlan, geneve,
	// native, or none (control plane only). The same in the whole cluster.
	DatapathMode string `yaml:"datapathMode"`
	// UnderlayInterface carries the overlay or natively routed traffic.
	UnderlayInterface string `yaml:"underlayInterface"`
	// UnderlayMTU is the underlay interface's MTU; workloads get it minus
	// the encapsulation overhead.
	UnderlayMTU int `yaml:"underlayMTU"`
	// BPFPinDir is this node's folder on a bpffs: maps and links pinned
	// there keep traffic flowing while the agent restarts.
	BPFPinDir    string        `yaml:"bpfPinDir"`
	LogLevel     string        `yaml:"logLevel"`
	LogFormat    string        `yaml:"logFormat"`
	MetricsAddr  string        `yaml:"metricsAddr"`
	ShutdownWait time.Duration `yaml:"shutdownWait"`
}

// Default values, exported so the CLI help and the docs show the same ones.
const (
	DefaultGossipPort = 7946
	DefaultRaftPort   = 7947
	DefaultAPIPort    = 7948
	DefaultDataDir    = "/var/lib/fabric"
	DefaultSocket     = "/run/fabric/fabric.sock"
)

// DefaultConfig returns a configuration that Validate accepts once the
// node-specific fields (cluster name and ID, node name, underlay, gossip key)
// are filled in.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		ClusterName:       "default",
		ClusterID:         1,
		NodeName:          host,
		BootstrapExpect:   1,
		GossipPort:        DefaultGossipPort,
		RaftPort:          DefaultRaftPort,
		APIPort:           DefaultAPIPort,
		DataDir:           DefaultDataDir,
		Socket:            DefaultSocket,
		PodPools:          []string{"10.200.0.0/16", "fd00:200::/104"},
		NodeMaskV4:        24,
		NodeMaskV6:        120,
		CIDRGrace:         5 * time.Minute,
		IdentityGC:        10 * time.Minute,
		ServiceCIDRs:      []string{"10.96.0.0/16", "fd00:96::/112"},
		NodePortRange:     "30000-32767",
		MaglevTableSize:   16381,
		Masquerade:        true,
		DatapathMode:      "vxlan",
		UnderlayInterface: "eth0",
		UnderlayMTU:       1500,
		BPFPinDir:         "/sys/fs/bpf/fabric",
		LogLevel:          "info",
		LogFormat:         "text",
		ShutdownWait:      5 * time.Second,
	}
}

// LoadFile merges a YAML file into c. Unknown keys are an error, so a typo
// never silently falls back to a default.
func (c *Config) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	return c.LoadYAML(data)
}

// LoadYAML merges YAML bytes into c; see LoadFile.
func (c *Config) LoadYAML(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("config file: %w (keys are camelCase as in `fabric agent --help`'s YAML names)", err)
	}
	return nil
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)
)

// Validate checks every field once, at start. Each error names the field and
// how to fix it; all problems are reported together.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !nameRE.MatchString(c.ClusterName) {
		bad("clusterName", "%q is not a valid name: use 1-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit", c.ClusterName)
	}
	if c.ClusterID < 1 || c.ClusterID > 65535 {
		bad("clusterID", "%d is out of range: use 1..65535, unique across every cluster you will mesh", c.ClusterID)
	}
	if !nameRE.MatchString(c.NodeName) {
		bad("nodeName", "%q is not a valid name: use 1-63 lowercase letters, digits, '-' or '.' (defaults to the hostname)", c.NodeName)
	}
	if len(c.Underlay) == 0 {
		bad("underlay", "no underlay address: set --underlay to the node's address on the cluster network")
	}
	for _, u := range c.Underlay {
		a, err := netip.ParseAddr(u)
		if err != nil {
			bad("underlay", "%q is not an IP address: use e.g. 10.0.0.11", u)
			continue
		}
		if a.IsUnspecified() || a.IsMulticast() {
			bad("underlay", "%s cannot be a node address: use the node's unicast address", a)
		}
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > 7 {
		bad("bootstrapExpect", "%d is out of range: use 1, 3 or 5 (the number of servers)", c.BootstrapExpect)
	} else if c.Server && c.BootstrapExpect%2 == 0 {
		bad("bootstrapExpect", "%d servers cannot keep a majority through a failure any better than %d: use an odd number (1, 3 or 5)", c.BootstrapExpect, c.BootstrapExpect-1)
	}
	if !c.Server && len(c.Join) == 0 {
		bad("join", "a node that is not a server needs at least one join address: set --join to a server's underlay address")
	}
	for _, j := range c.Join {
		if _, err := netip.ParseAddrPort(j); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(j); err != nil {
			bad("join", "%q is neither an IP nor IP:port: use e.g. 10.0.0.11 or 10.0.0.11:7946", j)
		}
	}
	if len(c.GossipKeys) == 0 {
		bad("gossipKeys", "no gossip key: generate one with `fabric keygen` and give every node of the cluster the same key")
	}
	for i, k := range c.GossipKeys {
		if _, err := gossip.ParseKey(k); err != nil {
			bad(fmt.Sprintf("gossipKeys[%d]", i), "%v", err)
		}
	}
	ports := map[string]int{"gossipPort": c.GossipPort, "raftPort": c.RaftPort, "apiPort": c.APIPort}
	seen := map[int]string{}
	for _, f := range []string{"gossipPort", "raftPort", "apiPort"} {
		p := ports[f]
		if p < 1 || p > 65535 {
			bad(f, "%d is not a port: use 1..65535", p)
			continue
		}
		if other, dup := seen[p]; dup {
			bad(f, "%d is also %s: give each listener its own port", p, other)
		}
		seen[p] = f
	}
	if c.DataDir == "" {
		bad("dataDir", "empty: set it to a directory that survives reboots, e.g. %s", DefaultDataDir)
	}
	if c.Socket == "" {
		bad("socket", "empty: set it to a unix socket path, e.g. %s", DefaultSocket)
	} else if len(c.Socket) > 100 {
		bad("socket", "path is %d bytes; unix socket paths must be under 108: use a shorter path", len(c.Socket))
	}
	if len(c.PodPools) == 0 {
		bad("podPools", "no pod pool: set at least one, e.g. 10.200.0.0/16")
	}
	for _, p := range c.PodPools {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			bad("podPools", "%q is not a CIDR: use e.g. 10.200.0.0/16 or fd00:200::/104", p)
			continue
		}
		if pfx != pfx.Masked() {
			bad("podPools", "%s has host bits set: use %s", p, pfx.Masked())
		}
	}
	if c.NodeMaskV4 < 8 || c.NodeMaskV4 > 30 {
		bad("nodeMaskV4", "%d is out of range: use 8..30 (24 gives each node 253 endpoint addresses)", c.NodeMaskV4)
	}
	if c.NodeMaskV6 < 64 || c.NodeMaskV6 > 126 {
		bad("nodeMaskV6", "%d is out of range: use 64..126", c.NodeMaskV6)
	}
	if c.CIDRGrace < time.Second {
		bad("cidrReleaseGrace", "%s is too short: a node briefly unreachable would lose its CIDR; use at least 1s (default 5m)", c.CIDRGrace)
	}
	if c.IdentityGC < time.Second {
		bad("identityGCGrace", "%s is too short: use at least 1s (default 10m)", c.IdentityGC)
	}
	families := map[bool]bool{}
	for _, p := range c.ServiceCIDRs {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			bad("serviceCIDRs", "%q is not a CIDR: use e.g. 10.96.0.0/16 or fd00:96::/112", p)
			continue
		}
		if pfx != pfx.Masked() {
			bad("serviceCIDRs", "%s has host bits set: use %s", p, pfx.Masked())
		}
		if families[pfx.Addr().Is4()] {
			bad("serviceCIDRs", "%s is a second CIDR of its family: give at most one IPv4 and one IPv6 CIDR", p)
		}
		families[pfx.Addr().Is4()] = true
	}
	for _, l := range c.NodeLabels {
		if k, _, ok := strings.Cut(l, "="); !ok || k == "" {
			bad("nodeLabels", "%q is not key=value: write e.g. rack=r1", l)
		}
	}
	ct := c.Conntrack
	if ct.Entries < 0 || ct.Entries > 1<<24 {
		bad("conntrack.entries", "%d is out of range: use 0 (the default, 65536) up to %d", ct.Entries, 1<<24)
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"tcpTimeout", ct.TCPTimeout}, {"synTimeout", ct.SYNTimeout}, {"closingTimeout", ct.ClosingTimeout}, {"anyTimeout", ct.AnyTimeout}} {
		if f.d != 0 && (f.d < 2*time.Second || f.d > 7*24*time.Hour) {
			bad("conntrack."+f.name, "%s is out of range: use 2s..168h, or leave it out for the default", f.d)
		}
	}
	if ct.GCInterval != 0 && ct.GCInterval < time.Second {
		bad("conntrack.gcInterval", "%s is too short: use at least 1s (default 30s)", ct.GCInterval)
	}
	if c.BGP.Enabled() {
		u4 := ""
		for _, u := range c.Underlay {
			if a, err := netip.ParseAddr(u); err == nil && a.Is4() {
				u4 = u
				break
			}
		}
		if _, err := c.BGP.Speaker(u4); err != nil {
			msg := err.Error()
			field, rest, _ := strings.Cut(msg, ": ")
			bad(field, "%s", rest)
		}
	}
	if _, _, err := ParsePortRange(c.NodePortRange); err != nil {
		bad("nodePortRange", "%v", err)
	}
	if c.MaglevTableSize < 3 || c.MaglevTableSize > 1<<20 || !isPrime(c.MaglevTableSize) {
		bad("maglevTableSize", "%d is not a prime in 3..1048576: use e.g. 1021, 16381 or 65521 (at least 100 times a service's most backends)", c.MaglevTableSize)
	}
	switch c.DatapathMode {
	case "vxlan", "geneve", "native", "none":
	default:
		bad("datapathMode", "%q is unknown: use vxlan, geneve, native or none (control plane only)", c.DatapathMode)
	}
	if c.DatapathMode != "none" {
		if c.UnderlayInterface == "" || len(c.UnderlayInterface) > 15 {
			bad("underlayInterface", "%q is not an interface name: give the node's underlay interface, e.g. eth0", c.UnderlayInterface)
		}
		if c.UnderlayMTU < 1280 || c.UnderlayMTU > 9216 {
			bad("underlayMTU", "%d is out of range: use the underlay interface's MTU, 1280..9216", c.UnderlayMTU)
		}
		if c.BPFPinDir == "" {
			bad("bpfPinDir", "empty: give a folder on a bpffs, e.g. /sys/fs/bpf/fabric")
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("logLevel", "%q is unknown: use debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("logFormat", "%q is unknown: use text or json", c.LogFormat)
	}
	if c.MetricsAddr != "" {
		if _, err := netip.ParseAddrPort(c.MetricsAddr); err != nil {
			bad("metricsAddr", "%q is not IP:port: use e.g. 127.0.0.1:9962, or leave it empty to disable", c.MetricsAddr)
		}
	}
	return errors.Join(errs...)
}

// ParsePortRange reads "min-max" (or one port) as an inclusive port range.
func ParsePortRange(s string) (lo, hi uint16, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		b = a
	}
	x, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	y, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
	if err1 != nil || err2 != nil || x == 0 || x > y {
		return 0, 0, fmt.Errorf("%q is not a port range: use min-max with 1 <= min <= max <= 65535, e.g. 30000-32767", s)
	}
	return uint16(x), uint16(y), nil
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// Conntrack is the datapath's connection tracking: the table's size, how
// long an idle connection is remembered, and how often expired entries are
// collected. Zero values are the datapath's defaults (1h established TCP,
// 60s unanswered SYN, 10s after FIN/RST, 5m UDP and others; GC every 30s).
type Conntrack struct {
	Entries        int           `yaml:"entries"`
	TCPTimeout     time.Duration `yaml:"tcpTimeout"`
	SYNTimeout     time.Duration `yaml:"synTimeout"`
	ClosingTimeout time.Duration `yaml:"closingTimeout"`
	AnyTimeout     time.Duration `yaml:"anyTimeout"`
	GCInterval     time.Duration `yaml:"gcInterval"`
}

// BGP is the node's BGP speaker configuration (see the bgp package).
type BGP struct {
	LocalASN uint32 `yaml:"localASN"`
	// RouterID defaults to the node's first IPv4 underlay address.
	RouterID    string    `yaml:"routerID"`
	Peers       []BGPPeer `yaml:"peers"`
	Communities []string  `yaml:"communities"`
	LocalPref   uint32    `yaml:"localPref"`
	// AdvertisePodCIDRs (default true) and AdvertiseLoadBalancerIPs
	// (default true) choose what is announced.
	AdvertisePodCIDRs        *bool `yaml:"advertisePodCIDRs"`
	AdvertiseLoadBalancerIPs *bool `yaml:"advertiseLoadBalancerIPs"`
}

// BGPPeer is one BGP neighbour.
type BGPPeer struct {
	Address         string        `yaml:"address"`
	RemoteASN       uint32        `yaml:"remoteASN"`
	LocalASN        uint32        `yaml:"localASN"`
	Port            uint16        `yaml:"port"`
	HoldTime        time.Duration `yaml:"holdTime"`
	Keepalive       time.Duration `yaml:"keepalive"`
	Password        string        `yaml:"password"`
	Multihop        uint8         `yaml:"multihop"`
	GracefulRestart bool          `yaml:"gracefulRestart"`
	RestartTime     time.Duration `yaml:"restartTime"`
}

// Enabled reports whether the node runs a BGP speaker.
func (b BGP) Enabled() bool { return b.LocalASN != 0 || len(b.Peers) > 0 }

// Speaker returns the bgp package's configuration for a node whose first
// IPv4 underlay address is underlay4.
func (b BGP) Speaker(underlay4 string) (bgp.Config, error) {
	c := bgp.DefaultConfig()
	c.LocalASN, c.Communities, c.LocalPref = b.LocalASN, b.Communities, b.LocalPref
	id := cmpOr(b.RouterID, underlay4)
	rid, err := netip.ParseAddr(id)
	if err != nil {
		return c, fmt.Errorf("bgp.routerID: %q is not an IPv4 address: set it, e.g. routerID: 10.0.0.1", id)
	}
	c.RouterID = rid
	for i, p := range b.Peers {
		a, err := netip.ParseAddr(p.Address)
		if err != nil {
			return c, fmt.Errorf("bgp.peers[%d].address: %q is not an IP address: write the router's address, e.g. 10.0.0.1", i, p.Address)
		}
		c.Peers = append(c.Peers, bgp.PeerConfig{Address: a, RemoteASN: p.RemoteASN, LocalASN: p.LocalASN, Port: p.Port,
			HoldTime: p.HoldTime, Keepalive: p.Keepalive, Password: p.Password, Multihop: p.Multihop,
			GracefulRestart: p.GracefulRestart, RestartTime: p.RestartTime})
	}
	return c, c.Validate()
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
