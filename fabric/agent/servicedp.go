package agent

import (
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/fabric-net/fabric/bpf"
	"github.com/fabric-net/fabric/fabric/service"
	"github.com/fabric-net/fabric/gossip"
)

// externalToRemoteBackends says whether the datapath can send traffic that
// arrived from outside the cluster to a backend on another node (it needs
// source NAT so the reply comes back through this node). Until it can,
// external frontends get this node's backends only, whatever the traffic
// policy, and L2 and BGP announce an address only from nodes with a local
// backend.
const externalToRemoteBackends = true

// parsedService caches a stored service's decoding by its raw record.
type parsedService struct {
	raw string
	svc service.Service
	err error
}

// maglevCache keeps the last Maglev table of each backend set, so that a
// reconcile that changes nothing in a service does not recompute it (a
// table of 16381 slots is a few hundred microseconds).
type maglevKey struct {
	ids  string
	size int
}

// deadNodes returns the nodes gossip has declared dead or gone. Unknown
// nodes are not dead: a restarted agent learns the members over its first
// seconds and must not drop their backends meanwhile.
func (a *Agent) deadNodes() map[string]bool {
	dead := map[string]bool{}
	if a.pool == nil {
		return dead
	}
	for _, m := range a.pool.Members() {
		if m.State == gossip.StateDead || m.State == gossip.StateLeft {
			dead[m.Meta.Name] = true
		}
	}
	return dead
}

// serviceCache decodes each stored service once per change of its record,
// for the reconcilers that read services on every pass (datapath, L2, BGP).
// The services it returns are shared: callers must not modify them.
type serviceCache struct {
	log *slog.Logger
	mu  sync.Mutex
	m   map[string]parsedService
}

func newServiceCache(log *slog.Logger) *serviceCache {
	return &serviceCache{log: log, m: map[string]parsedService{}}
}

// decode returns the services of a snapshot of services/defs/, sorted by
// key, leaving out (and logging once) records that do not decode.
func (c *serviceCache) decode(raw map[string][]byte) []service.Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key := range c.m {
		if _, ok := raw[key]; !ok {
			delete(c.m, key)
		}
	}
	var out []service.Service
	for _, key := range sortedServiceKeys(raw) {
		ps, ok := c.m[key]
		if !ok || ps.raw != string(raw[key]) {
			svc, _, err := decodeService(raw[key])
			ps = parsedService{raw: string(raw[key]), svc: svc, err: err}
			c.m[key] = ps
			if err != nil {
				c.log.Warn("stored service unreadable: left out", "key", key, "err", err)
			}
		}
		if ps.err == nil {
			out = append(out, ps.svc)
		}
	}
	return out
}

// compileServices gives the datapath one frontend per service port and
// address: the cluster IP (for this node's workloads), and for NodePort and
// LoadBalancer services this node's underlay addresses with the node port,
// the load-balancer and the external IPs (for traffic from outside too).
// Backends on nodes gossip declares dead are left out, so traffic moves off
// a dead node within gossip's failure detection time.
func (r *dpReconciler) compileServices(st *bpf.State, eps []service.Endpoint) map[string][]service.Backend {
	raw, _ := r.services.Snapshot()
	svcs := r.a.svcs.decode(raw)
	held, _ := r.lbIPs.Snapshot()
	lbIPs := lbIPsFrom(held)
	if len(svcs) == 0 {
		return nil
	}
	dead := r.a.deadNodes()
	var live []service.Endpoint
	for _, ep := range eps {
		if !dead[ep.Node] {
			live = append(live, ep)
		}
	}
	self := r.a.cfg.NodeName
	var underlay []netip.Addr
	for _, u := range r.a.cfg.Underlay {
		if ip, err := netip.ParseAddr(u); err == nil {
			underlay = append(underlay, ip)
		}
	}
	cfg := r.a.serviceConfig()
	used := map[string][]service.Backend{}
	for _, svc := range svcs {
		all := service.Backends(svc, live)
		// The table holds at least 100 slots per backend, counted over
		// every node's backends (dead ones too), so that all nodes pick the
		// same size.
		size := svc.TableSize(cfg)
		if n := len(service.Backends(svc, eps)); svc.MaglevTableSize == 0 && size < 100*n {
			size = service.DefaultTableSize(n)
		}
		for _, p := range svc.Ports {
			proto := bpf.ProtoTCP
			if p.Protocol == service.UDP {
				proto = bpf.ProtoUDP
			}
			if p.Protocol != service.TCP && p.Protocol != service.UDP {
				continue // SCTP is parsed but not balanced
			}
			port := service.ForPort(all, p)
			add := func(addr netip.Addr, fport uint16, external bool) {
				bs := service.SameFamily(svc.BackendsFor(self, external, port), addr)
				if external && !externalToRemoteBackends {
					bs = slices.DeleteFunc(bs, func(b service.Backend) bool { return b.Node != self })
				}
				fe := bpf.Service{Frontend: netip.AddrPortFrom(addr, fport), Proto: proto, External: external}
				if svc.Affinity.ClientIP {
					fe.AffinityTimeout = svc.Affinity.Timeout
				}
				if len(bs) > 0 {
					fe.Maglev = r.maglev(service.IDs(bs), size)
				}
				for _, b := range bs {
					fe.Backends = append(fe.Backends, bpf.Backend{Addr: netip.AddrPortFrom(b.Addr, b.Port)})
				}
				st.Services = append(st.Services, fe)
				if addr == svc.ClusterIP {
					used[svc.Key()] = append(used[svc.Key()], bs...)
				}
			}
			if svc.ClusterIP.IsValid() {
				add(svc.ClusterIP, p.Port, false)
			}
			if svc.Type == service.ClusterIP {
				continue
			}
			if p.NodePort != 0 {
				for _, u := range underlay {
					add(u, p.NodePort, true)
				}
			}
			var lb []netip.Addr
			if svc.Type == service.LoadBalancer {
				lb = lbIPs[svc.Key()]
			}
			for _, ip := range slices.Concat(lb, svc.ExternalIPs) {
				add(ip, p.Port, true)
			}
		}
	}
	slices.SortFunc(st.Services, func(x, y bpf.Service) int {
		if c := x.Frontend.Compare(y.Frontend); c != 0 {
			return c
		}
		return int(x.Proto) - int(y.Proto)
	})
	st.Services = slices.CompactFunc(st.Services, func(x, y bpf.Service) bool {
		return x.Frontend == y.Frontend && x.Proto == y.Proto
	})
	return used
}

// maglev returns the Maglev table of a backend set, from the cache when the
// set was seen before.
func (r *dpReconciler) maglev(ids []string, size int) []uint16 {
	k := maglevKey{ids: strings.Join(ids, ","), size: size}
	r.parsedMu.Lock()
	t, ok := r.maglevs[k]
	r.parsedMu.Unlock()
	if ok {
		return t
	}
	tab := service.Maglev(ids, size)
	t = make([]uint16, len(tab))
	for i, v := range tab {
		t[i] = uint16(v)
	}
	r.parsedMu.Lock()
	if len(r.maglevs) > 4096 {
		clear(r.maglevs)
	}
	r.maglevs[k] = t
	r.parsedMu.Unlock()
	return t
}

// serviceBackends reports, per service, the backends its cluster IP used
// in the last desired state.
func (r *dpReconciler) serviceBackends() map[string][]service.Backend {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastBackends
}
