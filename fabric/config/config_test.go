package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

const testKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes

func valid() Config {
	c := DefaultConfig()
	c.NodeName = "n1"
	c.Underlay = []string{"10.0.0.11"}
	c.Server = true
	c.GossipKeys = []string{testKey}
	return c
}

func TestValidateAcceptsDefaultsWithNodeFields(t *testing.T) {
	if err := valid().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesFieldAndFix(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Config)
		field  string
	}{
		{"cluster id zero", func(c *Config) { c.ClusterID = 0 }, "clusterID"},
		{"cluster id too big", func(c *Config) { c.ClusterID = 70000 }, "clusterID"},
		{"bad cluster name", func(c *Config) { c.ClusterName = "Prod_1" }, "clusterName"},
		{"no underlay", func(c *Config) { c.Underlay = nil }, "underlay"},
		{"underlay not an IP", func(c *Config) { c.Underlay = []string{"node1"} }, "underlay"},
		{"even servers", func(c *Config) { c.BootstrapExpect = 2 }, "bootstrapExpect"},
		{"client without join", func(c *Config) { c.Server = false; c.Join = nil }, "join"},
		{"bad join", func(c *Config) { c.Join = []string{"10.0.0.1:x"} }, "join"},
		{"no key", func(c *Config) { c.GossipKeys = nil }, "gossipKeys"},
		{"short key", func(c *Config) { c.GossipKeys = []string{"YWJj"} }, "gossipKeys[0]"},
		{"port clash", func(c *Config) { c.RaftPort = c.GossipPort }, "raftPort"},
		{"pool not a cidr", func(c *Config) { c.PodPools = []string{"10.0.0.0"} }, "podPools"},
		{"pool host bits", func(c *Config) { c.PodPools = []string{"10.0.0.1/16"} }, "podPools"},
		{"service cidr", func(c *Config) { c.ServiceCIDRs = []string{"10.96.0.0"} }, "serviceCIDRs"},
		{"two v4 service cidrs", func(c *Config) { c.ServiceCIDRs = []string{"10.96.0.0/16", "10.97.0.0/16"} }, "serviceCIDRs"},
		{"node port range", func(c *Config) { c.NodePortRange = "32767-30000" }, "nodePortRange"},
		{"maglev not prime", func(c *Config) { c.MaglevTableSize = 1000 }, "maglevTableSize"},
		{"node label", func(c *Config) { c.NodeLabels = []string{"rack"} }, "nodeLabels"},
		{"ct timeout", func(c *Config) { c.Conntrack.TCPTimeout = time.Second }, "conntrack.tcpTimeout"},
		{"bgp asn", func(c *Config) { c.BGP.Peers = []BGPPeer{{Address: "10.0.0.1", RemoteASN: 64512}} }, "bgp.localASN"},
		{"bgp peer address", func(c *Config) {
			c.BGP.LocalASN = 65001
			c.BGP.Peers = []BGPPeer{{Address: "router", RemoteASN: 64512}}
		}, "bgp.peers[0].address"},
		{"mask", func(c *Config) { c.NodeMaskV4 = 31 }, "nodeMaskV4"},
		{"grace", func(c *Config) { c.CIDRGrace = 0 }, "cidrReleaseGrace"},
		{"mode", func(c *Config) { c.DatapathMode = "ipip" }, "datapathMode"},
		{"mtu", func(c *Config) { c.UnderlayMTU = 500 }, "underlayMTU"},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, "logLevel"},
		{"long socket", func(c *Config) { c.Socket = "/" + strings.Repeat("s", 120) }, "socket"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.field+":") {
				t.Errorf("error does not name %s: %v", tc.field, err)
			}
			if !strings.ContainsAny(err.Error(), ":") || len(err.Error()) < 20 {
				t.Errorf("error too terse to say the fix: %v", err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := valid()
	c.ClusterID = 0
	c.Underlay = nil
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "clusterID") || !strings.Contains(err.Error(), "underlay") {
		t.Fatalf("want both problems, got %v", err)
	}
}

func TestLoadPrecedenceFileEnvFlags(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	yaml := "clusterName: fromfile\nclusterID: 7\nnodeName: filenode\nunderlay: [10.0.0.1]\njoin: [10.0.0.2, 10.0.0.3]\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"FABRIC_CONFIG": path, "FABRIC_CLUSTER_ID": "9", "FABRIC_JOIN": "10.0.0.4", "FABRIC_NODE_NAME": "envnode"}
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	scratch := DefaultConfig()
	Register(fs, &scratch)
	if err := fs.Parse([]string{"--node-name", "flagnode", "--join", "10.0.0.5,10.0.0.6"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(fs, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.ClusterName != "fromfile" {
		t.Errorf("file value lost: clusterName %q", c.ClusterName)
	}
	if c.ClusterID != 9 {
		t.Errorf("env should beat the file: clusterID %d", c.ClusterID)
	}
	if c.NodeName != "flagnode" {
		t.Errorf("flag should beat env: nodeName %q", c.NodeName)
	}
	if strings.Join(c.Join, ",") != "10.0.0.5,10.0.0.6" {
		t.Errorf("flag slice should replace, not append: join %v", c.Join)
	}
}

func TestLoadYAMLRejectsUnknownKeys(t *testing.T) {
	c := DefaultConfig()
	err := c.LoadYAML([]byte("clusterNmae: typo\n"))
	if err == nil || !strings.Contains(err.Error(), "clusterNmae") {
		t.Fatalf("typo not reported: %v", err)
	}
}

func TestLoadYAMLEmptyKeepsDefaults(t *testing.T) {
	c := DefaultConfig()
	if err := c.LoadYAML(nil); err != nil {
		t.Fatal(err)
	}
	if c.GossipPort != DefaultGossipPort {
		t.Fatal("defaults lost")
	}
}

// FuzzLoadYAML: a config file is outside input; loading must never panic,
// and whatever loads must either validate or say why.
func FuzzLoadYAML(f *testing.F) {
	f.Add([]byte("clusterName: a\nclusterID: 1\nnodeName: n\nunderlay: [10.0.0.1]\n"))
	f.Add([]byte("podPools: [10.0.0.0/8, 'fd00::/64']\ncidrReleaseGrace: 5m\n"))
	f.Add([]byte("join: {a: b}\n"))
	f.Add([]byte("clusterID: -1\n"))
	f.Add([]byte("\xff\xfe"))
	f.Add([]byte("&a [*a, *a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := DefaultConfig()
		if err := c.LoadYAML(data); err != nil {
			return
		}
		if err := c.Validate(); err != nil && err.Error() == "" {
			t.Fatal("validation error without a message")
		}
	})
}
