package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Workload is a network namespace attached to a node through the real CNI
// plugin, with a probe server running inside it.
type Workload struct {
	Name      string       `json:"name"`
	Node      string       `json:"node"`
	Cluster   string       `json:"cluster"`
	Namespace string       `json:"namespace"`
	Labels    string       `json:"labels"`
	IPs       []netip.Addr `json:"ips"`
	// ProbePID is the probe server's pid, 0 when it is not running.
	ProbePID int `json:"probePID,omitempty"`
}

// probeStartWait bounds the wait for a probe server to listen.
const probeStartWait = 5 * time.Second

// Workloads returns every workload, in creation order.
func (l *Lab) Workloads() []Workload {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Workload
	for i := range l.st.WorkloadList {
		out = append(out, publicWorkload(&l.st.WorkloadList[i]))
	}
	return out
}

// Workload returns the workload called name.
func (l *Lab) Workload(name string) (Workload, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.workloadLocked(name)
	if w == nil {
		return Workload{}, false
	}
	return publicWorkload(w), true
}

func publicWorkload(w *workloadState) Workload {
	out := Workload{
		Name: w.Name, Node: w.Node, Cluster: clusterName(w.Cluster), Namespace: w.Namespace,
		Labels: w.Labels, IPs: slices.Clone(w.IPs),
	}
	if w.probeRunning() {
		out.ProbePID = w.ProbePID
	}
	return out
}

func (l *Lab) workloadLocked(name string) *workloadState {
	for i := range l.st.WorkloadList {
		if l.st.WorkloadList[i].Name == name {
			return &l.st.WorkloadList[i]
		}
	}
	return nil
}

// AddWorkload creates a workload on node: a namespace, attached by the CNI
// plugin (ADD) run inside the node's namespace and talking to its agent,
// and a probe server inside it. An empty name picks the next default name
// (c<c>-n<k>-w<i>); labels are "k=v,..." and reach the agent unchanged. On
// failure nothing of the workload is left behind.
func (l *Lab) AddWorkload(ctx context.Context, node, name, labels string) (Workload, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	unlock, err := l.lockState()
	if err != nil {
		return Workload{}, err
	}
	defer unlock()
	w, err := l.addWorkloadLocked(ctx, node, name, labels)
	if err != nil {
		return Workload{}, err
	}
	return publicWorkload(w), nil
}

func (l *Lab) addWorkloadLocked(ctx context.Context, node, name, labels string) (*workloadState, error) {
	st := l.st
	switch {
	case st.NoAgents:
		return nil, fmt.Errorf("lab %s has no agents to attach workloads to", st.Name)
	case st.Mode == "" || st.Mode == "none":
		return nil, fmt.Errorf("lab %s runs without a datapath (mode none): make one with --mode vxlan, geneve or native for workloads", st.Name)
	}
	n, err := l.nodeLocked(node)
	if err != nil {
		return nil, err
	}
	// The lowest index free on the node names the namespace.
	index := 1
	for slices.ContainsFunc(st.WorkloadList, func(w workloadState) bool { return w.Node == n.Name && w.Index == index }) {
		index++
	}
	if name == "" {
		name = workloadName(n.Cluster, n.Index, index)
	}
	if err := ValidateWorkloadName(name); err != nil {
		return nil, err
	}
	if l.workloadLocked(name) != nil || slices.Contains(l.memberNames(), name) {
		return nil, fmt.Errorf("lab %s already has a member or workload called %q: pick another name", st.Name, name)
	}
	if _, err := parseLabels(labels); err != nil {
		return nil, fmt.Errorf("--labels: %w", err)
	}
	st.WorkloadList = append(st.WorkloadList, workloadState{
		Name:       name,
		Node:       n.Name,
		Cluster:    n.Cluster,
		Index:      index,
		Namespace:  workloadNS(st.Name, n.Cluster, n.Index, index),
		Labels:     labels,
		ProbeReady: probeReadyFile(st.Dir, st.Name, name),
	})
	w := &st.WorkloadList[len(st.WorkloadList)-1]
	// Recorded before anything is made, so Down finds it after a crash.
	if err := st.save(); err != nil {
		st.WorkloadList = st.WorkloadList[:len(st.WorkloadList)-1]
		return nil, err
	}
	fail := func(err error) (*workloadState, error) {
		if derr := l.delWorkloadLocked(context.WithoutCancel(ctx), name); derr != nil {
			err = errors.Join(err, fmt.Errorf("clean up workload %s: %w", name, derr))
		}
		return nil, err
	}
	if err := os.MkdirAll(labDir(st.Dir, st.Name)+"/workloads", 0o700); err != nil {
		return fail(fmt.Errorf("create workloads dir: %w", err))
	}
	if err := addNetns(w.Namespace); err != nil {
		return fail(err)
	}
	// IPv6 addresses the plugin adds must be usable at once (the eth0 it
	// creates inherits "default").
	for _, key := range []string{"net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"} {
		if err := sysctlIn(w.Namespace, key, "0"); err != nil {
			return fail(err)
		}
	}
	if err := ipIn(w.Namespace, "link", "set", "lo", "up"); err != nil {
		return fail(err)
	}
	out, err := cniCall(ctx, st.Binary, "ADD", n, w)
	if err != nil {
		return fail(err)
	}
	ips, err := parseCNIResult(out)
	if err != nil {
		return fail(fmt.Errorf("CNI ADD of %s on %s: %w", name, n.Name, err))
	}
	w.IPs = ips
	if err := st.save(); err != nil {
		return fail(err)
	}
	if err := l.startProbeLocked(ctx, w); err != nil {
		return fail(err)
	}
	fmt.Fprintf(l.log, "lab %s: workload %s on %s (%s) has %v\n", st.Name, name, n.Name, w.Namespace, ips)
	return w, nil
}

// startProbeLocked starts w's probe server inside its namespace, in a
// session of its own like the agents, and waits until it listens.
func (l *Lab) startProbeLocked(ctx context.Context, w *workloadState) error {
	os.Remove(w.ProbeReady)
	logPath := labDir(l.st.Dir, l.st.Name) + "/workloads/" + w.Name + ".log"
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open probe log of %s: %w", w.Name, err)
	}
	defer logf.Close()
	port := strconv.Itoa(ProbePort)
	cmd := exec.Command("ip", "netns", "exec", w.Namespace, l.st.Binary, "lab", "probe-serve",
		"--tcp", port, "--udp", port, "--ready-file", w.ProbeReady)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start probe server of %s: %w", w.Name, err)
	}
	go cmd.Wait() //nolint:errcheck // the exit status is in the log
	start, _, err := procInfo(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("start probe server of %s: it exited at once (see %s): %w", w.Name, logPath, err)
	}
	w.ProbePID, w.ProbeStartTime = cmd.Process.Pid, start
	if err := l.st.save(); err != nil {
		return err
	}
	for deadline := time.Now().Add(probeStartWait); ; {
		if _, err := os.Stat(w.ProbeReady); err == nil {
			return nil
		}
		// Not probeRunning: its command line reads empty for an instant
		// while `ip netns exec` execs the server.
		if _, state, err := procInfo(w.ProbePID); err != nil || state == 'Z' {
			return fmt.Errorf("probe server of %s exited: %s", w.Name, tailFile(logPath, 5))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("probe server of %s is not listening after %s: %s", w.Name, probeStartWait, tailFile(logPath, 5))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// DelWorkload removes the workload called name: it stops its probe server,
// runs the CNI plugin's DEL and deletes its namespace. The workload is gone
// from the lab even when DEL fails; the error then says so.
func (l *Lab) DelWorkload(ctx context.Context, name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	unlock, err := l.lockState()
	if err != nil {
		return err
	}
	defer unlock()
	if l.workloadLocked(name) == nil {
		var names []string
		for _, w := range l.st.WorkloadList {
			names = append(names, w.Name)
		}
		return fmt.Errorf("lab %s has no workload %q (workloads: %v)", l.st.Name, name, names)
	}
	return l.delWorkloadLocked(ctx, name)
}

func (l *Lab) delWorkloadLocked(ctx context.Context, name string) error {
	w := l.workloadLocked(name)
	if w == nil {
		return nil
	}
	errs := removeWorkload(ctx, l.st, w)
	l.st.WorkloadList = slices.DeleteFunc(l.st.WorkloadList, func(o workloadState) bool { return o.Name == name })
	if err := l.st.save(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeWorkload undoes a workload: probe server, CNI DEL (when the
// namespace exists, so it was made), namespace and files. Shared with
// teardown, which has no Lab.
func removeWorkload(ctx context.Context, st *state, w *workloadState) []error {
	var errs []error
	if w.probeRunning() {
		if err := stopProcs(func(a string) bool { return a == w.ProbeReady }, "probe server", []int{w.ProbePID}, time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat("/run/netns/" + w.Namespace); err == nil {
		for i := range st.NodeList {
			if n := &st.NodeList[i]; n.Name == w.Node && st.Binary != "" {
				if _, err := cniCall(ctx, st.Binary, "DEL", n, w); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if ownsNamespace(st.Name, w.Namespace) {
			if err := delNetns(w.Namespace); err != nil {
				errs = append(errs, err)
			}
		}
	}
	os.Remove(w.ProbeReady)
	return errs
}

// lockState takes the lab's lock file, so that two `fabric lab workload`
// commands do not overwrite each other's state, and reloads the state
// another process may have changed. The caller holds l.mu.
func (l *Lab) lockState() (unlock func(), err error) {
	f, err := os.OpenFile(labDir(l.st.Dir, l.st.Name)+"/lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock lab %s: %w", l.st.Name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock lab %s: %w", l.st.Name, err)
	}
	unlock = func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
	fresh, err := loadState(l.st.Name, l.st.Dir)
	if err != nil {
		unlock()
		return nil, err
	}
	l.st = fresh
	return unlock, nil
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return lastLines(string(data), n)
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
