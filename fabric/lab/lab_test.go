package lab

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fabric-net/fabric/fabric/config"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"dev", true},
		{"a", true},
		{"0", true},
		{"t1a2b3c", true},
		{"lab-1", true},
		{"abcdefghijkl", true},
		{"abcdefghijklm", false}, // 13 characters
		{"", false},
		{"-dev", false},
		{"Dev", false},
		{"dev_1", false},
		{"dev.1", false},
		{"../x", false},
	} {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--name") {
			t.Errorf("ValidateName(%q) error %q does not name the flag", tc.name, err)
		}
	}
}

func TestSpecDefaults(t *testing.T) {
	s := Spec{Name: "x"}.WithDefaults()
	want := Spec{Name: "x", Clusters: 1, Nodes: 3, Servers: 3, Timeout: 90 * time.Second, Dir: DefaultDir, Mode: "vxlan", Racks: 1}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("defaults = %+v, want %+v", s, want)
	}
	// An even default would be rejected by the agent: two servers are no
	// better than one.
	if got := (Spec{Name: "x", Nodes: 2}).WithDefaults().Servers; got != 1 {
		t.Errorf("servers for 2 nodes = %d, want 1", got)
	}
	if got := (Spec{Name: "x", Nodes: 1}).WithDefaults().Servers; got != 1 {
		t.Errorf("servers for 1 node = %d, want 1", got)
	}
}

func TestSpecValidate(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		flag string
	}{
		{Spec{Name: "x", Clusters: 17}, "--clusters"},
		{Spec{Name: "x", Nodes: 100}, "--nodes"},
		{Spec{Name: "x", Nodes: 3, Servers: 4}, "--servers"},
		{Spec{Name: "x", Nodes: 4, Servers: 2}, "--servers"},
		{Spec{Name: "x", Dir: "/" + strings.Repeat("d", 90)}, "--dir"},
		{Spec{Name: "X"}, "--name"},
		{Spec{Name: "x", Mode: "ipip"}, "--mode"},
		{Spec{Name: "x", Workloads: -1}, "--workloads"},
		{Spec{Name: "x", Workloads: MaxWorkloads + 1}, "--workloads"},
		{Spec{Name: "x", Workloads: 2, Mode: "none"}, "--workloads"},
		{Spec{Name: "x", Workloads: 2, NoAgents: true}, "--workloads"},
	} {
		err := tc.spec.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.spec, err, tc.flag)
		}
	}
	if err := (Spec{Name: "x", Clusters: 16, Nodes: 99}).WithDefaults().Validate(); err != nil {
		t.Errorf("largest lab: %v", err)
	}
	for _, ok := range []Spec{
		{Name: "x", Mode: "none"},
		{Name: "x", Mode: "geneve", Workloads: 2},
		{Name: "x", Mode: "native", Workloads: MaxWorkloads},
		{Name: "x", NoAgents: true},
	} {
		if err := ok.WithDefaults().Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", ok, err)
		}
	}
}

func TestAddressPlan(t *testing.T) {
	if got := nodeAddrs(2, 3); !reflect.DeepEqual(got, []netip.Addr{netip.MustParseAddr("10.99.2.13"), netip.MustParseAddr("fd99:2::13")}) {
		t.Errorf("nodeAddrs(2, 3) = %v", got)
	}
	if got := routerAddrs(1); !reflect.DeepEqual(got, []netip.Addr{netip.MustParseAddr("10.99.1.1"), netip.MustParseAddr("fd99:1::1")}) {
		t.Errorf("routerAddrs(1) = %v", got)
	}
	// Every address of the largest lab is unique and on its cluster's
	// prefixes.
	seen := map[netip.Addr]string{}
	for c := 1; c <= MaxClusters; c++ {
		v4 := netip.PrefixFrom(routerAddrs(c)[0], 24).Masked()
		v6 := netip.PrefixFrom(routerAddrs(c)[1], 64).Masked()
		addrs := map[string][]netip.Addr{"router": routerAddrs(c)}
		for k := 1; k <= MaxNodes; k++ {
			addrs[nodeName(c, k)] = nodeAddrs(c, k)
		}
		for who, as := range addrs {
			if !v4.Contains(as[0]) || !v6.Contains(as[1]) {
				t.Errorf("%s of cluster %d: %v is not in %s, %s", who, c, as, v4, v6)
			}
			for _, a := range as {
				if other, dup := seen[a]; dup {
					t.Errorf("%s is both %s and %s of cluster %d", a, other, who, c)
				}
				seen[a] = who
			}
		}
	}
}

func TestOwnsNamespace(t *testing.T) {
	for _, tc := range []struct {
		lab, ns string
		want    bool
	}{
		{"ab", "fl-ab-rt", true},
		{"ab", "fl-ab-c1sw", true},
		{"ab", "fl-ab-c12n3", true},
		// Lab "ab-c" is another lab even though its names start with
		// "fl-ab-".
		{"ab", "fl-ab-c-rt", false},
		{"ab", "fl-ab-c1-rt", false},
		{"ab", "fl-ab-c1n1-c1sw", false},
		{"ab", "fl-abc-rt", false},
		{"ab", "fl-ab-", false},
		{"ab", "cni-1234", false},
		{"ab-c", "fl-ab-c-rt", true},
		{"ab", "fl-ab-c1n2w3", true},
		{"ab", "fl-ab-c12n3w14", true},
		{"ab", "fl-ab-c1n2w", false},
		{"ab", "fl-ab-c-c1n2w1", false},
		{"ab-c", "fl-ab-c-c1n2w1", true},
	} {
		if got := ownsNamespace(tc.lab, tc.ns); got != tc.want {
			t.Errorf("ownsNamespace(%q, %q) = %v, want %v", tc.lab, tc.ns, got, tc.want)
		}
	}
}

func TestPlan(t *testing.T) {
	st, err := plan(Spec{Name: "p", Clusters: 2, Nodes: 3, Servers: 1, Dir: "/base"})
	if err != nil {
		t.Fatal(err)
	}
	wantNS := []string{"fl-p-rt", "fl-p-ext", "fl-p-c1sw", "fl-p-c1cl", "fl-p-c1n1", "fl-p-c1n2", "fl-p-c1n3",
		"fl-p-c2sw", "fl-p-c2cl", "fl-p-c2n1", "fl-p-c2n2", "fl-p-c2n3"}
	if !reflect.DeepEqual(st.Namespaces, wantNS) {
		t.Errorf("namespaces = %v, want %v", st.Namespaces, wantNS)
	}
	if len(st.GossipKeys) != 2 || st.GossipKeys[0] == st.GossipKeys[1] {
		t.Errorf("want two different cluster keys, got %v", st.GossipKeys)
	}
	n := st.NodeList[4] // c2-n2
	if n.Name != "c2-n2" || n.Namespace != "fl-p-c2n2" || n.Server || n.Socket != "/base/p/c2-n2/api.sock" {
		t.Errorf("node 4 = %+v", n)
	}
}

// TestAgentConfig checks the generated agent.yaml against the agent's own
// loader and validation, so the two cannot drift apart silently.
func TestAgentConfig(t *testing.T) {
	st, err := plan(Spec{Name: "p", Clusters: 2, Nodes: 3, Servers: 3, Dir: "/base", Mode: "vxlan",
		AgentConfig: map[string]any{"cidrReleaseGrace": "3s"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i := range st.NodeList {
		n := st.NodeList[i]
		n.Config = filepath.Join(dir, n.Name+".yaml")
		if err := writeAgentConfig(st, &n); err != nil {
			t.Fatal(err)
		}
		c := config.DefaultConfig()
		if err := c.LoadFile(n.Config); err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: agent rejects its config: %v", n.Name, err)
		}
		if c.CIDRGrace != 3*time.Second {
			t.Errorf("%s: override lost: cidrReleaseGrace = %s", n.Name, c.CIDRGrace)
		}
		if c.DatapathMode != "vxlan" || c.UnderlayInterface != "eth0" || c.UnderlayMTU != 1500 || c.BPFPinDir != "/base/p/bpffs/"+n.Name {
			t.Errorf("%s: datapath settings %q %q %d %q", n.Name, c.DatapathMode, c.UnderlayInterface, c.UnderlayMTU, c.BPFPinDir)
		}
		if c.NodeName != n.Name || c.ClusterID != uint32(n.Cluster) || c.BootstrapExpect != 3 || !c.Server {
			t.Errorf("%s: config %+v", n.Name, c)
		}
		if len(c.Join) != 2 || c.GossipKeys[0] != st.GossipKeys[n.Cluster-1] {
			t.Errorf("%s: join %v, keys %v", n.Name, c.Join, c.GossipKeys)
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st, err := plan(Spec{Name: "rt1", Clusters: 2, Nodes: 2, Servers: 1, Dir: dir, Binary: "/bin/fabric",
		AgentConfig: map[string]any{"logLevel": "debug"}})
	if err != nil {
		t.Fatal(err)
	}
	st.NodeList[1].PID, st.NodeList[1].StartTime = 4242, 987654
	if err := os.MkdirAll(labDir(dir, "rt1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := st.save(); err != nil {
		t.Fatal(err)
	}
	got, err := loadState("rt1", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, st)
	}
	l, err := Load("rt1", dir)
	if err != nil {
		t.Fatal(err)
	}
	if nodes := l.Nodes(); len(nodes) != 4 || nodes[3].Name != "c2-n2" || nodes[3].Underlay[0].String() != "10.99.2.12" {
		t.Errorf("nodes = %+v", nodes)
	}
	if names, err := List(dir); err != nil || !reflect.DeepEqual(names, []string{"rt1"}) {
		t.Errorf("List = %v, %v", names, err)
	}
	if _, err := Load("nope", dir); !IsNotExist(err) {
		t.Errorf("Load of a missing lab = %v, want a not-exist error", err)
	}
	if err := os.WriteFile(stateFile(dir, "rt1"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load("rt1", dir); err == nil || IsNotExist(err) {
		t.Errorf("Load of a corrupt state = %v", err)
	}
}

func TestProcInfo(t *testing.T) {
	start, st, err := procInfo(os.Getpid())
	if err != nil || start == 0 || st == 'Z' {
		t.Fatalf("procInfo(self) = %d, %c, %v", start, st, err)
	}
	n := nodeState{PID: os.Getpid(), StartTime: start, Config: "/no/such/agent.yaml"}
	if n.running() {
		t.Error("running() matched a process without the node's config")
	}
}

func TestPlanRacksAndRouter(t *testing.T) {
	st, err := plan(Spec{Name: "r", Clusters: 1, Nodes: 3, Servers: 1, Dir: "/base", Racks: 2, BGP: true, Mode: "native"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]netip.Addr{
		"c1-n1": {netip.MustParseAddr("10.99.1.11"), netip.MustParseAddr("fd99:1::11")},
		"c1-n2": {netip.MustParseAddr("10.100.1.12"), netip.MustParseAddr("fd99:1:2::12")},
		"c1-n3": {netip.MustParseAddr("10.99.1.13"), netip.MustParseAddr("fd99:1::13")},
	}
	for _, n := range st.NodeList {
		if !reflect.DeepEqual(n.Underlay, want[n.Name]) || n.Rack != rackOf(n.Index, 2) {
			t.Errorf("%s: rack %d underlay %v, want rack %d %v", n.Name, n.Rack, n.Underlay, rackOf(n.Index, 2), want[n.Name])
		}
	}
	if got := rackRouterAddrs(1, 2); got[0].String() != "10.100.1.1" || got[1].String() != "fd99:1:2::1" {
		t.Errorf("rack 2 router = %v", got)
	}
	conf := routerConf(st)
	for _, line := range []string{"router bgp 64512", "bgp bestpath as-path multipath-relax", "no bgp ebgp-requires-policy",
		"neighbor 10.100.1.12 remote-as 65102", "neighbor fd99:1::13 remote-as 65103", "neighbor fd99:1:2::12 activate", "maximum-paths 8"} {
		if !strings.Contains(conf, line) {
			t.Errorf("router config lacks %q:\n%s", line, conf)
		}
	}
	cfg := agentConfig(st, &st.NodeList[1])
	b, _ := cfg["bgp"].(map[string]any)
	if b["localASN"] != uint32(65102) {
		t.Errorf("c1-n2's bgp config = %v", cfg["bgp"])
	}
	if err := (Spec{Name: "x", Nodes: 2, Racks: 3}).WithDefaults().Validate(); err == nil || !strings.Contains(err.Error(), "--racks") {
		t.Errorf("3 racks for 2 nodes: %v", err)
	}
}
