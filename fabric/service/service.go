// Package service owns service definitions, backend selection and the Maglev
// table: it reads Kubernetes-shaped Service manifests, checks them, picks a
// service's backends from endpoints (honouring traffic policies), allocates
// cluster IPs from a service CIDR given the addresses in use, and computes the
// Maglev lookup table of a backend set. It knows nothing of the store or the
// datapath: callers hand it the state and write or program the result.
//
// # Annotations
//
// Fabric reads these metadata.annotations; other annotations are kept in
// Service.Annotations and otherwise ignored, except that an unknown key under
// service.fabric.io/ is an error (it is most likely a typo).
//
//	service.fabric.io/global: "true"             merge the service's backends across the mesh
//	service.fabric.io/maglev-table-size: "65521" this service's Maglev table size (a prime)
//	io.cilium/lb-ipam-ips: "10.0.0.10,fd00::10"  requested load-balancer addresses (as Cilium)
package service

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/fabric-net/fabric/fabric/identity"
)

// Annotations Fabric understands.
const (
	// AnnotationGlobal "true" makes a service global: clustermesh merges the
	// backends of the services of the same namespace/name in every cluster.
	AnnotationGlobal = "service.fabric.io/global"
	// AnnotationMaglevTableSize overrides Config.MaglevTableSize for one service.
	AnnotationMaglevTableSize = "service.fabric.io/maglev-table-size"
	// AnnotationLBIPAMIPs requests load-balancer addresses, comma-separated,
	// under the key Cilium uses so existing manifests keep working.
	AnnotationLBIPAMIPs = "io.cilium/lb-ipam-ips"

	fabricAnnotationPrefix = "service.fabric.io/"
)

// Type is how a service is reachable. The zero value is ClusterIP.
type Type uint8

const (
	ClusterIP    Type = iota // a virtual IP inside the cluster only
	NodePort                 // ClusterIP plus a port on every node
	LoadBalancer             // NodePort plus load-balancer addresses
)

func (t Type) String() string {
	switch t {
	case ClusterIP:
		return "ClusterIP"
	case NodePort:
		return "NodePort"
	case LoadBalancer:
		return "LoadBalancer"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// external reports whether the type is reachable from outside the cluster.
func (t Type) external() bool { return t == NodePort || t == LoadBalancer }

// Protocol is a port's transport protocol. The zero value is TCP.
type Protocol uint8

const (
	TCP Protocol = iota
	UDP
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return fmt.Sprintf("Protocol(%d)", uint8(p))
}

// TrafficPolicy says which backends serve a node's traffic. The zero value is
// Cluster.
type TrafficPolicy uint8

const (
	Cluster TrafficPolicy = iota // every ready backend in the cluster
	Local                        // only the ready backends on the node that received the traffic
)

func (p TrafficPolicy) String() string {
	switch p {
	case Cluster:
		return "Cluster"
	case Local:
		return "Local"
	}
	return fmt.Sprintf("TrafficPolicy(%d)", uint8(p))
}

// Session affinity timeouts, as Kubernetes.
const (
	DefaultAffinityTimeout = 10800 * time.Second
	MaxAffinityTimeout     = 86400 * time.Second
)

// Affinity is session affinity: with ClientIP, connections from one client
// address go to the same backend until Timeout passes without traffic.
type Affinity struct {
	ClientIP bool
	Timeout  time.Duration // 1s..24h when ClientIP; 0 otherwise
}

// Port is one service port.
type Port struct {
	Name     string // required and unique when the service has several ports
	Protocol Protocol
	Port     uint16 // the port on the cluster IP and load-balancer addresses
	// TargetPort is the backend's port. When both TargetPort and
	// TargetPortName are empty the backend port is Port.
	TargetPort uint16
	// TargetPortName is a named port, resolved per endpoint (Endpoint.Ports);
	// endpoints without that name are not backends of this port.
	TargetPortName string
	NodePort       uint16 // NodePort/LoadBalancer only; 0 until allocated
}

// Service is one service definition. It mirrors the manifest, so field paths
// in errors (spec.ports[1].port) index Ports as given.
type Service struct {
	Name, Namespace string
	Labels          identity.Labels
	Annotations     map[string]string
	Type            Type
	// ClusterIP is the virtual IP; the zero Addr until one is allocated.
	ClusterIP netip.Addr
	Ports     []Port
	// Selector picks the endpoints that back the service. A key without a
	// source ("app") matches that key from any source; "k8s:app" matches
	// only source k8s. An empty selector selects nothing (as Kubernetes, whose
	// selector-less services have hand-made endpoints).
	Selector       identity.Labels
	Affinity       Affinity
	ExternalPolicy TrafficPolicy // for NodePort, load-balancer and external IP traffic
	InternalPolicy TrafficPolicy // for cluster IP traffic from inside the cluster
	// LoadBalancerIPs are the requested load-balancer addresses
	// (spec.loadBalancerIP and the io.cilium/lb-ipam-ips annotation).
	LoadBalancerIPs []netip.Addr
	ExternalIPs     []netip.Addr
	Global          bool // service.fabric.io/global: "true"
	// MaglevTableSize overrides Config.MaglevTableSize when not 0.
	MaglevTableSize int
}

// Key is "namespace/name", unique in a cluster.
func (s Service) Key() string { return s.Namespace + "/" + s.Name }

// TableSize is the Maglev table size for s: its own override, else cfg's.
func (s Service) TableSize(cfg Config) int {
	if s.MaglevTableSize != 0 {
		return s.MaglevTableSize
	}
	return cfg.MaglevTableSize
}

// Config is the cluster-wide service configuration. Every agent of a cluster
// must be given the same Config: Maglev tables must agree across nodes.
type Config struct {
	// NodePortMin and NodePortMax bound node ports, inclusive (default
	// 30000-32767, as Kubernetes).
	NodePortMin, NodePortMax uint16
	// MaglevTableSize is the Maglev table size of every service without an
	// override: a prime, at least 100 times the most backends a service may
	// have (default 16381, as Cilium; see DefaultTableSize).
	MaglevTableSize int
}

// DefaultConfig returns the Kubernetes node port range and Cilium's Maglev
// table size.
func DefaultConfig() Config {
	return Config{NodePortMin: 30000, NodePortMax: 32767, MaglevTableSize: defaultTableSize}
}

// Validate checks the configuration and says which field is wrong and how to
// fix it.
func (c Config) Validate() error {
	var errs []error
	if c.NodePortMin == 0 || c.NodePortMin > c.NodePortMax {
		errs = append(errs, fmt.Errorf("service.node-port-range: %d-%d is not a range of ports: use min-max with 1 <= min <= max <= 65535, e.g. 30000-32767", c.NodePortMin, c.NodePortMax))
	}
	if err := checkTableSize(c.MaglevTableSize); err != "" {
		errs = append(errs, fmt.Errorf("service.maglev-table-size: %s", err))
	}
	return errors.Join(errs...)
}

// fieldError is one problem with one field of a service, named by its path
// in the manifest. line is the manifest line when known.
type fieldError struct {
	path, msg string
	line      int
}

func (e *fieldError) Error() string {
	if e.path == "" {
		return e.msg
	}
	return e.path + ": " + e.msg
}

func fieldErr(path, format string, args ...any) *fieldError {
	return &fieldError{path: path, msg: fmt.Sprintf(format, args...)}
}

// Validate checks s as a definition for a cluster configured with cfg. Each
// error names the field (as its manifest path) and the fix; all problems are
// reported together.
func (s Service) Validate(cfg Config) error {
	errs := s.check(&cfg)
	if len(errs) == 0 {
		return nil
	}
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = fmt.Errorf("service %s: %w", s.Key(), e)
	}
	return errors.Join(out...)
}

var (
	// Kubernetes' DNS-1035 label (service names) and DNS-1123 label (namespaces, port names).
	dns1035RE = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	dns1123RE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// Kubernetes' IANA_SVC_NAME: named container ports.
	ianaSvcRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	ianaLetterRE = regexp.MustCompile(`[a-z]`)
)

// maxNameLength bounds names that Kubernetes keeps to a DNS label.
const maxNameLength = 63

// check returns the problems of s. Checks that depend on the configuration
// run only when cfg is not nil, so Parse can check everything else.
func (s Service) check(cfg *Config) []*fieldError {
	var errs []*fieldError
	bad := func(path, format string, args ...any) {
		errs = append(errs, fieldErr(path, format, args...))
	}
	if len(s.Name) > maxNameLength || !dns1035RE.MatchString(s.Name) {
		bad("metadata.name", "%q is not a service name: use 1-63 lowercase letters, digits and '-', starting with a letter", s.Name)
	}
	if len(s.Namespace) > maxNameLength || !dns1123RE.MatchString(s.Namespace) {
		bad("metadata.namespace", "%q is not a namespace: use 1-63 lowercase letters, digits and '-' (default: default)", s.Namespace)
	}
	if s.Type > LoadBalancer {
		bad("spec.type", "%s is not a type: use ClusterIP, NodePort or LoadBalancer", s.Type)
	}
	if s.ClusterIP.IsValid() {
		if msg := checkUnicast(s.ClusterIP); msg != "" {
			bad("spec.clusterIP", "%s %s: give an address from the service CIDR or leave it out to have one allocated", s.ClusterIP, msg)
		}
	}
	errs = append(errs, s.checkPorts(cfg)...)
	for _, l := range s.Selector.List() {
		if l.Source == identity.SourceReserved {
			bad("spec.selector", "%q is a reserved label, which no workload carries: select on workload labels, e.g. app: web", l.Name())
		}
	}
	switch {
	case s.Affinity.ClientIP && (s.Affinity.Timeout < time.Second || s.Affinity.Timeout > MaxAffinityTimeout):
		bad("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "%s is out of range: use 1-%d seconds (default %d)", s.Affinity.Timeout, int(MaxAffinityTimeout.Seconds()), int(DefaultAffinityTimeout.Seconds()))
	case !s.Affinity.ClientIP && s.Affinity.Timeout != 0:
		bad("spec.sessionAffinityConfig", "set while sessionAffinity is None: set sessionAffinity: ClientIP or drop it")
	}
	if s.ExternalPolicy > Local {
		bad("spec.externalTrafficPolicy", "%s is not a policy: use Cluster or Local", s.ExternalPolicy)
	} else if s.ExternalPolicy == Local && !s.Type.external() && len(s.ExternalIPs) == 0 {
		bad("spec.externalTrafficPolicy", "Local on a %s service without externalIPs, which gets no external traffic: use type NodePort or LoadBalancer, or drop it", s.Type)
	}
	if s.InternalPolicy > Local {
		bad("spec.internalTrafficPolicy", "%s is not a policy: use Cluster or Local", s.InternalPolicy)
	}
	if len(s.LoadBalancerIPs) > 0 && s.Type != LoadBalancer {
		bad("spec.loadBalancerIP", "load-balancer addresses requested for a %s service: use type LoadBalancer or drop spec.loadBalancerIP and the %s annotation", s.Type, AnnotationLBIPAMIPs)
	}
	errs = append(errs, checkAddrs("spec.loadBalancerIP", s.LoadBalancerIPs)...)
	errs = append(errs, checkAddrs("spec.externalIPs", s.ExternalIPs)...)
	if s.MaglevTableSize != 0 {
		if msg := checkTableSize(s.MaglevTableSize); msg != "" {
			bad(annotationPath(AnnotationMaglevTableSize), "%s", msg)
		}
	}
	return errs
}

func (s Service) checkPorts(cfg *Config) []*fieldError {
	var errs []*fieldError
	bad := func(path, format string, args ...any) {
		errs = append(errs, fieldErr(path, format, args...))
	}
	if len(s.Ports) == 0 {
		bad("spec.ports", "no port: give at least one, e.g. ports: [{port: 80}]")
	}
	type portKey struct {
		port  uint16
		proto Protocol
	}
	ports := map[portKey]int{}
	nodePorts := map[portKey]int{}
	names := map[string]int{}
	for i, p := range s.Ports {
		path := fmt.Sprintf("spec.ports[%d]", i)
		switch {
		case p.Name == "" && len(s.Ports) > 1:
			bad(path+".name", "empty while the service has %d ports: name every port, e.g. name: http", len(s.Ports))
		case p.Name != "" && (len(p.Name) > maxNameLength || !dns1123RE.MatchString(p.Name)):
			bad(path+".name", "%q is not a port name: use 1-63 lowercase letters, digits and '-'", p.Name)
		case p.Name != "":
			if j, ok := names[p.Name]; ok {
				bad(path+".name", "%q is also spec.ports[%d].name: give each port its own name", p.Name, j)
			} else {
				names[p.Name] = i
			}
		}
		if p.Protocol > UDP {
			bad(path+".protocol", "%s is not supported: use TCP or UDP", p.Protocol)
		}
		if p.Port == 0 {
			bad(path+".port", "0 is not a port: use 1-65535")
		} else if j, ok := ports[portKey{p.Port, p.Protocol}]; ok {
			bad(path+".port", "%d/%s is also spec.ports[%d]: give each port and protocol once", p.Port, p.Protocol, j)
		} else {
			ports[portKey{p.Port, p.Protocol}] = i
		}
		if p.TargetPortName != "" {
			if p.TargetPort != 0 {
				bad(path+".targetPort", "both the number %d and the name %q are set: keep one", p.TargetPort, p.TargetPortName)
			}
			if msg := checkPortName(p.TargetPortName); msg != "" {
				bad(path+".targetPort", "%s", msg)
			}
		}
		if p.NodePort == 0 {
			continue
		}
		if !s.Type.external() {
			bad(path+".nodePort", "set on a %s service: use type NodePort or LoadBalancer, or drop it", s.Type)
			continue
		}
		if cfg != nil && (p.NodePort < cfg.NodePortMin || p.NodePort > cfg.NodePortMax) {
			bad(path+".nodePort", "%d is outside the node port range %d-%d: pick one inside it, or leave it out to have one allocated", p.NodePort, cfg.NodePortMin, cfg.NodePortMax)
		}
		if j, ok := nodePorts[portKey{p.NodePort, p.Protocol}]; ok {
			bad(path+".nodePort", "%d/%s is also spec.ports[%d].nodePort: give each port its own node port", p.NodePort, p.Protocol, j)
		} else {
			nodePorts[portKey{p.NodePort, p.Protocol}] = i
		}
	}
	return errs
}

// checkPortName checks a named targetPort as Kubernetes checks container
// port names, so a name that can never resolve is caught early.
func checkPortName(name string) string {
	if len(name) > 15 || !ianaSvcRE.MatchString(name) || !ianaLetterRE.MatchString(name) || strings.Contains(name, "--") {
		return fmt.Sprintf("%q is not a port name: use a number 1-65535 or a container port name of 1-15 lowercase letters, digits and single '-', with at least one letter", name)
	}
	return ""
}

func checkAddrs(path string, addrs []netip.Addr) []*fieldError {
	var errs []*fieldError
	seen := map[netip.Addr]bool{}
	for i, a := range addrs {
		p := fmt.Sprintf("%s[%d]", path, i)
		if msg := checkUnicast(a); msg != "" {
			errs = append(errs, fieldErr(p, "%s %s: give a unicast address such as 192.0.2.10", a, msg))
		} else if seen[a] {
			errs = append(errs, fieldErr(p, "%s is given twice: give it once", a))
		}
		seen[a] = true
	}
	return errs
}

// checkUnicast says why a cannot be a service address, or "".
func checkUnicast(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "is not an address"
	case a.Zone() != "":
		return "has a zone"
	case a.Is4In6():
		return "is IPv4-mapped IPv6"
	case a.IsUnspecified():
		return "is unspecified"
	case a.IsLoopback():
		return "is loopback"
	case a.IsMulticast():
		return "is multicast"
	case a.IsLinkLocalUnicast():
		return "is link-local"
	case a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "is broadcast"
	}
	return ""
}

func annotationPath(key string) string { return fmt.Sprintf("metadata.annotations[%q]", key) }
