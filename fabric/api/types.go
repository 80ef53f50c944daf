// Package api is the agent's local API: versioned JSON over a unix socket.
// It holds the wire types and the client; the agent serves it. Paths start
// with /v1/ and a breaking change gets a new prefix.
package api

import "time"

// Status is what `fabric status` shows.
type Status struct {
	Node       NodeInfo       `json:"node"`
	Members    []Member       `json:"members"`
	Store      StoreStatus    `json:"store"`
	NodeCIDRs  []NodeCIDRs    `json:"nodeCIDRs"`
	Identities int            `json:"identities"`
	Endpoints  int            `json:"endpoints"`
	Datapath   DatapathStatus `json:"datapath"`
	// BGP is nil when the node runs no BGP speaker.
	BGP    *BGPStatus   `json:"bgp,omitempty"`
	Health HealthStatus `json:"health"`
}

// DatapathStatus is what the node's datapath was last given.
type DatapathStatus struct {
	Mode      string    `json:"mode"`
	MTU       int       `json:"mtu"`
	Endpoints int       `json:"endpoints"`
	IPCache   int       `json:"ipcache"`
	Services  int       `json:"services"`
	LastApply time.Time `json:"lastApply"`
	Error     string    `json:"error,omitempty"`
}

// NodeInfo describes the local node.
type NodeInfo struct {
	Name        string    `json:"name"`
	Cluster     string    `json:"cluster"`
	ClusterID   uint32    `json:"clusterID"`
	Underlay    []string  `json:"underlay"`
	Roles       []string  `json:"roles"`
	Version     string    `json:"version"`
	PodCIDRs    []string  `json:"podCIDRs"`
	StartedAt   time.Time `json:"startedAt"`
	GossipAddr  string    `json:"gossipAddr"`
	GossipKeyID string    `json:"gossipKeyID,omitempty"`
}

// Member is one gossip member as this node sees it.
type Member struct {
	Name     string    `json:"name"`
	Addr     string    `json:"addr"`
	State    string    `json:"state"` // alive, suspect, dead, left
	Since    time.Time `json:"since"`
	Roles    []string  `json:"roles"`
	PodCIDRs []string  `json:"podCIDRs"`
	Health   string    `json:"health"`
}

// StoreStatus is the local view of the Raft store.
type StoreStatus struct {
	Role         string        `json:"role"` // leader, follower, candidate, client, bootstrapping
	Leader       string        `json:"leader"`
	Term         uint64        `json:"term"`
	CommitIndex  uint64        `json:"commitIndex"`
	AppliedIndex uint64        `json:"appliedIndex"`
	Revision     int64         `json:"revision"`
	Servers      []StoreServer `json:"servers"`
	LastContact  time.Duration `json:"lastContact"`
	Error        string        `json:"error,omitempty"`
}

// StoreServer is one Raft server in the configuration.
type StoreServer struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	Voter bool   `json:"voter"`
	Alive bool   `json:"alive"`
}

// NodeCIDRs is one node's pod CIDRs as recorded in the store.
type NodeCIDRs struct {
	Node  string   `json:"node"`
	CIDRs []string `json:"cidrs"`
}

// HealthStatus sums up the node: OK only when every check passes.
type HealthStatus struct {
	OK     bool              `json:"ok"`
	Checks map[string]string `json:"checks"` // check name → "ok" or the problem
}

// EndpointRequest asks the agent for a new endpoint (a workload attachment).
type EndpointRequest struct {
	// ID is unique on the node, e.g. the container ID plus interface name.
	ID string `json:"id"`
	// Labels in the form "k=v,k2=v2".
	Labels string `json:"labels"`
	// ContainerID, Netns and IfName are what the runtime gave the CNI
	// plugin; they are recorded for CHECK and for operators.
	ContainerID string `json:"containerID,omitempty"`
	Netns       string `json:"netns,omitempty"`
	IfName      string `json:"ifName,omitempty"`
}

// Endpoint is a workload attachment with its addresses and identity.
type Endpoint struct {
	ID          string    `json:"id"`
	Node        string    `json:"node"`
	IPs         []string  `json:"ips"`
	Gateways    []string  `json:"gateways,omitempty"`
	Identity    uint32    `json:"identity"`
	Labels      string    `json:"labels"`
	Created     time.Time `json:"created"`
	ContainerID string    `json:"containerID,omitempty"`
	Netns       string    `json:"netns,omitempty"`
	IfName      string    `json:"ifName,omitempty"`
	// MTU is the MTU the workload's interface must have in the cluster's
	// datapath mode (the underlay's minus the encapsulation overhead).
	MTU int `json:"mtu,omitempty"`
	// Attachment is set once the CNI plugin has created the interface and
	// the datapath serves it.
	Attachment *Attachment `json:"attachment,omitempty"`
}

// Attachment describes the host side of a workload's interface, reported
// by the CNI plugin after it created the veth pair.
type Attachment struct {
	HostIfName    string `json:"hostIfName"`
	HostIfIndex   int    `json:"hostIfIndex"`
	HostMAC       string `json:"hostMAC"`
	WorkloadMAC   string `json:"workloadMAC"`
	WorkloadIndex int    `json:"workloadIfIndex,omitempty"`
}

// KV is one store key as the debugging endpoints show it.
type KV struct {
	Key         string `json:"key"`
	Value       string `json:"value"`
	ModRevision int64  `json:"modRevision"`
}

// PutRequest writes a key; with IfModRevision set (0 = must not exist) it is
// a compare-and-set.
type PutRequest struct {
	Key           string `json:"key"`
	Value         string `json:"value"`
	IfModRevision *int64 `json:"ifModRevision,omitempty"`
}

// PutResult says whether the write happened and at which revision.
type PutResult struct {
	Succeeded bool  `json:"succeeded"`
	Revision  int64 `json:"revision"`
}

// KeyringRequest changes the gossip keyring on this node.
type KeyringRequest struct {
	Op  string `json:"op"` // install, use, remove
	Key string `json:"key"`
}

// Keyring lists the gossip keys of this node by their IDs (a short hash;
// the keys themselves never leave the node through the API).
type Keyring struct {
	Primary string   `json:"primary"`
	Keys    []string `json:"keys"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
}

// IPCacheEntry is one entry of a node's datapath IP cache as the kernel
// holds it: a prefix, the identity of its addresses, and the node (underlay
// address) that serves it.
type IPCacheEntry struct {
	Prefix   string `json:"prefix"`
	Identity uint32 `json:"identity"`
	Node     string `json:"node,omitempty"`
}

// IdentityFlow counts packets the datapath delivered from one identity to
// another: the source identity is what the receiving side resolved.
type IdentityFlow struct {
	Source      uint32 `json:"source"`
	Destination uint32 `json:"destination"`
	Packets     uint64 `json:"packets"`
}

// PolicyInfo is one stored policy.
type PolicyInfo struct {
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace,omitempty"`
	Name      string   `json:"name"`
	Rules     int      `json:"rules"`
	Warnings  []string `json:"warnings,omitempty"`
	YAML      string   `json:"yaml"`
}

// TraceEnd names one side of a policy trace: labels, an endpoint
// ("node/id" or the ID), or an identity.
type TraceEnd struct {
	Labels   string `json:"labels,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	Identity uint32 `json:"identity,omitempty"`
}

// TraceRequest asks whether traffic From → To on Port/Proto is allowed.
type TraceRequest struct {
	From  TraceEnd `json:"from"`
	To    TraceEnd `json:"to"`
	Port  uint16   `json:"port"`
	Proto string   `json:"proto"`
}

// DirectionTrace is the verdict of the source's egress or the
// destination's ingress.
type DirectionTrace struct {
	Verdict  string `json:"verdict"`
	Enforced bool   `json:"enforced"`
	Rule     string `json:"rule,omitempty"`
	Reason   string `json:"reason"`
}

// TraceResult is the answer of a policy trace.
type TraceResult struct {
	Verdict      string         `json:"verdict"`
	DecidingRule string         `json:"decidingRule,omitempty"`
	Reason       string         `json:"reason"`
	Egress       DirectionTrace `json:"egress"`
	Ingress      DirectionTrace `json:"ingress"`
}

// Flow is one datapath event as `fabric observe` shows it: a connection's
// first packet, its end, or a drop.
type Flow struct {
	Time      time.Time `json:"time"`
	Node      string    `json:"node"`
	Event     string    `json:"event"`   // new, end, drop
	Verdict   string    `json:"verdict"` // forwarded, dropped
	Reason    string    `json:"reason,omitempty"`
	Direction string    `json:"direction"` // ingress or egress of the local endpoint
	Proto     string    `json:"proto"`
	Source    FlowPeer  `json:"source"`
	Dest      FlowPeer  `json:"destination"`
	// Service is the frontend (IP:port) a workload's connection was sent
	// to, when the datapath translated it to Dest.
	Service string `json:"service,omitempty"`
}

// FlowPeer is one end of a flow.
type FlowPeer struct {
	IP       string `json:"ip"`
	Port     uint16 `json:"port,omitempty"`
	Identity uint32 `json:"identity"`
	Labels   string `json:"labels,omitempty"`
	Endpoint string `json:"endpoint,omitempty"` // set for this node's endpoints
}

// FlowFilter selects flows; empty fields match everything. A flow matches
// when either end matches Labels, Identity, IP and Port.
type FlowFilter struct {
	Labels   string `json:"labels,omitempty"`
	Identity uint32 `json:"identity,omitempty"`
	IP       string `json:"ip,omitempty"`
	Port     uint16 `json:"port,omitempty"`
	Proto    string `json:"proto,omitempty"`
	Verdict  string `json:"verdict,omitempty"`
}

// ServicePort is one port of a service.
type ServicePort struct {
	Name       string `json:"name,omitempty"`
	Protocol   string `json:"protocol"`
	Port       uint16 `json:"port"`
	TargetPort string `json:"targetPort"`
	NodePort   uint16 `json:"nodePort,omitempty"`
}

// ServiceBackend is one backend of a service port, as a node's datapath
// uses it.
type ServiceBackend struct {
	Addr     string `json:"addr"` // IP:port
	Port     string `json:"port"` // the service port it serves, PROTO/port
	Node     string `json:"node"`
	Endpoint string `json:"endpoint"`
}

// ServiceInfo is one stored service, with what the cluster allocated and
// the backends the answering node uses.
type ServiceInfo struct {
	Namespace       string           `json:"namespace"`
	Name            string           `json:"name"`
	Type            string           `json:"type"`
	ClusterIP       string           `json:"clusterIP,omitempty"`
	Ports           []ServicePort    `json:"ports"`
	Selector        string           `json:"selector"`
	LoadBalancerIPs []string         `json:"loadBalancerIPs,omitempty"`
	ExternalIPs     []string         `json:"externalIPs,omitempty"`
	Affinity        string           `json:"affinity,omitempty"`
	ExternalPolicy  string           `json:"externalTrafficPolicy"`
	InternalPolicy  string           `json:"internalTrafficPolicy"`
	Backends        []ServiceBackend `json:"backends,omitempty"`
	// Conditions say why a LoadBalancer service lacks addresses it needs.
	Conditions []string `json:"conditions,omitempty"`
}

// LBPoolInfo is one load-balancer IP pool with its use.
type LBPoolInfo struct {
	Name     string   `json:"name"`
	Blocks   []string `json:"blocks"`
	Used     uint64   `json:"used"`
	Free     uint64   `json:"free"`
	Disabled bool     `json:"disabled,omitempty"`
	// Gone: addresses are still assigned from a pool that was removed.
	Gone bool `json:"gone,omitempty"`
}

// L2PolicyInfo is one stored L2 announcement policy.
type L2PolicyInfo struct {
	Name            string   `json:"name"`
	Interfaces      []string `json:"interfaces,omitempty"`
	LoadBalancerIPs bool     `json:"loadBalancerIPs"`
	ExternalIPs     bool     `json:"externalIPs"`
	YAML            string   `json:"yaml"`
}

// L2Owned is one address a node answers ARP/NDP for.
type L2Owned struct {
	IP         string   `json:"ip"`
	Interfaces []string `json:"interfaces"`
}

// L2Status is what a node announces on its segments.
type L2Status struct {
	Enabled   bool      `json:"enabled"`
	Owned     []L2Owned `json:"owned,omitempty"`
	LinksDown []string  `json:"linksDown,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// BGPPeer is one BGP session of a node.
type BGPPeer struct {
	Address    string `json:"address"`
	ASN        uint32 `json:"asn"`
	State      string `json:"state"`
	Uptime     string `json:"uptime"`
	Received   uint64 `json:"received"`
	Accepted   uint64 `json:"accepted"`
	Advertised uint64 `json:"advertised"`
}

// BGPRoute is one route a node learned.
type BGPRoute struct {
	Prefix  string   `json:"prefix"`
	NextHop string   `json:"nextHop"`
	ASPath  []uint32 `json:"asPath,omitempty"`
	Peer    string   `json:"peer,omitempty"`
}

// BGPStatus is a node's BGP speaker: its sessions, what it announces and
// what it learned.
type BGPStatus struct {
	LocalASN    uint32     `json:"localASN"`
	Established int        `json:"established"`
	Peers       []BGPPeer  `json:"peers,omitempty"`
	Advertised  []string   `json:"advertised,omitempty"`
	Learned     []BGPRoute `json:"learned,omitempty"`
	Error       string     `json:"error,omitempty"`
}

// DatapathService is one service frontend as the kernel holds it.
type DatapathService struct {
	Frontend  string   `json:"frontend"`
	Proto     string   `json:"proto"`
	External  bool     `json:"external"`
	TableSize int      `json:"maglevTableSize"`
	Affinity  string   `json:"affinity,omitempty"`
	Backends  []string `json:"backends"`
}
