//go:build linux

package cni

// The tests in this file need root: they create network namespaces (a
// "node" one the plugin runs in, and workload ones) and veth pairs inside
// them. They skip with the reason otherwise. Nothing is added to the
// machine's own namespace; every namespace is deleted in t.Cleanup.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and veth pairs")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip to create named network namespaces")
	}
}

// testNetns is a named network namespace (so `ip netns exec` can enter it).
type testNetns struct{ name, path string }

func newNetns(t *testing.T, role string) testNetns {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	n := testNetns{name: "fcni-" + hex.EncodeToString(b) + "-" + role}
	n.path = "/run/netns/" + n.name
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.name, err, out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(n.path); os.IsNotExist(err) {
			return // the test deleted it
		}
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
		}
	})
	return n
}

func (n testNetns) handle(t *testing.T) *netlink.Handle {
	t.Helper()
	h, err := netns.GetFromPath(n.path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nh.Close)
	return nh
}

// run runs f with the calling thread in n, as if the plugin process had
// been started there.
func (n testNetns) run(t *testing.T, f func() error) error {
	t.Helper()
	var ferr error
	if err := ns.WithNetNSPath(n.path, func(ns.NetNS) error { ferr = f(); return nil }); err != nil {
		t.Fatalf("enter %s: %v", n.name, err)
	}
	return ferr
}

// noRootLeak checks that no interface of the test appeared in the
// machine's own namespace (only reads it).
func noRootLeak(t *testing.T, names ...string) {
	t.Cleanup(func() {
		for _, name := range names {
			if _, err := netlink.LinkByName(name); err == nil {
				t.Errorf("interface %s exists in the machine's own netns", name)
			}
		}
	})
}

func testConf(socket, cniVersion string) []byte {
	return []byte(`{"cniVersion":"` + cniVersion + `","name":"fabric","type":"fabric-cni","socket":"` + socket +
		`","args":{"cni":{"labels":[{"key":"app","value":"web"}]}}}`)
}

// withPrevResult adds prevResult to a config, as a runtime does for CHECK.
func withPrevResult(t *testing.T, conf, result []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	var r any
	if err := json.Unmarshal(result, &r); err != nil {
		t.Fatal(err)
	}
	m["prevResult"] = r
	b, _ := json.Marshal(m)
	return b
}

func TestPluginRootLifecycle(t *testing.T) {
	requireRoot(t)
	agent := newFakeAgent(t)
	node, wl := newNetns(t, "node"), newNetns(t, "wl")
	id := EndpointID("ctr1", "eth0")
	hostIf := HostIfName(id)
	noRootLeak(t, hostIf)
	p := &plugin{stdout: new(bytes.Buffer), timeout: 10 * time.Second}
	conf := testConf(agent.socket, "1.0.0")
	args := &skel.CmdArgs{ContainerID: "ctr1", Netns: wl.path, IfName: "eth0", StdinData: conf,
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-1"}

	var out bytes.Buffer
	p.stdout = &out
	if err := node.run(t, func() error { return p.cmdAdd(args) }); err != nil {
		t.Fatalf("ADD: %v", err)
	}

	// The result, as the runtime's library reads it.
	r, err := version.NewResult("1.0.0", out.Bytes())
	if err != nil {
		t.Fatalf("result %s: %v", out.String(), err)
	}
	res, err := types100.GetResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Interfaces) != 2 || res.Interfaces[0].Name != hostIf || res.Interfaces[0].Sandbox != "" ||
		res.Interfaces[1].Name != "eth0" || res.Interfaces[1].Sandbox != wl.path {
		t.Errorf("interfaces in %s", out.String())
	}
	if len(res.IPs) != 2 || *res.IPs[0].Interface != 1 || res.IPs[0].Address.String() != "10.200.0.2/32" ||
		res.IPs[0].Gateway.String() != fakeGW4 || res.IPs[1].Address.String() != "fd00:200::2/128" || len(res.Routes) != 2 {
		t.Errorf("ips/routes in %s", out.String())
	}
	if !strings.Contains(out.String(), `"cniVersion": "1.0.0"`) {
		t.Errorf("result is not in the request's version: %s", out.String())
	}

	ep, ok := agent.endpoint(id)
	if !ok {
		t.Fatalf("agent has no endpoint %s", id)
	}
	if ep.Labels != "app=web;k8s:io.kubernetes.pod.namespace=prod" || ep.ContainerID != "ctr1" || ep.Netns != wl.path || ep.IfName != "eth0" {
		t.Errorf("endpoint request: %+v", ep)
	}

	// The node side.
	nh := node.handle(t)
	host, err := nh.LinkByName(hostIf)
	if err != nil {
		t.Fatalf("host veth: %v", err)
	}
	if host.Attrs().Flags&net.FlagUp == 0 || host.Attrs().MTU != fakeMTU || host.Type() != "veth" {
		t.Errorf("host veth: up=%v mtu=%d type=%s", host.Attrs().Flags&net.FlagUp != 0, host.Attrs().MTU, host.Type())
	}
	if ep.Attachment == nil || ep.Attachment.HostIfName != hostIf || ep.Attachment.HostIfIndex != host.Attrs().Index ||
		ep.Attachment.HostMAC != host.Attrs().HardwareAddr.String() || ep.Attachment.HostMAC != res.Interfaces[0].Mac {
		t.Errorf("attachment %+v, host veth index %d mac %s", ep.Attachment, host.Attrs().Index, host.Attrs().HardwareAddr)
	}

	// The workload side.
	wh := wl.handle(t)
	eth0, err := wh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if eth0.Attrs().Flags&net.FlagUp == 0 || eth0.Attrs().MTU != fakeMTU || eth0.Attrs().HardwareAddr.String() != ep.Attachment.WorkloadMAC ||
		eth0.Attrs().Index != ep.Attachment.WorkloadIndex {
		t.Errorf("eth0: %+v, attachment %+v", eth0.Attrs(), ep.Attachment)
	}
	if lo, err := wh.LinkByName("lo"); err != nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("lo not up: %v", err)
	}
	addrs, err := wh.AddrList(eth0, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, a := range addrs {
		found[a.IPNet.String()] = true
		if a.IP.To4() == nil && !a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE != 0 {
			t.Errorf("%s is tentative: DAD is on", a.IPNet)
		}
	}
	if !found["10.200.0.2/32"] || !found["fd00:200::2/128"] {
		t.Errorf("addresses %v", found)
	}
	routes, err := wh.RouteList(eth0, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, gw := range []string{fakeGW4, fakeGW6} {
		ok := false
		for _, r := range routes {
			if isDefaultVia(r, netip.MustParseAddr(gw)) && r.Flags&int(netlink.FLAG_ONLINK) != 0 {
				ok = true
			}
		}
		if !ok {
			t.Errorf("no onlink default route via %s in %v", gw, routes)
		}
	}
	neighs, err := wh.NeighList(eth0.Attrs().Index, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	okNeigh := false
	for _, n := range neighs {
		if n.IP.String() == fakeGW6 && n.State == netlink.NUD_PERMANENT && n.HardwareAddr.String() == host.Attrs().HardwareAddr.String() {
			okNeigh = true
		}
	}
	if !okNeigh {
		t.Errorf("no permanent neighbour %s → %s in %v", fakeGW6, host.Attrs().HardwareAddr, neighs)
	}
	if dad, err := exec.Command("ip", "netns", "exec", wl.name, "cat", "/proc/sys/net/ipv6/conf/eth0/accept_dad").Output(); err != nil || strings.TrimSpace(string(dad)) != "0" {
		t.Errorf("accept_dad %q %v", dad, err)
	}

	// Traffic: with the gateways on the host veth (standing in for the
	// datapath), the workload reaches them over IPv4 (ARP) and IPv6 (the
	// permanent neighbour entry).
	for _, c := range [][]string{
		{"addr", "add", fakeGW4 + "/32", "dev", hostIf},
		{"addr", "add", fakeGW6 + "/128", "dev", hostIf, "nodad"},
		{"route", "add", "10.200.0.2/32", "dev", hostIf},
		{"-6", "route", "add", "fd00:200::2/128", "dev", hostIf},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", node.name}, c...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip -n node %v: %v: %s", c, err, out)
		}
	}
	for _, gw := range []string{fakeGW4, fakeGW6} {
		if out, err := exec.Command("ip", "netns", "exec", wl.name, "ping", "-c1", "-W2", gw).CombinedOutput(); err != nil {
			t.Errorf("ping %s from the workload: %v: %s", gw, err, out)
		}
	}

	// CHECK passes on what ADD made.
	check := &skel.CmdArgs{ContainerID: "ctr1", Netns: wl.path, IfName: "eth0", StdinData: withPrevResult(t, conf, out.Bytes())}
	if err := node.run(t, func() error { return p.cmdCheck(check) }); err != nil {
		t.Fatalf("CHECK after ADD: %v", err)
	}

	// CHECK names what was tampered with.
	if err := wh.AddrDel(eth0, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("10.200.0.2/32"))}); err != nil {
		t.Fatal(err)
	}
	if err := wh.LinkSetMTU(eth0, 1400); err != nil {
		t.Fatal(err)
	}
	err = node.run(t, func() error { return p.cmdCheck(check) })
	e := cniError(t, err)
	if e.Code != ErrDrift || !strings.Contains(e.Msg, "address 10.200.0.2/32 missing on eth0") ||
		!strings.Contains(e.Msg, "eth0 has MTU 1400, want 1450") || strings.Contains(e.Msg, "fd00:200::2") {
		t.Errorf("CHECK after tampering: %+v", e)
	}

	// DEL removes both ends and the endpoint; again is fine.
	del := &skel.CmdArgs{ContainerID: "ctr1", Netns: wl.path, IfName: "eth0", StdinData: conf}
	for i := range 2 {
		if err := node.run(t, func() error { return p.cmdDel(del) }); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	if _, err := nh.LinkByName(hostIf); err == nil {
		t.Error("host veth still there after DEL")
	}
	if _, err := wh.LinkByName("eth0"); err == nil {
		t.Error("eth0 still there after DEL")
	}
	if agent.count() != 0 {
		t.Errorf("agent still has %d endpoints", agent.count())
	}

	// CHECK after DEL: the agent does not know it.
	e = cniError(t, node.run(t, func() error { return p.cmdCheck(check) }))
	if e.Code != types.ErrUnknownContainer {
		t.Errorf("CHECK after DEL: %+v", e)
	}
}

func TestPluginRootDelUnknown(t *testing.T) {
	requireRoot(t)
	agent := newFakeAgent(t)
	node := newNetns(t, "node")
	p := &plugin{stdout: new(bytes.Buffer), timeout: 10 * time.Second}
	conf := testConf(agent.socket, "1.0.0")
	for _, netnsPath := range []string{"", "/run/netns/fcni-does-not-exist", "/proc/self/ns/net"} {
		args := &skel.CmdArgs{ContainerID: "never-added", Netns: netnsPath, IfName: "eth0", StdinData: conf}
		if err := node.run(t, func() error { return p.cmdDel(args) }); err != nil {
			t.Errorf("DEL of an unknown container with netns %q: %v", netnsPath, err)
		}
	}
}

// TestPluginRootDelNetnsGone: the runtime may delete the workload's netns
// before DEL; the host veth went with it and DEL still succeeds.
func TestPluginRootDelNetnsGone(t *testing.T) {
	requireRoot(t)
	agent := newFakeAgent(t)
	node := newNetns(t, "node")
	wl := newNetns(t, "wl")
	p := &plugin{stdout: new(bytes.Buffer), timeout: 10 * time.Second}
	args := &skel.CmdArgs{ContainerID: "ctr2", Netns: wl.path, IfName: "eth0", StdinData: testConf(agent.socket, "1.0.0")}
	if err := node.run(t, func() error { return p.cmdAdd(args) }); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if out, err := exec.Command("ip", "netns", "del", wl.name).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := node.run(t, func() error { return p.cmdDel(args) }); err != nil {
		t.Fatalf("DEL with the netns gone: %v", err)
	}
	if agent.count() != 0 {
		t.Errorf("agent still has %d endpoints", agent.count())
	}
}

func TestPluginRootAddFailures(t *testing.T) {
	requireRoot(t)
	agent := newFakeAgent(t)
	node := newNetns(t, "node")
	p := &plugin{stdout: new(bytes.Buffer), timeout: 10 * time.Second}
	add := func(args *skel.CmdArgs) *types.Error {
		t.Helper()
		err := node.run(t, func() error { return p.cmdAdd(args) })
		if err == nil {
			t.Fatalf("ADD %s succeeded", args.ContainerID)
		}
		return cniError(t, err)
	}
	noLeftovers := func(what string, wl testNetns, cid string) {
		t.Helper()
		if _, err := node.handle(t).LinkByName(HostIfName(EndpointID(cid, "eth0"))); err == nil {
			t.Errorf("%s: host veth left behind", what)
		}
		if agent.count() != 0 {
			t.Errorf("%s: agent has %d endpoints left", what, agent.count())
		}
	}

	t.Run("broken config", func(t *testing.T) {
		wl := newNetns(t, "wl")
		e := add(&skel.CmdArgs{ContainerID: "c1", Netns: wl.path, IfName: "eth0", StdinData: []byte(`{"cniVersion":"1.0.0","name":"fabric","socket":7}`)})
		if e.Code != types.ErrInvalidNetworkConfig || !strings.Contains(e.Msg, `config: "socket" must be a string path`) {
			t.Errorf("got %+v", e)
		}
		noLeftovers("broken config", wl, "c1")
	})
	t.Run("bad netns", func(t *testing.T) {
		before := agent.createCount()
		e := add(&skel.CmdArgs{ContainerID: "c2", Netns: "/run/netns/fcni-nope", IfName: "eth0", StdinData: testConf(agent.socket, "1.0.0")})
		if e.Code != types.ErrInvalidNetNS || !strings.Contains(e.Msg, `CNI_NETNS "/run/netns/fcni-nope"`) {
			t.Errorf("got %+v", e)
		}
		if agent.createCount() != before {
			t.Error("the agent was asked to create an endpoint for a bad netns")
		}
	})
	t.Run("attach fails", func(t *testing.T) {
		wl := newNetns(t, "wl")
		agent.mu.Lock()
		agent.failAttach = true
		agent.mu.Unlock()
		defer func() { agent.mu.Lock(); agent.failAttach = false; agent.mu.Unlock() }()
		e := add(&skel.CmdArgs{ContainerID: "c3", Netns: wl.path, IfName: "eth0", StdinData: testConf(agent.socket, "1.0.0")})
		if e.Code != ErrAgent || !strings.Contains(e.Msg, "attach endpoint c3:eth0") || !strings.Contains(e.Msg, "injected failure") {
			t.Errorf("got %+v", e)
		}
		if _, err := wl.handle(t).LinkByName("eth0"); err == nil {
			t.Error("eth0 left behind")
		}
		noLeftovers("attach fails", wl, "c3")
	})
	t.Run("interface exists", func(t *testing.T) {
		wl := newNetns(t, "wl")
		// A veth, not a dummy: the dummy module may not be loaded.
		v := netlink.NewVeth(netlink.LinkAttrs{Name: "eth0", TxQLen: -1})
		v.PeerName = "other0"
		if err := wl.handle(t).LinkAdd(v); err != nil {
			t.Fatal(err)
		}
		e := add(&skel.CmdArgs{ContainerID: "c4", Netns: wl.path, IfName: "eth0", StdinData: testConf(agent.socket, "1.0.0")})
		if e.Code != ErrLink || !strings.Contains(e.Msg, "interface eth0 already exists") {
			t.Errorf("got %+v", e)
		}
		noLeftovers("interface exists", wl, "c4")
	})
}

// TestPluginRootExec runs the plugin as a runtime does: a separate
// process started in the node's netns, CNI_* in its environment, the
// config on stdin, JSON on stdout and the exit code. The binary is this
// test binary, which TestMain turns into the plugin.
func TestPluginRootExec(t *testing.T) {
	requireRoot(t)
	agent := newFakeAgent(t)
	node, wl := newNetns(t, "node"), newNetns(t, "wl")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	hostIf := HostIfName(EndpointID("ctr-exec", "eth1"))
	noRootLeak(t, hostIf)

	plugin := func(command string, conf []byte) (stdout []byte, code int) {
		t.Helper()
		cmd := exec.Command("ip", "netns", "exec", node.name, exe)
		cmd.Env = []string{
			"PATH=" + os.Getenv("PATH"), "FABRIC_CNI_TEST_AS_PLUGIN=1",
			"CNI_COMMAND=" + command, "CNI_CONTAINERID=ctr-exec", "CNI_NETNS=" + wl.path, "CNI_IFNAME=eth1",
			"CNI_PATH=/opt/cni/bin", "CNI_ARGS=K8S_POD_NAMESPACE=prod;FABRIC_LABELS=tier=front",
		}
		cmd.Stdin = bytes.NewReader(conf)
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		out, err := cmd.Output()
		if ee, ok := err.(*exec.ExitError); ok {
			return out, ee.ExitCode()
		} else if err != nil {
			t.Fatalf("run plugin %s: %v: %s", command, err, errOut.String())
		}
		return out, 0
	}
	wantError := func(what string, out []byte, code int, wantCode uint, msg string) {
		t.Helper()
		var e types.Error
		if code == 0 || json.Unmarshal(out, &e) != nil || e.Code != wantCode || !strings.Contains(e.Msg, msg) {
			t.Errorf("%s: exit %d, stdout %s; want a CNI error with code %d containing %q", what, code, out, wantCode, msg)
		}
	}

	conf := testConf(agent.socket, "1.1.0")
	out, code := plugin("VERSION", conf)
	if code != 0 || !strings.Contains(string(out), `"1.1.0"`) || !strings.Contains(string(out), `"1.0.0"`) {
		t.Errorf("VERSION: exit %d: %s", code, out)
	}
	if out, code := plugin("STATUS", conf); code != 0 {
		t.Errorf("STATUS: exit %d: %s", code, out)
	}

	out, code = plugin("ADD", conf)
	if code != 0 {
		t.Fatalf("ADD: exit %d: %s", code, out)
	}
	r, err := version.NewResult("1.1.0", out)
	if err != nil {
		t.Fatalf("ADD result %s: %v", out, err)
	}
	res, err := types100.GetResult(r)
	if err != nil || len(res.IPs) != 2 || res.Interfaces[0].Name != hostIf {
		t.Errorf("ADD result %s: %v", out, err)
	}
	ep, _ := agent.endpoint(EndpointID("ctr-exec", "eth1"))
	if ep.Labels != "app=web;k8s:io.kubernetes.pod.namespace=prod;tier=front" {
		t.Errorf("labels %q", ep.Labels)
	}

	if out, code := plugin("CHECK", withPrevResult(t, conf, out)); code != 0 {
		t.Errorf("CHECK: exit %d: %s", code, out)
	}

	agent.mu.Lock()
	agent.ipamProblem = "no pod CIDR yet"
	agent.mu.Unlock()
	out, code = plugin("STATUS", conf)
	wantError("STATUS without pod CIDR", out, code, 50, "plugin not available")

	for i := range 2 {
		if out, code := plugin("DEL", conf); code != 0 {
			t.Errorf("DEL #%d: exit %d: %s", i+1, code, out)
		}
	}
	if _, err := node.handle(t).LinkByName(hostIf); err == nil {
		t.Error("host veth still there after DEL")
	}

	out, code = plugin("ADD", []byte(`{"cniVersion":"1.0.0","name":"fabric","type":"fabric-cni","socket":["x"]}`))
	wantError("ADD with a broken config", out, code, types.ErrInvalidNetworkConfig, `config: "socket" must be a string path`)
	out, code = plugin("ADD", []byte(`{"cniVersion":"1.0.0","name":"fabric","type":"fabric-cni","socket":"/nonexistent/f.sock"}`))
	wantError("ADD with no agent", out, code, types.ErrTryAgainLater, "cannot reach the fabric agent at /nonexistent/f.sock: is it running?")
	if agent.count() != 0 {
		t.Errorf("agent still has %d endpoints", agent.count())
	}
}
