package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/config"
	"github.com/fabric-net/fabric/fabric/lbipam"
	"github.com/fabric-net/fabric/fabric/service"
	"github.com/fabric-net/fabric/fabric/store"
)

// Services live under services/defs/<namespace>/<name> as the YAML the user
// applied plus what the cluster decided for it (cluster IP, node ports).
// services/ips/<ip> and services/nodeports/<proto>-<port> name the service
// that holds an address or a node port: a conditional write that requires
// them absent is what keeps two services from ever getting the same one.
const (
	serviceDefPrefix      = "services/defs/"
	serviceIPPrefix       = "services/ips/"
	serviceNodePortPrefix = "services/nodeports/"
)

// serviceRecord is a stored service.
type serviceRecord struct {
	YAML      string `json:"yaml"`
	ClusterIP string `json:"clusterIP"`
	// NodePorts maps "TCP/80" (protocol/service port) to its node port.
	NodePorts map[string]uint16 `json:"nodePorts,omitempty"`
}

func serviceDefKey(ns, name string) string { return serviceDefPrefix + ns + "/" + name }

func nodePortKey(p service.Protocol, port uint16) string {
	return serviceNodePortPrefix + p.String() + "-" + strconv.Itoa(int(port))
}

func portKey(p service.Port) string { return p.Protocol.String() + "/" + strconv.Itoa(int(p.Port)) }

// serviceConfig is the cluster-wide service configuration from the agent's.
func (a *Agent) serviceConfig() service.Config {
	c := service.DefaultConfig()
	c.NodePortMin, c.NodePortMax, _ = config.ParsePortRange(a.cfg.NodePortRange)
	c.MaglevTableSize = a.cfg.MaglevTableSize
	return c
}

// serviceAllocators returns one cluster IP allocator per configured family.
func (a *Agent) serviceAllocators() []service.CIDRAllocator {
	var out []service.CIDRAllocator
	for _, s := range a.cfg.ServiceCIDRs {
		if al, err := service.NewCIDRAllocator(netip.MustParsePrefix(s)); err == nil {
			out = append(out, al)
		}
	}
	return out
}

// decodeService reads a stored record back into a service with what the
// cluster allocated filled in.
func decodeService(raw []byte) (service.Service, serviceRecord, error) {
	var rec serviceRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return service.Service{}, rec, err
	}
	svcs, err := service.Parse([]byte(rec.YAML))
	if err != nil {
		return service.Service{}, rec, err
	}
	if len(svcs) != 1 {
		return service.Service{}, rec, fmt.Errorf("record holds %d services, want 1", len(svcs))
	}
	svc := svcs[0]
	svc.ClusterIP, _ = netip.ParseAddr(rec.ClusterIP)
	for i, p := range svc.Ports {
		if np, ok := rec.NodePorts[portKey(p)]; ok {
			svc.Ports[i].NodePort = np
		}
	}
	return svc, rec, nil
}

// applyServices parses a YAML stream, allocates what each service needs and
// stores them all in one transaction: all of them or none. A service that
// exists keeps its cluster IP and node ports.
func (a *Agent) applyServices(ctx context.Context, data []byte) ([]api.ServiceInfo, error) {
	svcs, err := service.Parse(data)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if len(svcs) == 0 {
		return nil, badRequest("no service in the input: give documents with apiVersion v1 and kind Service")
	}
	cfg := a.serviceConfig()
	for _, s := range svcs {
		if err := s.Validate(cfg); err != nil {
			return nil, badRequest("%v", err)
		}
	}
	// Allocation reads the holders, picks free values and writes on the
	// condition that nothing changed meanwhile; a concurrent apply elsewhere
	// makes it try again.
	for attempt := 0; ; attempt++ {
		infos, err := a.tryApplyServices(ctx, svcs, data)
		if !errors.Is(err, errServiceRace) || attempt == 5 {
			return infos, err
		}
	}
}

var errServiceRace = conflict("services changed while allocating: retry")

func (a *Agent) tryApplyServices(ctx context.Context, svcs []service.Service, data []byte) ([]api.ServiceInfo, error) {
	ipKVs, _, err := a.store.List(ctx, serviceIPPrefix)
	if err != nil {
		return nil, fmt.Errorf("read cluster IPs: %w", err)
	}
	npKVs, _, err := a.store.List(ctx, serviceNodePortPrefix)
	if err != nil {
		return nil, fmt.Errorf("read node ports: %w", err)
	}
	ipHolder := map[netip.Addr]string{}
	for _, kv := range ipKVs {
		if ip, err := netip.ParseAddr(strings.TrimPrefix(kv.Key, serviceIPPrefix)); err == nil {
			ipHolder[ip] = string(kv.Value)
		}
	}
	npHolder := map[string]string{}
	for _, kv := range npKVs {
		npHolder[kv.Key] = string(kv.Value)
	}
	cfg := a.serviceConfig()
	allocs := a.serviceAllocators()
	var (
		txn   store.Txn
		infos []api.ServiceInfo
	)
	for _, s := range svcs {
		key := serviceDefKey(s.Namespace, s.Name)
		old, found, err := a.store.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("read service %s: %w", s.Key(), err)
		}
		var prev serviceRecord
		var prevSvc service.Service
		if found {
			prevSvc, prev, err = decodeService(old.Value)
			if err != nil {
				a.log.Warn("stored service unreadable, replacing it", "service", s.Key(), "err", err)
			}
			txn.Compares = append(txn.Compares, store.Compare{Key: key, ModRevision: old.ModRevision})
		} else {
			txn.Compares = append(txn.Compares, store.Compare{Key: key, ModRevision: 0})
		}
		rec := serviceRecord{YAML: string(serviceSource(data, s)), NodePorts: map[string]uint16{}}

		// The cluster IP: kept, or the one asked for, or allocated.
		ip := s.ClusterIP
		prevIP, _ := netip.ParseAddr(prev.ClusterIP)
		switch {
		case ip.IsValid() && prevIP.IsValid() && ip != prevIP:
			return nil, badRequest("service %s: spec.clusterIP: %s cannot change (it has %s): leave it out, or delete the service first", s.Key(), ip, prevIP)
		case !ip.IsValid() && prevIP.IsValid():
			ip = prevIP
		case ip.IsValid():
			al, ok := allocatorFor(allocs, ip)
			if !ok {
				return nil, badRequest("service %s: spec.clusterIP: %s is in no service CIDR (%s): leave it out to get one", s.Key(), ip, strings.Join(a.cfg.ServiceCIDRs, ", "))
			}
			if err := al.Check(ip); err != nil {
				return nil, badRequest("service %s: spec.clusterIP: %v", s.Key(), err)
			}
			if h, ok := ipHolder[ip]; ok && h != s.Key() {
				return nil, conflict("service %s: spec.clusterIP: %s is held by service %s: leave it out to get a free one", s.Key(), ip, h)
			}
		default:
			if len(allocs) == 0 {
				return nil, badRequest("service %s: no service CIDR is configured: set serviceCIDRs in the agent's configuration", s.Key())
			}
			ip, err = allocs[0].Allocate(func(a netip.Addr) bool { _, used := ipHolder[a]; return used })
			if err != nil {
				return nil, conflict("service %s: %v", s.Key(), err)
			}
		}
		if ipHolder[ip] != s.Key() {
			txn.Compares = append(txn.Compares, store.Compare{Key: serviceIPPrefix + ip.String(), ModRevision: 0})
			txn.Ops = append(txn.Ops, store.Op{Type: store.OpPut, Key: serviceIPPrefix + ip.String(), Value: []byte(s.Key())})
			ipHolder[ip] = s.Key()
		}
		rec.ClusterIP = ip.String()
		s.ClusterIP = ip

		// Node ports, for NodePort and LoadBalancer services.
		keep := map[string]bool{}
		if s.Type != service.ClusterIP {
			for i, p := range s.Ports {
				np := p.NodePort
				if np == 0 {
					np = prev.NodePorts[portKey(p)]
				}
				if np == 0 {
					np = freeNodePort(cfg, p.Protocol, npHolder)
					if np == 0 {
						return nil, conflict("service %s: spec.ports[%d]: every node port in %s is in use: widen nodePortRange or delete services", s.Key(), i, a.cfg.NodePortRange)
					}
				}
				k := nodePortKey(p.Protocol, np)
				if h, ok := npHolder[k]; ok && h != s.Key() {
					return nil, conflict("service %s: spec.ports[%d].nodePort: %d/%s is held by service %s: leave it out to get a free one", s.Key(), i, np, p.Protocol, h)
				}
				if _, ok := npHolder[k]; !ok {
					txn.Compares = append(txn.Compares, store.Compare{Key: k, ModRevision: 0})
					txn.Ops = append(txn.Ops, store.Op{Type: store.OpPut, Key: k, Value: []byte(s.Key())})
					npHolder[k] = s.Key()
				}
				keep[k] = true
				rec.NodePorts[portKey(p)] = np
				s.Ports[i].NodePort = np
			}
		}
		// What the previous version held and this one does not is freed.
		if found {
			for _, p := range prevSvc.Ports {
				if p.NodePort == 0 {
					continue
				}
				if k := nodePortKey(p.Protocol, p.NodePort); !keep[k] && npHolder[k] == s.Key() {
					txn.Ops = append(txn.Ops, store.Op{Type: store.OpDelete, Key: k})
					delete(npHolder, k)
				}
			}
		}
		b, _ := json.Marshal(rec)
		txn.Ops = append(txn.Ops, store.Op{Type: store.OpPut, Key: key, Value: b})
		infos = append(infos, serviceInfo(s, nil, nil))
	}
	res, err := a.store.Txn(ctx, txn)
	if err != nil {
		return nil, fmt.Errorf("store services: %w", err)
	}
	if !res.Succeeded {
		return nil, errServiceRace
	}
	for i, s := range svcs {
		a.log.Info("service applied", "service", s.Key(), "type", s.Type, "ports", len(s.Ports))
		conds, err := a.assignLB(ctx, s)
		if err != nil {
			conds = append(conds, "load-balancer IPs not assigned yet: "+err.Error())
		}
		infos[i].Conditions = conds
		infos[i].LoadBalancerIPs = a.lbAssigned(ctx, s.Key())
	}
	return infos, nil
}

func allocatorFor(allocs []service.CIDRAllocator, ip netip.Addr) (service.CIDRAllocator, bool) {
	for _, al := range allocs {
		if al.CIDR().Contains(ip) {
			return al, true
		}
	}
	return service.CIDRAllocator{}, false
}

// freeNodePort returns the lowest free node port of the range, 0 for none.
func freeNodePort(cfg service.Config, p service.Protocol, held map[string]string) uint16 {
	for port := int(cfg.NodePortMin); port <= int(cfg.NodePortMax); port++ {
		if _, used := held[nodePortKey(p, uint16(port))]; !used {
			return uint16(port)
		}
	}
	return 0
}

// serviceSource is the YAML document of s in data, so that each stored
// record holds one service. Parse gives no per-document source, so the
// stream is split on document markers and each part parsed again.
func serviceSource(data []byte, s service.Service) []byte {
	for _, doc := range splitDocuments(data) {
		svcs, err := service.Parse(doc)
		if err == nil && len(svcs) == 1 && svcs[0].Key() == s.Key() {
			return doc
		}
	}
	return data
}

func splitDocuments(data []byte) [][]byte {
	var out [][]byte
	var cur []string
	flush := func() {
		if len(cur) > 0 {
			out = append(out, []byte(strings.Join(cur, "\n")+"\n"))
			cur = nil
		}
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "---") && strings.TrimSpace(strings.TrimLeft(line, "-")) == "" {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return out
}

// listServices returns every stored service with its backends as this
// node's datapath sees them.
func (a *Agent) listServices(ctx context.Context) ([]api.ServiceInfo, error) {
	kvs, _, err := a.store.List(ctx, serviceDefPrefix)
	if err != nil {
		return nil, err
	}
	var backends map[string][]service.Backend
	if a.dp != nil {
		backends = a.dp.serviceBackends()
	}
	held, _, err := a.store.List(ctx, lbipam.PrefixServices)
	if err != nil {
		return nil, err
	}
	lbIPs := lbIPsFrom(kvMap(held))
	out := make([]api.ServiceInfo, 0, len(kvs))
	for _, kv := range kvs {
		svc, _, err := decodeService(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("stored service %s: %w", kv.Key, err)
		}
		info := serviceInfo(svc, backends[svc.Key()], lbIPs[svc.Key()])
		if svc.Type == service.LoadBalancer && len(info.LoadBalancerIPs) == 0 {
			info.Conditions = append(info.Conditions, "pending: no load-balancer IP assigned yet (see fabric lb-pool get)")
		}
		out = append(out, info)
	}
	return out, nil
}

// lbAssigned returns the load-balancer addresses lbipam holds for a service.
func (a *Agent) lbAssigned(ctx context.Context, key string) []string {
	kv, ok, err := a.store.Get(ctx, lbipam.PrefixServices+key)
	if err != nil || !ok {
		return nil
	}
	var out []string
	for _, ip := range lbIPsFrom(map[string][]byte{kv.Key: kv.Value})[key] {
		out = append(out, ip.String())
	}
	return out
}

func serviceInfo(s service.Service, backends []service.Backend, lbIPs []netip.Addr) api.ServiceInfo {
	info := api.ServiceInfo{Namespace: s.Namespace, Name: s.Name, Type: s.Type.String(),
		Selector: s.Selector.String(), ExternalPolicy: s.ExternalPolicy.String(), InternalPolicy: s.InternalPolicy.String()}
	if s.ClusterIP.IsValid() {
		info.ClusterIP = s.ClusterIP.String()
	}
	for _, p := range s.Ports {
		target := strconv.Itoa(int(p.TargetPort))
		if p.TargetPortName != "" {
			target = p.TargetPortName
		} else if p.TargetPort == 0 {
			target = strconv.Itoa(int(p.Port))
		}
		info.Ports = append(info.Ports, api.ServicePort{Name: p.Name, Protocol: p.Protocol.String(), Port: p.Port,
			TargetPort: target, NodePort: p.NodePort})
	}
	for _, ip := range lbIPs {
		info.LoadBalancerIPs = append(info.LoadBalancerIPs, ip.String())
	}
	for _, ip := range s.ExternalIPs {
		info.ExternalIPs = append(info.ExternalIPs, ip.String())
	}
	if s.Affinity.ClientIP {
		info.Affinity = "ClientIP " + s.Affinity.Timeout.String()
	}
	for _, b := range backends {
		info.Backends = append(info.Backends, api.ServiceBackend{Addr: b.ID(), Port: portKey(service.Port{Protocol: b.Protocol, Port: b.ServicePort}),
			Node: b.Node, Endpoint: b.EndpointID})
	}
	return info
}

// deleteService removes a service and frees its cluster IP and node ports
// in the same transaction.
func (a *Agent) deleteService(ctx context.Context, ns, name string) error {
	key := serviceDefKey(ns, name)
	kv, ok, err := a.store.Get(ctx, key)
	if err != nil {
		return err
	}
	if !ok {
		return &httpError{http.StatusNotFound, fmt.Sprintf("no service %s/%s", ns, name)}
	}
	svc, rec, err := decodeService(kv.Value)
	ops := []store.Op{{Type: store.OpDelete, Key: key}}
	if rec.ClusterIP != "" {
		ops = append(ops, store.Op{Type: store.OpDelete, Key: serviceIPPrefix + rec.ClusterIP})
	}
	if err == nil {
		for _, p := range svc.Ports {
			if p.NodePort != 0 {
				ops = append(ops, store.Op{Type: store.OpDelete, Key: nodePortKey(p.Protocol, p.NodePort)})
			}
		}
	}
	res, err := a.store.Txn(ctx, store.Txn{Compares: []store.Compare{{Key: key, ModRevision: kv.ModRevision}}, Ops: ops})
	if err != nil {
		return fmt.Errorf("delete service: %w", err)
	}
	if !res.Succeeded {
		return conflict("service %s/%s changed while deleting: retry", ns, name)
	}
	if err := a.lbipam.Release(ctx, ns+"/"+name); err != nil {
		// The leader's sweep releases it later.
		a.log.Warn("release load-balancer IPs", "service", ns+"/"+name, "err", err)
	}
	a.log.Info("service deleted", "service", ns+"/"+name)
	return nil
}

// sortedServiceKeys orders services for stable output.
func sortedServiceKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
