//go:build linux

package lab_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fabric-net/fabric/fabric/lab"
	"github.com/fabric-net/fabric/fabric/lab/labtest"
)

// rootNetState is everything a lab must leave untouched in the machine's
// own namespace. Only reading commands run here.
func rootNetState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"-o", "link"}, {"-o", "addr"}, {"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"}} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		b.Write(out)
	}
	return b.String()
}

func netnsList(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

func labNamespaces(t *testing.T, name string) []string {
	t.Helper()
	var ns []string
	for _, n := range netnsList(t) {
		if strings.HasPrefix(n, "fl-"+name+"-") {
			ns = append(ns, n)
		}
	}
	return ns
}

// inNetns runs fn on a thread switched into the named namespace. Sockets
// made by fn stay in that namespace after the thread switches back, so
// the test's traffic flows only between lab namespaces. If the thread
// cannot switch back it is left locked and dies with the goroutine.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave %s: %w", ns, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// connect opens a TCP connection from the namespace of node from to the
// given address of node to, and checks one byte makes it across.
func connect(t *testing.T, l *lab.Lab, from, to string, addr string) error {
	t.Helper()
	src, _ := l.Node(from)
	dst, _ := l.Node(to)
	var ln net.Listener
	if err := inNetns(dst.Namespace, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(addr, "0"))
		return err
	}); err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("x"))
		c.Close()
	}()
	var conn net.Conn
	if err := inNetns(src.Namespace, func() (err error) {
		conn, err = net.DialTimeout("tcp", ln.Addr().String(), 3*time.Second)
		return err
	}); err != nil {
		return fmt.Errorf("%s → %s (%s): %w", from, to, ln.Addr(), err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1)
	if _, err := conn.Read(buf); err != nil {
		return fmt.Errorf("%s → %s: read: %w", from, to, err)
	}
	return nil
}

func TestLabTopology(t *testing.T) {
	labtest.SkipUnlessAvailable(t)
	before := rootNetState(t)
	l := labtest.New(t, lab.Spec{Clusters: 2, Nodes: 2, NoAgents: true})
	name := l.Name()

	want := []string{"fl-" + name + "-c1cl", "fl-" + name + "-c1n1", "fl-" + name + "-c1n2", "fl-" + name + "-c1sw",
		"fl-" + name + "-c2cl", "fl-" + name + "-c2n1", "fl-" + name + "-c2n2", "fl-" + name + "-c2sw",
		"fl-" + name + "-ext", "fl-" + name + "-rt"}
	got := labNamespaces(t, name)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("namespaces = %v, want %v", got, want)
	}

	// Within a cluster (bridged) and across clusters (routed), both
	// families.
	for _, tc := range [][3]string{
		{"c1-n1", "c1-n2", "10.99.1.12"},
		{"c1-n1", "c2-n1", "10.99.2.11"},
		{"c2-n2", "c1-n2", "fd99:1::12"},
		{"c1-n2", "c2-n1", "fd99:2::11"},
	} {
		if err := connect(t, l, tc[0], tc[1], tc[2]); err != nil {
			t.Error(err)
		}
	}

	// Exec runs inside the member's namespace.
	out, err := l.Exec(context.Background(), "c2-n1", "ip", "-o", "addr", "show", "dev", "eth0")
	if err != nil || !strings.Contains(string(out), "10.99.2.11/24") || !strings.Contains(string(out), "fd99:2::11/64") {
		t.Errorf("exec ip addr on c2-n1 = %q, %v", out, err)
	}
	out, err = l.Exec(context.Background(), lab.RouterMember, "sysctl", "-n", "net.ipv4.ip_forward")
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("router ip_forward = %q, %v", out, err)
	}
	if _, err := l.Exec(context.Background(), "c9-n9", "true"); err == nil {
		t.Error("exec on an unknown member succeeded")
	}

	// A cut link stops traffic; restoring it brings it back.
	if err := l.LinkDown("c2-n1"); err != nil {
		t.Fatal(err)
	}
	if err := connect(t, l, "c1-n1", "c2-n1", "10.99.2.11"); err == nil {
		t.Error("traffic crossed a cut link")
	}
	if err := l.LinkUp("c2-n1"); err != nil {
		t.Fatal(err)
	}
	if err := connect(t, l, "c1-n1", "c2-n1", "10.99.2.11"); err != nil {
		t.Errorf("after LinkUp: %v", err)
	}

	if after := rootNetState(t); after != before {
		t.Errorf("the machine's own namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Down removes everything, and again is harmless.
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	if left := labNamespaces(t, name); len(left) > 0 {
		t.Errorf("namespaces left after Down: %v", left)
	}
	if _, err := os.Stat(lab.DefaultDir + "/" + name); !os.IsNotExist(err) {
		t.Errorf("lab dir left after Down: %v", err)
	}
	if err := l.Down(); err != nil {
		t.Errorf("second Down: %v", err)
	}
	var log strings.Builder
	if err := lab.Remove(name, "", &log); err != nil || !strings.Contains(log.String(), "nothing to do") {
		t.Errorf("Remove of a removed lab = %v, log %q", err, log.String())
	}
	if after := rootNetState(t); after != before {
		t.Errorf("the machine's own namespace changed after Down")
	}
}

// TestLabSideBySide checks two labs do not interfere: each has its own
// namespaces and removing one leaves the other working.
func TestLabSideBySide(t *testing.T) {
	a := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 2, NoAgents: true})
	b := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 2, NoAgents: true})
	if err := connect(t, a, "c1-n1", "c1-n2", "10.99.1.12"); err != nil {
		t.Error(err)
	}
	if err := a.Down(); err != nil {
		t.Fatal(err)
	}
	if left := labNamespaces(t, a.Name()); len(left) > 0 {
		t.Errorf("namespaces of %s left: %v", a.Name(), left)
	}
	if got := labNamespaces(t, b.Name()); len(got) != 6 {
		t.Errorf("lab %s lost namespaces when %s went down: %v", b.Name(), a.Name(), got)
	}
	if err := connect(t, b, "c1-n1", "c1-n2", "10.99.1.12"); err != nil {
		t.Errorf("lab %s after %s went down: %v", b.Name(), a.Name(), err)
	}
}

// TestLabRemoveAfterCrash checks Remove works from the namespace sweep alone,
// as after an `up` that died before writing usable state.
func TestLabRemoveAfterCrash(t *testing.T) {
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 1, NoAgents: true})
	if err := os.Remove(lab.DefaultDir + "/" + l.Name() + "/state.json"); err != nil {
		t.Fatal(err)
	}
	if err := lab.Remove(l.Name(), "", nil); err != nil {
		t.Fatal(err)
	}
	if left := labNamespaces(t, l.Name()); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
}

// TestLabAgents runs real agents: one cluster of three servers.
func TestLabAgents(t *testing.T) {
	labtest.SkipUnlessAvailable(t)
	root, err := labtest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root + "/fabric/cmd/fabric/main.go"); err != nil {
		t.Skip("no fabric binary to run as the agent yet (fabric/cmd/fabric)")
	}
	l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 3, Timeout: 60 * time.Second})
	for _, s := range l.Status(context.Background()) {
		if ok, why := s.Ready(3); !ok {
			t.Errorf("%s not ready after Up: %s", s.Node, why)
		}
	}
	// Exec passes the node's socket, so the CLI inside finds its agent.
	out, err := l.Exec(context.Background(), "c1-n2", labtest.Binary(t), "status")
	if err != nil {
		t.Errorf("fabric status inside c1-n2: %v", err)
	} else if !strings.Contains(string(out), "c1-n2") {
		t.Errorf("fabric status inside c1-n2 does not name the node:\n%s", out)
	}

	// Kill one agent and start it again with the same data.
	pid := l.PID("c1-n3")
	if err := l.Kill("c1-n3", unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Running("c1-n3") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if l.Running("c1-n3") {
		t.Fatal("agent still running after SIGKILL")
	}
	if err := l.Kill("c1-n3", unix.SIGKILL); err == nil {
		t.Error("Kill of a dead agent succeeded")
	}
	if err := l.Start("c1-n3"); err != nil {
		t.Fatal(err)
	}
	if l.PID("c1-n3") == pid || l.PID("c1-n3") == 0 {
		t.Errorf("pid after restart = %d (was %d)", l.PID("c1-n3"), pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := l.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	if l.Running("c1-n1") {
		t.Error("agent running after Down")
	}
}

// TestLabAgentExits checks that Up gives up at once when an agent exits,
// names the node and shows its log, and leaves the lab for inspection.
func TestLabAgentExits(t *testing.T) {
	labtest.SkipUnlessAvailable(t)
	name := labtest.Name()
	t.Cleanup(func() {
		if err := lab.Remove(name, "", nil); err != nil {
			t.Error(err)
		}
	})
	start := time.Now()
	// `echo agent --config ...` prints its arguments and exits.
	l, err := lab.Up(context.Background(), lab.Spec{Name: name, Nodes: 1, Binary: "/bin/echo", Timeout: 30 * time.Second}, nil)
	if err == nil || l == nil {
		t.Fatalf("Up = %v, %v; want the lab and an error", l, err)
	}
	if !strings.Contains(err.Error(), "c1-n1") || !strings.Contains(err.Error(), "agent --config") {
		t.Errorf("error does not name the node and show its log: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Up took %s to notice a dead agent", d)
	}
	var exit *lab.AgentExitError
	if !errors.As(err, &exit) || exit.Node != "c1-n1" || exit.How != "exit status 0" {
		t.Errorf("error %#v does not say the agent exited by itself with status 0", exit)
	}
	if !strings.Contains(exit.Log, "ended after") {
		t.Errorf("agent.log does not say how the agent ended:\n%s", exit.Log)
	}
	if got := labNamespaces(t, name); len(got) != 5 {
		t.Errorf("lab not left up for inspection: namespaces %v", got)
	}

	// An agent ended by a signal (here its own) is told apart: its log is
	// empty, so only the exit status says what happened.
	killer := filepath.Join(t.TempDir(), "killed-agent")
	if err := os.WriteFile(killer, []byte("#!/bin/sh\nkill -KILL $$\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	name2 := labtest.Name()
	t.Cleanup(func() {
		if err := lab.Remove(name2, "", nil); err != nil {
			t.Error(err)
		}
	})
	_, err = lab.Up(context.Background(), lab.Spec{Name: name2, Nodes: 1, Binary: killer, Timeout: 30 * time.Second}, nil)
	if !errors.As(err, &exit) || exit.How != "signal: killed" {
		t.Errorf("Up = %v; want an agent ended by signal: killed", err)
	}
}

// TestLabWorkloads attaches workloads through the real CNI plugin and runs
// the whole check: base checks and the connectivity matrix inside each
// cluster. It skips only while the binary has no `fabric cni`; a plugin or
// datapath that does not carry the traffic fails it.
func TestLabWorkloads(t *testing.T) {
	labtest.SkipUnlessAvailable(t)
	labtest.SkipUnlessCNI(t, labtest.Binary(t))
	before := rootNetState(t)
	l := labtest.New(t, lab.Spec{Clusters: 2, Nodes: 2, Workloads: 2, Mode: "vxlan", Timeout: 60 * time.Second})
	name, dir := l.Name(), lab.DefaultDir+"/"+l.Name()
	ctx := context.Background()

	// The bpffs is mounted with one folder per node.
	if !mounted(t, dir+"/bpffs") {
		t.Errorf("no bpffs at %s/bpffs", dir)
	}
	for _, n := range l.Nodes() {
		if _, err := os.Stat(dir + "/bpffs/" + n.Name); err != nil {
			t.Errorf("bpffs folder of %s: %v", n.Name, err)
		}
	}

	ws := l.Workloads()
	if len(ws) != 8 {
		t.Fatalf("%d workloads, want 8: %+v", len(ws), ws)
	}
	for _, w := range ws {
		if len(w.IPs) == 0 || w.ProbePID == 0 || !slices.Contains(netnsList(t), w.Namespace) {
			t.Errorf("workload %+v: no address, probe server or namespace", w)
		}
		// Exec reaches workloads by name, and the plugin's addresses
		// are on the workload's eth0.
		out, err := l.Exec(ctx, w.Name, "ip", "-o", "addr", "show", "dev", "eth0")
		if err != nil || len(w.IPs) > 0 && !strings.Contains(string(out), w.IPs[0].String()+"/") {
			t.Errorf("eth0 of %s = %q, %v; want %v", w.Name, out, err, w.IPs)
		}
	}

	start := time.Now()
	r, err := l.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	r.WriteText(&text)
	if !r.OK() {
		t.Errorf("check failed:\n%s", text.String())
	}
	// 2 workloads per node, 2 nodes: 12 ordered pairs per cluster.
	if min := 2 * 12 * 2 * 2; len(r.Probes) < min {
		t.Errorf("%d probes, want at least %d (TCP and UDP, both families):\n%s", len(r.Probes), min, text.String())
	}
	if !strings.Contains(text.String(), "cross-cluster") {
		t.Errorf("check does not say cross-cluster traffic was skipped:\n%s", text.String())
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("check took %s", d)
	}

	// A workload added later with its own labels; then removed.
	w, err := l.AddWorkload(ctx, "c1-n2", "web-1", "app=web")
	if err != nil {
		t.Fatal(err)
	}
	if w.Labels != "app=web" || w.Namespace != "fl-"+name+"-c1n2w3" || len(w.IPs) == 0 {
		t.Errorf("added workload %+v", w)
	}
	if _, err := l.AddWorkload(ctx, "c1-n1", "web-1", ""); err == nil {
		t.Error("a second workload web-1 was accepted")
	}
	if err := l.DelWorkload(ctx, "web-1"); err != nil {
		t.Error(err)
	}
	if slices.Contains(netnsList(t), w.Namespace) {
		t.Errorf("namespace %s left after DelWorkload", w.Namespace)
	}
	if _, ok := l.Workload("web-1"); ok {
		t.Error("web-1 still listed after DelWorkload")
	}

	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	if left := labNamespaces(t, name); len(left) > 0 {
		t.Errorf("namespaces left after Down: %v", left)
	}
	if mounted(t, dir+"/bpffs") {
		t.Error("bpffs still mounted after Down")
	}
	if after := rootNetState(t); after != before {
		t.Errorf("the machine's own namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestLabControlPlaneOnly checks a lab with mode none: agents without a
// datapath, no bpffs, no workloads, and a check that passes.
func TestLabControlPlaneOnly(t *testing.T) {
	labtest.SkipUnlessAvailable(t)
	l := labtest.New(t, lab.Spec{Nodes: 1, Mode: "none", Timeout: 60 * time.Second})
	if mounted(t, lab.DefaultDir+"/"+l.Name()+"/bpffs") {
		t.Error("mode none mounted a bpffs")
	}
	r, err := l.Check(context.Background())
	if err != nil || !r.OK() || len(r.Probes) != 0 {
		t.Errorf("check = %+v, %v", r, err)
	}
	if _, err := l.AddWorkload(context.Background(), "c1-n1", "", ""); err == nil {
		t.Error("a workload was attached without a datapath")
	}
}

func mounted(t *testing.T, dir string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}
