package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fabric-net/fabric/fabric/config"
)

func TestWorkloadNaming(t *testing.T) {
	if got := workloadNS("dev", 2, 3, 4); got != "fl-dev-c2n3w4" || !ownsNamespace("dev", got) {
		t.Errorf("workloadNS = %q (owned: %v)", got, ownsNamespace("dev", got))
	}
	if got := workloadName(2, 3, 4); got != "c2-n3-w4" || ValidateWorkloadName(got) != nil {
		t.Errorf("workloadName = %q", got)
	}
	if got := workloadLabels(1, 2, 1); got != "app=w1,node=c1-n2" {
		t.Errorf("workloadLabels = %q", got)
	}
	// The longest default names still fit everywhere they go.
	if ns := workloadNS("abcdefghijkl", MaxClusters, MaxNodes, MaxWorkloads); len(ns) > 40 {
		t.Errorf("namespace %q is long", ns)
	}
	for _, bad := range []string{"", "-x", "Web", "a_b", "a/b", strings.Repeat("a", 41)} {
		if ValidateWorkloadName(bad) == nil {
			t.Errorf("ValidateWorkloadName(%q) passed", bad)
		}
	}
}

func TestParseLabels(t *testing.T) {
	got, err := parseLabels("app=web, tier=front,,empty=")
	want := []cniLabel{{"app", "web"}, {"tier", "front"}, {"empty", ""}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parseLabels = %v, %v", got, err)
	}
	for _, bad := range []string{"app", "=web"} {
		if _, err := parseLabels(bad); err == nil {
			t.Errorf("parseLabels(%q) passed", bad)
		}
	}
}

func TestCNINetConf(t *testing.T) {
	data, err := cniNetConfFor("/lab/c1-n1/api.sock", "app=w1,node=c1-n1")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	want := `{"args":{"cni":{"labels":[{"key":"app","value":"w1"},{"key":"node","value":"c1-n1"}]}},"cniVersion":"1.0.0","name":"fabric","socket":"/lab/c1-n1/api.sock","type":"fabric-cni"}`
	if got, _ := json.Marshal(m); string(got) != want {
		t.Errorf("net conf\n got %s\nwant %s", got, want)
	}
}

func TestParseCNIResult(t *testing.T) {
	ok := `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],
		"ips":[{"address":"10.201.3.2/32","interface":0},{"address":"fd00:201::302/128","interface":0}],"routes":[]}`
	ips, err := parseCNIResult([]byte(ok))
	if err != nil || !reflect.DeepEqual(ips, []netip.Addr{netip.MustParseAddr("10.201.3.2"), netip.MustParseAddr("fd00:201::302")}) {
		t.Errorf("parseCNIResult(ok) = %v, %v", ips, err)
	}
	for _, tc := range []struct{ out, want string }{
		{`{"cniVersion":"1.0.0","code":11,"msg":"agent unreachable","details":"dial unix: no such file"}`, "plugin error 11: agent unreachable (dial unix: no such file)"},
		{`{"cniVersion":"1.0.0","ips":[]}`, "no addresses"},
		{`{"cniVersion":"1.0.0","ips":[{"address":"10.1.1.1"}]}`, "10.1.1.1"},
		{`panic: oops`, "no CNI result"},
	} {
		if _, err := parseCNIResult([]byte(tc.out)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseCNIResult(%s) = %v, want an error with %q", tc.out, err, tc.want)
		}
	}
}

// TestWorkloadStateRoundTrip checks workloads survive state.json and come
// back through the public API of a loaded lab.
func TestWorkloadStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st, err := plan(Spec{Name: "w1", Clusters: 1, Nodes: 2, Servers: 1, Dir: dir, Mode: "geneve", Workloads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if st.BPFFS != dir+"/w1/bpffs" {
		t.Errorf("bpffs = %q", st.BPFFS)
	}
	st.WorkloadList = []workloadState{{
		Name: "c1-n2-w1", Node: "c1-n2", Cluster: 1, Index: 1, Namespace: workloadNS("w1", 1, 2, 1),
		Labels: workloadLabels(1, 2, 1), IPs: []netip.Addr{netip.MustParseAddr("10.201.2.5"), netip.MustParseAddr("fd00:201::205")},
		ProbePID: 1 << 30, ProbeStartTime: 5, ProbeReady: probeReadyFile(dir, "w1", "c1-n2-w1"),
	}}
	if err := os.MkdirAll(labDir(dir, "w1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := st.save(); err != nil {
		t.Fatal(err)
	}
	got, err := loadState("w1", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, st)
	}
	l, err := Load("w1", dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []Workload{{Name: "c1-n2-w1", Node: "c1-n2", Cluster: "c1", Namespace: "fl-w1-c1n2w1",
		Labels: "app=w1,node=c1-n2", IPs: st.WorkloadList[0].IPs}}
	if ws := l.Workloads(); !reflect.DeepEqual(ws, want) {
		t.Errorf("Workloads = %+v, want %+v (a dead probe server has no pid)", ws, want)
	}
	if spec := l.Spec(); spec.Mode != "geneve" || spec.Workloads != 1 {
		t.Errorf("Spec = %+v", spec)
	}
	// Exec reaches workloads by name.
	cmd, err := l.Command(context.Background(), "c1-n2-w1", "true")
	if err != nil || !reflect.DeepEqual(cmd.Args, []string{"ip", "netns", "exec", "fl-w1-c1n2w1", "true"}) {
		t.Errorf("Command(workload) = %v, %v", cmd, err)
	}
	if _, err := l.AddWorkload(context.Background(), "c1-n1", "c1-n2-w1", ""); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("AddWorkload with a taken name = %v", err)
	}
	if err := l.DelWorkload(context.Background(), "nope"); err == nil {
		t.Error("DelWorkload of an unknown workload succeeded")
	}
}

// TestAgentConfigModeNone checks a control-plane-only lab gets an agent
// config the agent accepts, without a bpffs.
func TestAgentConfigModeNone(t *testing.T) {
	st, err := plan(Spec{Name: "p", Clusters: 1, Nodes: 1, Servers: 1, Dir: "/base", Mode: "none"})
	if err != nil {
		t.Fatal(err)
	}
	if st.BPFFS != "" {
		t.Errorf("mode none mounts a bpffs at %s", st.BPFFS)
	}
	n := st.NodeList[0]
	n.Config = filepath.Join(t.TempDir(), "agent.yaml")
	if err := writeAgentConfig(st, &n); err != nil {
		t.Fatal(err)
	}
	c := config.DefaultConfig()
	if err := c.LoadFile(n.Config); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || c.DatapathMode != "none" {
		t.Errorf("mode none: %q, %v", c.DatapathMode, err)
	}
}

func TestBaseChecks(t *testing.T) {
	alive := map[string]int{"alive": 2}
	good := []NodeStatus{
		{Node: "c1-n1", Members: alive, Leader: "c1-n1", PodCIDRs: []string{"10.201.1.0/24"}, Identities: 2},
		{Node: "c1-n2", Members: alive, Leader: "c1-n1", PodCIDRs: []string{"10.201.2.0/24"}, Identities: 2},
	}
	ws := []Workload{{Name: "a", IPs: []netip.Addr{netip.MustParseAddr("10.201.1.2")}, ProbePID: 1}}
	for _, r := range baseChecks("c1", 2, good, ws) {
		if !r.OK {
			t.Errorf("healthy cluster: %+v", r)
		}
	}
	bad := []NodeStatus{
		{Node: "c1-n1", Members: map[string]int{"alive": 1, "dead": 1}, Leader: "c1-n1", PodCIDRs: []string{"10.201.1.0/24"}},
		{Node: "c1-n2", Members: alive, Leader: "c1-n2", PodCIDRs: []string{"10.201.1.0/24"}},
		{Node: "c1-n3", Members: alive},
		{Node: "c1-n4", Error: "agent not running"},
	}
	got := map[string]string{}
	for _, r := range baseChecks("c1", 2, bad, []Workload{{Name: "a"}}) {
		if r.OK {
			t.Errorf("broken cluster passes %q: %s", r.Check, r.Detail)
		}
		got[r.Check] = r.Detail
	}
	for check, want := range map[string]string{
		"members alive":      "c1-n1 sees 1 alive, 1 dead, want 2 alive; c1-n4: agent not running",
		"one store leader":   "no leader on c1-n3; c1-n1 on c1-n1; c1-n2 on c1-n2",
		"pod CIDRs":          "c1-n3 has none",
		"pod CIDRs unique":   "10.201.1.0/24 on c1-n1 and c1-n2",
		"identities":         "no identities with 1 workload(s)",
		"workloads attached": "a has no address",
	} {
		if got[check] != want {
			t.Errorf("%s: %q, want %q", check, got[check], want)
		}
	}
}

func TestMatrixCells(t *testing.T) {
	v4v6 := func(a, b string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(a), netip.MustParseAddr(b)} }
	ws := []Workload{
		{Name: "c1-n1-w1", Cluster: "c1", IPs: v4v6("10.201.1.2", "fd00:201::102")},
		{Name: "c1-n2-w1", Cluster: "c1", IPs: v4v6("10.201.2.2", "fd00:201::202")},
		{Name: "c1-n2-w2", Cluster: "c1", IPs: []netip.Addr{netip.MustParseAddr("10.201.2.3")}},
		{Name: "c2-n1-w1", Cluster: "c2", IPs: v4v6("10.202.1.2", "fd00:202::102")},
	}
	cells := matrixCells(ws, []string{"icmp", "tcp", "udp"})
	// c1: 2 dual-stack workloads (2 ordered pairs × 2 families) plus the
	// IPv4-only one (4 ordered pairs × 1 family), times 3 protocols; c2
	// alone has no peer.
	if len(cells) != (4+4)*3 {
		t.Errorf("%d cells, want 24", len(cells))
	}
	for _, c := range cells {
		if c.Cluster != "c1" || strings.HasPrefix(c.Destination, "c2") || c.Source == c.Destination {
			t.Errorf("unexpected cell %+v", c)
		}
		if c.Address.Is6() && (c.Source == "c1-n2-w2" || c.Destination == "c1-n2-w2") {
			t.Errorf("IPv6 cell for an IPv4-only workload: %+v", c)
		}
	}
}

func TestCheckReportText(t *testing.T) {
	r := CheckReport{
		Lab: "dev",
		Base: []CheckResult{
			{Cluster: "c1", Check: "members alive", OK: true, Detail: "every node sees 3 alive"},
			{Cluster: "c1", Check: "pod CIDRs unique", OK: false, Detail: "10.201.1.0/24 on c1-n1 and c1-n2"},
		},
		Probes: []ProbeResult{
			{Cluster: "c1", Source: "c1-n1-w1", Destination: "c1-n2-w1", Address: netip.MustParseAddr("10.201.2.2"), Proto: "tcp", Family: "ipv4", OK: true, Latency: 123456 * time.Nanosecond},
			{Cluster: "c1", Source: "c1-n1-w1", Destination: "c1-n2-w1", Address: netip.MustParseAddr("fd00:201::202"), Proto: "udp", Family: "ipv6", Error: "no echo before the timeout"},
		},
		Notes: []string{"cross-cluster workload traffic is not checked: clusters are not meshed yet"},
	}
	r.count()
	if r.Passed != 2 || r.Failed != 2 || r.OK() {
		t.Fatalf("count: %d passed, %d failed", r.Passed, r.Failed)
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `CLUSTER  CHECK             RESULT  DETAIL
c1       members alive     pass    every node sees 3 alive
c1       pod CIDRs unique  FAIL    10.201.1.0/24 on c1-n1 and c1-n2

SOURCE    DESTINATION  ADDRESS        PROTO  FAMILY  RESULT                            LATENCY
c1-n1-w1  c1-n2-w1     10.201.2.2     tcp    ipv4    pass                              123µs
c1-n1-w1  c1-n2-w1     fd00:201::202  udp    ipv6    FAIL: no echo before the timeout  -
note: cross-cluster workload traffic is not checked: clusters are not meshed yet
2 passed, 2 failed
`
	if b.String() != want {
		t.Errorf("text:\n%s\nwant:\n%s", b.String(), want)
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back CheckReport
	if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(back, r) {
		t.Errorf("JSON round trip: %v\n got %+v\nwant %+v", err, back, r)
	}
	if !strings.Contains(string(data), `"latencyNs":123456`) {
		t.Errorf("JSON has no latency in ns: %s", data)
	}
}

// TestProbe runs the probe server and client over loopback, both families.
func TestProbe(t *testing.T) {
	port := freePort(t)
	ready := filepath.Join(t.TempDir(), "x"+probeReadySuffix)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeProbe(ctx, port, port, ready) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("probe server not ready")
		}
	}
	var targets []ProbeTarget
	for _, host := range []string{"127.0.0.1", "::1"} {
		for _, proto := range []string{"tcp", "udp"} {
			targets = append(targets, ProbeTarget{proto, net.JoinHostPort(host, strconv.Itoa(port))})
		}
	}
	for _, o := range ProbeAll(context.Background(), targets, time.Second) {
		if !o.OK || o.Latency <= 0 {
			t.Errorf("probe %+v", o)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Nothing listens now: both protocols fail, within the timeout.
	start := time.Now()
	for _, o := range ProbeAll(context.Background(), targets[:2], 300*time.Millisecond) {
		if o.OK || o.Error == "" {
			t.Errorf("probe to a stopped server: %+v", o)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("failing probes took %s", d)
	}
	out, err := json.Marshal(ProbeOutcome{Proto: "tcp", Addr: "[::1]:1", Latency: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseProbeOutput(append(append(out, '\n'), out...))
	if err != nil || len(got) != 2 || got[1].Latency != time.Millisecond {
		t.Errorf("parseProbeOutput = %+v, %v", got, err)
	}
}

// freePort returns a port free for TCP and UDP on both loopbacks, as far
// as one can tell without holding it.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}
