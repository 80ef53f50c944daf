package lab

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// NodeStatus is one node as `fabric lab status` shows it.
type NodeStatus struct {
	Node      string `json:"node"`
	Cluster   string `json:"cluster"`
	Namespace string `json:"namespace"`
	Underlay  string `json:"underlay"`
	Server    bool   `json:"server"`
	PID       int    `json:"pid,omitempty"`
	Running   bool   `json:"running"`
	// Members counts the gossip members this node sees, by state.
	Members   map[string]int `json:"members,omitempty"`
	StoreRole string         `json:"storeRole,omitempty"`
	Leader    string         `json:"leader,omitempty"`
	PodCIDRs  []string       `json:"podCIDRs,omitempty"`
	// Identities and Endpoints are the agent's counts.
	Identities int `json:"identities"`
	Endpoints  int `json:"endpoints"`
	// Unhealthy lists the agent's failing health checks.
	Unhealthy []string `json:"unhealthy,omitempty"`
	// Error is why the node's API could not be read.
	Error string `json:"error,omitempty"`
}

// MemberSummary renders Members as "3 alive, 1 suspect".
func (s NodeStatus) MemberSummary() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s.Members)) {
		parts = append(parts, fmt.Sprintf("%d %s", s.Members[k], k))
	}
	return strings.Join(parts, ", ")
}

// Ready reports whether the node sees size members alive, a store leader
// and passes its own health checks (pod CIDR allocated), and if not, why.
func (s NodeStatus) Ready(size int) (bool, string) {
	switch {
	case s.Error != "":
		return false, s.Error
	case s.Members["alive"] < size:
		return false, fmt.Sprintf("%d of %d members alive (%s)", s.Members["alive"], size, s.MemberSummary())
	case s.Leader == "":
		return false, fmt.Sprintf("no store leader (store role %q)", s.StoreRole)
	case len(s.Unhealthy) > 0:
		return false, "unhealthy: " + strings.Join(s.Unhealthy, "; ")
	}
	return true, ""
}

// Status asks every node's agent for its view. Nodes whose agent is down or
// does not answer have Error set.
func (l *Lab) Status(ctx context.Context) []NodeStatus {
	var out []NodeStatus
	for _, n := range l.Nodes() {
		out = append(out, l.nodeStatus(ctx, n))
	}
	return out
}

func (l *Lab) nodeStatus(ctx context.Context, n Node) NodeStatus {
	s := NodeStatus{Node: n.Name, Cluster: n.Cluster, Namespace: n.Namespace, Server: n.Server}
	if len(n.Underlay) > 0 {
		s.Underlay = n.Underlay[0].String()
	}
	s.PID = l.PID(n.Name)
	s.Running = s.PID != 0
	if !s.Running {
		s.Error = "agent not running"
		return s
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := l.Client(n.Name).Status(ctx)
	if err != nil {
		s.Error = fmt.Sprintf("api: %v", err)
		return s
	}
	s.Members = map[string]int{}
	for _, m := range st.Members {
		s.Members[m.State]++
	}
	s.StoreRole, s.Leader, s.PodCIDRs = st.Store.Role, st.Store.Leader, st.Node.PodCIDRs
	s.Identities, s.Endpoints = st.Identities, st.Endpoints
	for _, name := range slices.Sorted(maps.Keys(st.Health.Checks)) {
		if v := st.Health.Checks[name]; v != "ok" {
			s.Unhealthy = append(s.Unhealthy, name+": "+v)
		}
	}
	return s
}

// exitError describes how n's agent ended, as far as this process knows.
func (l *Lab) exitError(n Node) *AgentExitError {
	l.mu.Lock()
	pid := 0
	if ns, err := l.nodeLocked(n.Name); err == nil {
		pid = ns.PID
	}
	l.mu.Unlock()
	l.exitMu.Lock()
	how := l.exits[pid]
	l.exitMu.Unlock()
	return &AgentExitError{Lab: l.st.Name, Node: n.Name, PID: pid, How: how, Log: l.LogTail(n.Name, 20)}
}

// WaitReady waits until each of the named nodes (all when none are named)
// reports every member of its cluster alive and a store leader. It fails
// at once if one of their agents is not running. When ctx ends first, the error names a node that is not ready, why, and the tail
// of its agent.log.
func (l *Lab) WaitReady(ctx context.Context, nodes ...string) error {
	var want []Node
	for _, n := range l.Nodes() {
		if len(nodes) == 0 || slices.Contains(nodes, n.Name) {
			want = append(want, n)
		}
	}
	if len(want) < len(nodes) {
		for _, name := range nodes {
			if _, ok := l.Node(name); !ok {
				return fmt.Errorf("lab %s has no node %q", l.st.Name, name)
			}
		}
	}
	size := l.st.Nodes
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		var notReady, why string
		for _, n := range want {
			s := l.nodeStatus(ctx, n)
			if !s.Running {
				// An agent that exited will not become ready; say
				// why now instead of at the deadline, once the lab's
				// reaper has had a moment to log how it ended.
				time.Sleep(200 * time.Millisecond)
				return l.exitError(n)
			}
			if ok, reason := s.Ready(size); !ok {
				notReady, why = n.Name, reason
				break
			}
		}
		if notReady == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			err := ctx.Err()
			if errors.Is(err, context.DeadlineExceeded) {
				err = errors.New("timed out")
			}
			return fmt.Errorf("lab %s: %v waiting for %s to be ready: %s; last lines of its agent.log:\n%s",
				l.st.Name, err, notReady, why, l.LogTail(notReady, 20))
		case <-tick.C:
		}
	}
}
