package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/fabric-net/fabric/gossip"
)

// Register defines the agent's flags on fs, bound to c, with c's current
// values as defaults.
func Register(fs *pflag.FlagSet, c *Config) {
	fs.String("config", "", "YAML configuration file (flags and FABRIC_* variables override it)")
	fs.StringVar(&c.ClusterName, "cluster-name", c.ClusterName, "cluster name, the same on every node of the cluster")
	fs.Uint32Var(&c.ClusterID, "cluster-id", c.ClusterID, "cluster ID (1..65535), unique across meshed clusters")
	fs.StringVar(&c.NodeName, "node-name", c.NodeName, "this node's name, unique in the cluster")
	fs.StringSliceVar(&c.Underlay, "underlay", c.Underlay, "this node's underlay address(es); the first one is used for the control plane")
	fs.BoolVar(&c.Server, "server", c.Server, "make this node a store server (Raft voter)")
	fs.IntVar(&c.BootstrapExpect, "bootstrap-expect", c.BootstrapExpect, "number of servers to wait for before bootstrapping the store (1, 3 or 5)")
	fs.StringSliceVar(&c.Join, "join", c.Join, "addresses (IP or IP:port) of nodes to join through gossip")
	fs.StringSliceVar(&c.GossipKeys, "gossip-key", c.GossipKeys, "base64 gossip encryption key(s); the first encrypts (see `fabric keygen`)")
	fs.IntVar(&c.GossipPort, "gossip-port", c.GossipPort, "gossip port (TCP and UDP)")
	fs.IntVar(&c.RaftPort, "raft-port", c.RaftPort, "Raft transport port (servers)")
	fs.IntVar(&c.APIPort, "api-port", c.APIPort, "store RPC port (mutual TLS)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for the store's log and snapshots")
	fs.StringVar(&c.Socket, "socket", c.Socket, "local API unix socket")
	fs.StringSliceVar(&c.PodPools, "pod-pool", c.PodPools, "cluster pod address pools (CIDR, IPv4 and/or IPv6)")
	fs.IntVar(&c.NodeMaskV4, "node-mask-v4", c.NodeMaskV4, "prefix length of each node's IPv4 pod CIDR")
	fs.IntVar(&c.NodeMaskV6, "node-mask-v6", c.NodeMaskV6, "prefix length of each node's IPv6 pod CIDR")
	fs.DurationVar(&c.CIDRGrace, "cidr-release-grace", c.CIDRGrace, "how long a node may be gone before its pod CIDR is released")
	fs.DurationVar(&c.IdentityGC, "identity-gc-grace", c.IdentityGC, "how long an identity may be unused before it is released")
	fs.StringSliceVar(&c.ServiceCIDRs, "service-cidr", c.ServiceCIDRs, "where cluster IPs come from (at most one IPv4 and one IPv6 CIDR)")
	fs.StringVar(&c.NodePortRange, "node-port-range", c.NodePortRange, "ports for NodePort services, min-max")
	fs.IntVar(&c.MaglevTableSize, "maglev-table-size", c.MaglevTableSize, "Maglev table size of each service (a prime, >= 100x its backends); the same on every node")
	fs.BoolVar(&c.Masquerade, "masquerade", c.Masquerade, "give workload traffic leaving the cluster the node's address")
	fs.BoolVar(&c.L2Announcements, "l2-announcements", c.L2Announcements, "answer ARP/NDP for the load-balancer IPs this node owns")
	fs.StringSliceVar(&c.NodeLabels, "node-label", c.NodeLabels, "this node's labels, key=value (repeatable)")
	fs.StringVar(&c.DatapathMode, "datapath-mode", c.DatapathMode, "vxlan, geneve, native, or none (control plane only); the same on every node")
	fs.StringVar(&c.UnderlayInterface, "underlay-interface", c.UnderlayInterface, "interface that carries workload traffic between nodes")
	fs.IntVar(&c.UnderlayMTU, "underlay-mtu", c.UnderlayMTU, "MTU of the underlay interface")
	fs.StringVar(&c.BPFPinDir, "bpf-pin-dir", c.BPFPinDir, "this node's folder on a bpffs for pinned maps and links")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "IP:port for Prometheus metrics (empty: off)")
	fs.DurationVar(&c.ShutdownWait, "shutdown-wait", c.ShutdownWait, "how long a clean shutdown may take")
}

// EnvName is the environment variable that sets a flag.
func EnvName(flag string) string {
	return "FABRIC_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Load builds the configuration from defaults, then the file named by
// --config (or FABRIC_CONFIG), then FABRIC_* variables, then the flags set
// on the command line in parsed. It does not validate.
func Load(parsed *pflag.FlagSet, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg := DefaultConfig()
	path := getenv("FABRIC_CONFIG")
	if f := parsed.Lookup("config"); f != nil && f.Changed {
		path = f.Value.String()
	}
	if path != "" {
		if err := cfg.LoadFile(path); err != nil {
			return cfg, err
		}
	}
	final := pflag.NewFlagSet("final", pflag.ContinueOnError)
	Register(final, &cfg)
	// Each flag is set once from its strongest source: a second Set on a
	// slice flag would append instead of replace.
	values := map[string]string{}
	from := map[string]string{}
	final.VisitAll(func(f *pflag.Flag) {
		if v := getenv(EnvName(f.Name)); v != "" && f.Name != "config" {
			values[f.Name], from[f.Name] = v, EnvName(f.Name)
		}
	})
	parsed.Visit(func(f *pflag.Flag) {
		if f.Name == "config" || final.Lookup(f.Name) == nil {
			return
		}
		v := f.Value.String()
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			v = strings.Join(sv.GetSlice(), ",")
		}
		values[f.Name], from[f.Name] = v, "--"+f.Name
	})
	for name, v := range values {
		if err := final.Set(name, v); err != nil {
			return cfg, fmt.Errorf("%s: %w", from[name], err)
		}
	}
	return cfg, nil
}

// Keys returns the decoded gossip keys; call after Validate.
func (c Config) Keys() [][]byte {
	var out [][]byte
	for _, s := range c.GossipKeys {
		if k, err := gossip.ParseKey(s); err == nil {
			out = append(out, k)
		}
	}
	return out
}
