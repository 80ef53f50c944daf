// Package lab builds and removes the lab: the project's own small world on
// one machine, like kind is for Kubernetes. A lab is a set of network
// namespaces named fl-<lab>-*: per cluster a switch namespace holding a
// bridge, per node a namespace with one veth on that bridge, and one router
// namespace that joins the clusters at L3. Real agents run inside the node
// namespaces. The package owns those namespaces, links, processes and the
// lab's directory; it never adds an address, link or route to the machine's
// own namespace, and everything it makes it records first in state.json so
// Down can remove it even after a crash. It does not own what runs on top
// (workloads, checks); those use Exec, Client and the node list.
package lab

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fabric-net/fabric/fabric/api"
)

// Node is one node of a lab.
type Node struct {
	Name      string // c<c>-n<k>
	Cluster   string // c<c>
	Namespace string
	// Underlay holds the IPv4 and the IPv6 underlay address.
	Underlay []netip.Addr
	Server   bool
	Socket   string // the agent's local API
	Dir      string // agent.yaml, agent.log and data/
}

// Lab is a running lab. Its methods are safe for concurrent use.
type Lab struct {
	mu  sync.Mutex
	st  *state
	log io.Writer

	// exits says how each agent this process started and reaped ended,
	// by pid.
	exitMu sync.Mutex
	exits  map[int]string
}

// AgentExitError says that a node's agent ended while the lab waited for
// it to become ready.
type AgentExitError struct {
	Lab, Node string
	PID       int
	// How is how it ended ("exit status 1", "signal: killed"), known when
	// this process started the agent; empty otherwise.
	How string
	// Log is the tail of the agent's log.
	Log string
}

func (e *AgentExitError) Error() string {
	how := ""
	if e.How != "" {
		how = " (" + e.How + ")"
	}
	return fmt.Sprintf("lab %s: agent of %s exited%s; last lines of its agent.log:\n%s", e.Lab, e.Node, how, e.Log)
}

// RouterMember names the router namespace for Exec and Command.
const RouterMember = "router"

// ExtMember names the host outside every cluster, behind the router.
const ExtMember = "ext"

// ClientMember names cluster c's client: a host on the cluster's segment
// that is not a node (for ARP/NDP, node ports and load-balancer IPs).
func ClientMember(c int) string { return clientMember(c) }

// Up builds the lab described by spec, starts its agents and waits until
// every node is ready (see WaitReady). Progress goes to log.
//
// If building fails, Up removes what it made and returns only the error.
// If the agents do not become ready in time, Up returns the lab and the
// error, leaving the lab up for inspection: the caller must call Down.
func Up(ctx context.Context, spec Spec, log io.Writer) (*Lab, error) {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = io.Discard
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, ErrNoIproute2
	}
	if !spec.NoAgents {
		if spec.Binary == "" {
			exe, err := os.Executable()
			if err != nil {
				return nil, fmt.Errorf("find the fabric binary: %w (set --binary)", err)
			}
			spec.Binary = exe
		}
		if _, err := os.Stat(spec.Binary); err != nil {
			return nil, fmt.Errorf("--binary: %w", err)
		}
	}
	if _, err := os.Stat(stateFile(spec.Dir, spec.Name)); err == nil {
		return nil, fmt.Errorf("lab %q already exists: remove it with `fabric lab down --name %s` or pick another --name", spec.Name, spec.Name)
	}
	all, err := listNetns()
	if err != nil {
		return nil, err
	}
	for _, ns := range all {
		if ownsNamespace(spec.Name, ns) {
			return nil, fmt.Errorf("namespace %s of an earlier lab %q is left over: remove it with `fabric lab down --name %s`", ns, spec.Name, spec.Name)
		}
	}

	st, err := plan(spec)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(labDir(st.Dir, st.Name), 0o700); err != nil {
		return nil, fmt.Errorf("create lab dir: %w", err)
	}
	l := &Lab{st: st, log: log}
	fail := func(err error) (*Lab, error) {
		fmt.Fprintf(log, "lab %s: %v; removing it\n", st.Name, err)
		return nil, errors.Join(err, l.Down())
	}
	for i := range st.NodeList {
		if err := os.MkdirAll(st.NodeList[i].Dir+"/data", 0o700); err != nil {
			return fail(fmt.Errorf("create node dir: %w", err))
		}
	}
	// Record every namespace before creating the first.
	if err := st.save(); err != nil {
		return fail(err)
	}
	if st.BPFFS != "" {
		var nodes []string
		for _, n := range st.NodeList {
			nodes = append(nodes, n.Name)
		}
		if err := mountBPFFS(st.BPFFS, nodes); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintf(log, "lab %s: building %d cluster(s) of %d node(s), datapath %s\n", st.Name, st.Clusters, st.Nodes, st.Mode)
	if err := l.buildTopology(ctx); err != nil {
		return fail(err)
	}
	if st.BGP {
		if err := startRouter(st); err != nil {
			return fail(err)
		}
		fmt.Fprintf(log, "lab %s: FRR runs the router (AS %d); vtysh: fabric lab exec --name %s router -- vtysh --vty_socket %s\n",
			st.Name, RouterASN, st.Name, st.RouterDir)
	}
	if st.NoAgents {
		fmt.Fprintf(log, "lab %s: topology ready (no agents)\n", st.Name)
		return l, nil
	}
	for i := range st.NodeList {
		n := &st.NodeList[i]
		if err := writeAgentConfig(st, n); err != nil {
			return fail(err)
		}
		if err := l.startLocked(n); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintf(log, "lab %s: agents started, waiting up to %s for them to be ready\n", st.Name, spec.Timeout)
	wctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	if err := l.WaitReady(wctx); err != nil {
		return l, err
	}
	if err := l.addDefaultWorkloads(ctx); err != nil {
		return l, err
	}
	fmt.Fprintf(log, "lab %s: ready\n", st.Name)
	return l, nil
}

// addDefaultWorkloads makes Spec.Workloads workloads on every node.
func (l *Lab) addDefaultWorkloads(ctx context.Context) error {
	if l.st.Workloads == 0 {
		return nil
	}
	fmt.Fprintf(l.log, "lab %s: creating %d workload(s) per node through the CNI plugin\n", l.st.Name, l.st.Workloads)
	for _, n := range l.Nodes() {
		c, k := l.st.nodeIndex(n.Name)
		for i := 1; i <= l.st.Workloads; i++ {
			if _, err := l.AddWorkload(ctx, n.Name, workloadName(c, k, i), workloadLabels(c, k, i)); err != nil {
				return fmt.Errorf("lab %s: %w", l.st.Name, err)
			}
		}
	}
	return nil
}

// plan lays out the whole lab: names, addresses, paths and keys.
func plan(spec Spec) (*state, error) {
	st := &state{
		Version:     stateVersion,
		Name:        spec.Name,
		Dir:         spec.Dir,
		Clusters:    spec.Clusters,
		Nodes:       spec.Nodes,
		Servers:     spec.Servers,
		Binary:      spec.Binary,
		NoAgents:    spec.NoAgents,
		AgentConfig: spec.AgentConfig,
		Created:     time.Now().UTC().Truncate(time.Second),
		Namespaces:  []string{routerNS(spec.Name), extNS(spec.Name)},
		Mode:        spec.Mode,
		Workloads:   spec.Workloads,
		Racks:       spec.Racks,
		BGP:         spec.BGP,
	}
	if spec.BGP {
		st.RouterDir = labDir(spec.Dir, spec.Name) + "/router"
	}
	if !spec.NoAgents && spec.Mode != "none" {
		st.BPFFS = bpffsDir(spec.Dir, spec.Name)
	}
	for c := 1; c <= spec.Clusters; c++ {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("generate gossip key: %w", err)
		}
		st.GossipKeys = append(st.GossipKeys, base64.StdEncoding.EncodeToString(key))
		st.Namespaces = append(st.Namespaces, switchNS(spec.Name, c), clientNS(spec.Name, c))
		for k := 1; k <= spec.Nodes; k++ {
			name := nodeName(c, k)
			dir := nodeDir(spec.Dir, spec.Name, name)
			st.Namespaces = append(st.Namespaces, nodeNS(spec.Name, c, k))
			st.NodeList = append(st.NodeList, nodeState{
				Name:      name,
				Cluster:   c,
				Index:     k,
				Namespace: nodeNS(spec.Name, c, k),
				Rack:      rackOf(k, spec.Racks),
				Underlay:  rackNodeAddrs(c, rackOf(k, spec.Racks), k),
				Server:    k <= spec.Servers,
				Dir:       dir,
				Config:    dir + "/agent.yaml",
				Socket:    dir + "/api.sock",
			})
		}
	}
	return st, nil
}

// agentConfig is the agent.yaml of node n, as a map so the lab does not
// depend on the agent's config struct; Spec.AgentConfig wins.
func agentConfig(st *state, n *nodeState) map[string]any {
	var underlay, join []string
	for _, a := range n.Underlay {
		underlay = append(underlay, a.String())
	}
	for _, o := range st.NodeList {
		// Every node joins the servers of its cluster (over IPv4; one
		// address per server is enough), servers skip themselves.
		if o.Cluster == n.Cluster && o.Server && o.Name != n.Name {
			join = append(join, o.Underlay[0].String())
		}
	}
	m := map[string]any{
		"clusterName": clusterName(n.Cluster),
		"clusterID":   n.Cluster,
		"nodeName":    n.Name,
		"underlay":    underlay,
		"server":      n.Server,
		"gossipKeys":  []string{st.GossipKeys[n.Cluster-1]},
		"dataDir":     n.Dir + "/data",
		"socket":      n.Socket,
		"podPools":    podPools(n.Cluster),
		"logLevel":    "info",
		"logFormat":   "json",
		// A lab made before modes existed ran without a datapath.
		"datapathMode":      cmp.Or(st.Mode, "none"),
		"underlayInterface": "eth0",
		"underlayMTU":       1500,
	}
	if st.BPFFS != "" {
		m["bpfPinDir"] = st.BPFFS + "/" + n.Name
	}
	if st.BGP {
		var peers []map[string]any
		for _, a := range rackRouterAddrs(n.Cluster, n.Rack) {
			// Short timers: a lab node that hangs is noticed in seconds.
			peers = append(peers, map[string]any{"address": a.String(), "remoteASN": RouterASN, "holdTime": "9s", "keepalive": "3s"})
		}
		m["bgp"] = map[string]any{"localASN": NodeASN(n.Cluster, n.Index), "peers": peers}
	}
	if st.Mode != "" && st.Mode != "none" {
		// Nodes answer ARP/NDP for the load-balancer IPs an L2 policy
		// gives them; without a policy they answer for none.
		m["l2Announcements"] = true
	}
	m["nodeLabels"] = []string{fmt.Sprintf("rack=r%d", max(n.Rack, 1))}
	if len(join) > 0 {
		m["join"] = join
	}
	if n.Server {
		m["bootstrapExpect"] = st.Servers
	}
	maps.Copy(m, st.AgentConfig)
	return m
}

func writeAgentConfig(st *state, n *nodeState) error {
	data, err := yaml.Marshal(agentConfig(st, n))
	if err != nil {
		return fmt.Errorf("encode agent config of %s: %w", n.Name, err)
	}
	if err := os.WriteFile(n.Config, data, 0o600); err != nil {
		return fmt.Errorf("write agent config of %s: %w", n.Name, err)
	}
	return nil
}

// Load returns the lab called name under dir (DefaultDir if empty) from its
// state file.
func Load(name, dir string) (*Lab, error) {
	if dir == "" {
		dir = DefaultDir
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	st, err := loadState(name, dir)
	if err != nil {
		return nil, err
	}
	return &Lab{st: st, log: io.Discard}, nil
}

// IsNotExist reports whether err says that a lab does not exist.
func IsNotExist(err error) bool { return errors.Is(err, errNoLab) }

// List returns the names of the labs under dir (DefaultDir if empty).
func List(dir string) ([]string, error) {
	if dir == "" {
		dir = DefaultDir
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list labs: %w", err)
	}
	var names []string
	for _, e := range ents {
		if ValidateName(e.Name()) != nil {
			continue
		}
		if _, err := os.Stat(stateFile(dir, e.Name())); err == nil {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// SetLog sends the lab's progress lines to w.
func (l *Lab) SetLog(w io.Writer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log = w
}

// Name returns the lab's name.
func (l *Lab) Name() string { return l.st.Name }

// Spec returns the spec the lab was built from (Timeout is not kept).
func (l *Lab) Spec() Spec {
	return Spec{
		Name: l.st.Name, Clusters: l.st.Clusters, Nodes: l.st.Nodes, Servers: l.st.Servers,
		Binary: l.st.Binary, AgentConfig: l.st.AgentConfig, Dir: l.st.Dir, NoAgents: l.st.NoAgents,
		Mode: cmp.Or(l.st.Mode, "none"), Workloads: l.st.Workloads,
	}
}

// Nodes returns every node, cluster by cluster.
func (l *Lab) Nodes() []Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Node
	for _, n := range l.st.NodeList {
		out = append(out, publicNode(n))
	}
	return out
}

// Node returns the node called name.
func (l *Lab) Node(name string) (Node, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.nodeLocked(name)
	if err != nil {
		return Node{}, false
	}
	return publicNode(*n), true
}

func publicNode(n nodeState) Node {
	return Node{
		Name: n.Name, Cluster: clusterName(n.Cluster), Namespace: n.Namespace,
		Underlay: slices.Clone(n.Underlay), Server: n.Server, Socket: n.Socket, Dir: n.Dir,
	}
}

func (l *Lab) nodeLocked(name string) (*nodeState, error) {
	for i := range l.st.NodeList {
		if l.st.NodeList[i].Name == name {
			return &l.st.NodeList[i], nil
		}
	}
	return nil, fmt.Errorf("lab %s has no node %q: use one of %s", l.st.Name, name, strings.Join(l.memberNames(), ", "))
}

// nodeIndex returns the cluster and index of the node called name.
func (st *state) nodeIndex(name string) (c, k int) {
	for _, n := range st.NodeList {
		if n.Name == name {
			return n.Cluster, n.Index
		}
	}
	return 0, 0
}

func (l *Lab) memberNames() []string {
	names := []string{RouterMember, ExtMember}
	for c := 1; c <= l.st.Clusters; c++ {
		names = append(names, switchMember(c), clientMember(c))
	}
	for _, n := range l.st.NodeList {
		names = append(names, n.Name)
	}
	for _, w := range l.st.WorkloadList {
		names = append(names, w.Name)
	}
	return names
}

// Client returns a client for node's local API. For an unknown node it
// returns a client whose calls fail.
func (l *Lab) Client(node string) *api.Client {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.nodeLocked(node)
	if err != nil {
		return api.NewClient(labDir(l.st.Dir, l.st.Name) + "/no-such-node.sock")
	}
	return api.NewClient(n.Socket)
}

// Running reports whether node's agent process is alive.
func (l *Lab) Running(node string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.nodeLocked(node)
	return err == nil && n.running()
}

// PID returns the pid of node's agent, or 0 when it is not running.
func (l *Lab) PID(node string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.nodeLocked(node)
	if err != nil || !n.running() {
		return 0
	}
	return n.PID
}

// Kill sends sig to node's agent. It signals only the process the lab
// started (same pid, start time and config), never a reused pid; after
// SIGKILL it waits for the process to be gone.
func (l *Lab) Kill(node string, sig syscall.Signal) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.nodeLocked(node)
	if err != nil {
		return err
	}
	if !n.running() {
		return fmt.Errorf("agent of %s is not running", node)
	}
	if err := syscall.Kill(n.PID, sig); err != nil {
		return fmt.Errorf("signal agent of %s (pid %d): %w", node, n.PID, err)
	}
	if sig != syscall.SIGKILL {
		return nil
	}
	// SIGKILL cannot be caught: wait until the process is gone so that a
	// Start right after it does not find the old agent still there.
	for deadline := time.Now().Add(5 * time.Second); n.running(); {
		if time.Now().After(deadline) {
			return fmt.Errorf("agent of %s (pid %d) still running 5s after SIGKILL", node, n.PID)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Start starts node's agent again with the same config and data dir. It
// fails if the agent is still running.
func (l *Lab) Start(node string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.nodeLocked(node)
	if err != nil {
		return err
	}
	if l.st.NoAgents {
		return fmt.Errorf("lab %s was built without agents", l.st.Name)
	}
	if n.running() {
		return fmt.Errorf("agent of %s is still running (pid %d): Kill it first", node, n.PID)
	}
	return l.startLocked(n)
}

// startLocked starts n's agent inside its namespace in a session of its
// own, so it outlives `fabric lab up` and a Ctrl-C in that terminal.
func (l *Lab) startLocked(n *nodeState) error {
	logf, err := os.OpenFile(n.Dir+"/agent.log", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open agent log of %s: %w", n.Name, err)
	}
	defer logf.Close()
	// `ip netns exec` execs the binary, so the pid we get is the agent's.
	cmd := exec.Command("ip", "netns", "exec", n.Namespace, l.st.Binary, "agent", "--config", n.Config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start agent of %s: %w", n.Name, err)
	}
	// Reap it if it dies while we run, so it does not linger as a zombie,
	// and say how it ended: an agent killed by a signal writes nothing.
	go l.reapAgent(cmd, n.Name, n.Dir+"/agent.log", time.Now())
	start, _, err := procInfo(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("start agent of %s: it exited at once (see %s/agent.log): %w", n.Name, n.Dir, err)
	}
	n.PID, n.StartTime = cmd.Process.Pid, start
	fmt.Fprintf(l.log, "lab %s: started agent of %s (pid %d)\n", l.st.Name, n.Name, n.PID)
	return l.st.save()
}

// reapAgent waits for an agent the lab started and appends how it ended to
// its log, with how long it ran.
func (l *Lab) reapAgent(cmd *exec.Cmd, node, logPath string, started time.Time) {
	err := cmd.Wait()
	how := "exit status 0"
	if err != nil {
		how = err.Error()
	}
	l.exitMu.Lock()
	if l.exits == nil {
		l.exits = map[int]string{}
	}
	l.exits[cmd.Process.Pid] = how
	l.exitMu.Unlock()
	f, ferr := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
	if ferr != nil {
		return // the lab is gone
	}
	defer f.Close()
	fmt.Fprintf(f, "lab: agent of %s (pid %d) ended after %s: %s\n",
		node, cmd.Process.Pid, time.Since(started).Round(time.Millisecond), how)
}

// LinkDown cuts node off the network by setting its switch port down,
// inside the switch namespace; the node sees its link lose carrier.
func (l *Lab) LinkDown(node string) error { return l.setPort(node, "down") }

// LinkUp undoes LinkDown.
func (l *Lab) LinkUp(node string) error { return l.setPort(node, "up") }

func (l *Lab) setPort(node, updown string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.nodeLocked(node)
	if err != nil {
		return err
	}
	if err := ipIn(switchNS(l.st.Name, n.Cluster), "link", "set", switchPort(n.Index), updown); err != nil {
		return fmt.Errorf("set link of %s %s: %w", node, updown, err)
	}
	return nil
}

// Command returns a command that runs argv inside member's namespace:
// a node name, a workload name, RouterMember or a switch (c<c>-sw). For
// nodes FABRIC_SOCKET points at the node's agent, so `fabric status` works
// inside.
func (l *Lab) Command(ctx context.Context, member string, argv ...string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, errors.New("no command to run")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	env := os.Environ()
	var ns string
	switch {
	case member == RouterMember:
		ns = routerNS(l.st.Name)
	case member == ExtMember:
		ns = extNS(l.st.Name)
	default:
		for c := 1; c <= l.st.Clusters; c++ {
			if member == switchMember(c) {
				ns = switchNS(l.st.Name, c)
			}
			if member == clientMember(c) {
				ns = clientNS(l.st.Name, c)
			}
		}
		if w := l.workloadLocked(member); ns == "" && w != nil {
			ns = w.Namespace
		}
		if ns == "" {
			n, err := l.nodeLocked(member)
			if err != nil {
				return nil, err
			}
			ns = n.Namespace
			env = append(env, "FABRIC_SOCKET="+n.Socket)
		}
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Env = env
	return cmd, nil
}

// Exec runs argv inside member's namespace (see Command) and returns its
// combined output; on failure the error holds the output too.
func (l *Lab) Exec(ctx context.Context, member string, argv ...string) ([]byte, error) {
	cmd, err := l.Command(ctx, member, argv...)
	if err != nil {
		return nil, err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s on %s: %w: %s", strings.Join(argv, " "), member, err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// LogTail returns the last n lines of node's agent.log.
func (l *Lab) LogTail(node string, n int) string {
	l.mu.Lock()
	ns, err := l.nodeLocked(node)
	l.mu.Unlock()
	if err != nil {
		return ""
	}
	data, err := os.ReadFile(ns.Dir + "/agent.log")
	if err != nil {
		return fmt.Sprintf("(no agent.log: %v)", err)
	}
	return lastLines(string(data), n)
}
