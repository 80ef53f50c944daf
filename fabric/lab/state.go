package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
)

// stateVersion changes when the state file changes incompatibly.
const stateVersion = 1

// state is what state.json holds. It is written before each resource is made
// (namespaces are listed before the first is created, a node's pid right
// after its process starts), so Down can undo a lab whose `up` crashed.
type state struct {
	Version     int            `json:"version"`
	Name        string         `json:"name"`
	Dir         string         `json:"dir"`
	Clusters    int            `json:"clusters"`
	Nodes       int            `json:"nodes"`
	Servers     int            `json:"servers"`
	Binary      string         `json:"binary,omitempty"`
	NoAgents    bool           `json:"noAgents,omitempty"`
	AgentConfig map[string]any `json:"agentConfig,omitempty"`
	Created     time.Time      `json:"created"`
	// Namespaces in creation order.
	Namespaces []string `json:"namespaces"`
	// GossipKeys holds one base64 key per cluster, index c-1.
	GossipKeys []string    `json:"gossipKeys"`
	NodeList   []nodeState `json:"nodeList"`
	// Mode is the datapath mode of every agent; empty in labs made before
	// modes existed, which ran without a datapath.
	Mode string `json:"mode,omitempty"`
	// Workloads is how many workloads per node `up` made.
	Workloads int `json:"workloads,omitempty"`
	// BPFFS is the bpffs mount point, recorded before mounting so Down
	// unmounts it even after a crash.
	BPFFS string `json:"bpffs,omitempty"`
	// WorkloadList holds every workload, recorded before its namespace
	// is made; IPs are filled in once the CNI plugin answers.
	WorkloadList []workloadState `json:"workloadList,omitempty"`
	// Racks per cluster (0 in labs made before racks: 1).
	Racks int `json:"racks,omitempty"`
	// BGP: FRR runs as the router, from RouterDir.
	BGP       bool   `json:"bgp,omitempty"`
	RouterDir string `json:"routerDir,omitempty"`
}

type workloadState struct {
	Name      string       `json:"name"`
	Node      string       `json:"node"`
	Cluster   int          `json:"cluster"`
	Index     int          `json:"index"` // the w<i> of the namespace
	Namespace string       `json:"namespace"`
	Labels    string       `json:"labels"`
	IPs       []netip.Addr `json:"ips,omitempty"`
	// Probe server: pid and start time, as for agents, and the file it
	// writes once it listens (also the argument that identifies it).
	ProbePID       int    `json:"probePID,omitempty"`
	ProbeStartTime uint64 `json:"probeStartTime,omitempty"`
	ProbeReady     string `json:"probeReady"`
}

type nodeState struct {
	Name      string       `json:"name"`
	Cluster   int          `json:"cluster"`
	Index     int          `json:"index"`
	Rack      int          `json:"rack,omitempty"` // 0 in old labs: 1
	Namespace string       `json:"namespace"`
	Underlay  []netip.Addr `json:"underlay"`
	Server    bool         `json:"server"`
	Dir       string       `json:"dir"`
	Config    string       `json:"config"`
	Socket    string       `json:"socket"`
	// PID and StartTime (clock ticks since boot, /proc/PID/stat field 22)
	// identify our agent process; the pair survives PID reuse.
	PID       int    `json:"pid,omitempty"`
	StartTime uint64 `json:"startTime,omitempty"`
}

// save writes the state atomically so a crash never leaves half a file.
func (s *state) save() error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	path := stateFile(s.Dir, s.Name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return nil
}

// errNoLab is returned by loadState when the lab has no state file.
var errNoLab = errors.New("no such lab")

func loadState(name, dir string) (*state, error) {
	data, err := os.ReadFile(stateFile(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab %q in %s: %w", name, dir, errNoLab)
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("lab %q: corrupt %s: %w (remove the lab with `fabric lab down --name %s`)", name, stateFile(dir, name), err, name)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("lab %q: state version %d, this binary reads %d: remove it with the fabric that made it", name, s.Version, stateVersion)
	}
	if s.Name != name {
		return nil, fmt.Errorf("lab %q: state file names lab %q", name, s.Name)
	}
	// The lab may have been made with another --dir spelling; trust where
	// we found it.
	s.Dir = dir
	return &s, nil
}
