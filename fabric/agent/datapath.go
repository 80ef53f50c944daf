package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabric-net/fabric/bpf"
	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/identity"
	"github.com/fabric-net/fabric/fabric/lbipam"
	"github.com/fabric-net/fabric/fabric/policy"
	"github.com/fabric-net/fabric/fabric/service"
	"github.com/fabric-net/fabric/fabric/store"
	"github.com/fabric-net/fabric/gossip"
	"github.com/fabric-net/fabric/tunnel"
)

// Datapath is what the agent needs from the node's datapath; bpf.Datapath
// implements it.
type Datapath interface {
	// Apply makes the kernel match st. It is idempotent and may be called
	// as often as the desired state changes.
	Apply(st bpf.State) error
	// IPCache reads back the IP cache the kernel uses.
	IPCache() ([]bpf.IPCacheEntry, error)
	// GCConntrack removes the connection-tracking entries idle beyond
	// their timeout; safe to call while traffic flows.
	GCConntrack(now time.Time) (int, error)
	// IngressSeen counts deliveries per {source, destination} identity:
	// what the receiving side resolved as the sender.
	IngressSeen() (map[[2]uint32]uint64, error)
	// Services reads back the service frontends the kernel holds.
	Services() ([]bpf.Service, error)
	// Drops counts dropped packets by reason.
	Drops() (map[string]uint64, error)
	// Close releases the agent's handles; forwarding goes on without it.
	Close() error
}

// vxlanDevice is the name of the node's VXLAN device in vxlan mode.
const vxlanDevice = "fabric_vxlan"

// dpReconciler turns the store's endpoints and nodes into the datapath's
// desired state, and applies it whenever either changes.
//
// It deliberately ignores gossip liveness: a node whose agent died keeps
// forwarding through its pinned programs, so dropping its routes when gossip
// declares it dead would break the flows a restart must not break. A node
// leaves everyone's datapath when it is removed from the store: after the
// CIDR release grace, or by an operator.
type dpReconciler struct {
	a        *Agent
	dp       Datapath
	eps      *mirror
	nodes    *mirror
	policies *mirror
	idents   *mirror
	services *mirror
	lbIPs    *mirror

	flows *flowHub
	// kicks asks for a reconcile from outside the store (learned routes).
	kicks chan struct{}
	// masqKey is what the masquerade rules were last made from.
	masqKey string
	// ctCollected counts connection-tracking entries the GC removed.
	ctCollected atomic.Uint64

	// parsed caches each stored policy's parse by its key, so a change to
	// one policy does not reparse all of them.
	parsedMu sync.Mutex
	parsed   map[string]parsedPolicy
	// maglevs does the same for Maglev tables.
	maglevs map[maglevKey][]uint16

	// mu serialises Apply calls and guards what status reports.
	mu        sync.Mutex
	last      bpf.State
	applied   bool
	lastErr   error
	lastApply time.Time
	// policyErr is why a stored policy could not be compiled.
	policyErr error
	// served are the addresses servedFrontends finds in last: what the
	// last successful Apply installed (nil before the first; a failed
	// Apply since leaves it in place).
	served map[netip.Addr]bool
	// lastBackends are the backends of each service's cluster IP in the
	// last desired state.
	lastBackends map[string][]service.Backend
}

// openDatapath prepares the node's overlay device and loads the datapath,
// reusing what a previous agent pinned so forwarding never stops.
func (a *Agent) openDatapath() (Datapath, error) {
	mode, err := tunnel.ParseMode(a.cfg.DatapathMode)
	if err != nil {
		return nil, err
	}
	cfg := bpf.DefaultConfig()
	cfg.PinDir = a.cfg.BPFPinDir
	cfg.Mode = bpf.Mode(mode)
	cfg.UnderlayIfName = a.cfg.UnderlayInterface
	cfg.Logger = a.log.With("subsys", "datapath")
	ct := a.cfg.Conntrack
	cfg.CTEntries, cfg.CTTCPTimeout, cfg.CTSYNTimeout = ct.Entries, ct.TCPTimeout, ct.SYNTimeout
	cfg.CTTCPClosingTimeout, cfg.CTAnyTimeout = ct.ClosingTimeout, ct.AnyTimeout
	for _, u := range a.cfg.Underlay {
		ip := netip.MustParseAddr(u)
		if ip.Is4() && !cfg.UnderlayIPv4.IsValid() {
			cfg.UnderlayIPv4 = ip
		}
		if ip.Is6() && !cfg.UnderlayIPv6.IsValid() {
			cfg.UnderlayIPv6 = ip
		}
	}
	if err := tunnel.EnableForwarding(); err != nil {
		return nil, err
	}
	if mode == tunnel.ModeVXLAN {
		if _, err := tunnel.EnsureVXLAN(vxlanDevice, tunnel.VXLANPort, a.workloadMTU()); err != nil {
			return nil, fmt.Errorf("vxlan device: %w", err)
		}
		cfg.VXLANIfName = vxlanDevice
	}
	dp, err := bpf.Open(cfg)
	if err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	return dp, nil
}

// workloadMTU is the MTU every workload interface gets in this mode.
func (a *Agent) workloadMTU() int {
	if a.cfg.DatapathMode == "none" {
		return a.cfg.UnderlayMTU
	}
	mode, err := tunnel.ParseMode(a.cfg.DatapathMode)
	if err != nil {
		return a.cfg.UnderlayMTU
	}
	return tunnel.WorkloadMTU(mode, a.cfg.UnderlayMTU)
}

func newDPReconciler(a *Agent, dp Datapath) *dpReconciler {
	return &dpReconciler{
		a:        a,
		dp:       dp,
		eps:      newMirror("endpoints/", a.log.With("subsys", "datapath")),
		nodes:    a.nodes,
		policies: newMirror(policyPrefix, a.log.With("subsys", "policy")),
		idents:   newMirror(identity.PrefixIDs, a.log.With("subsys", "policy")),
		services: newMirror(serviceDefPrefix, a.log.With("subsys", "service")),
		lbIPs:    newMirror(lbipam.PrefixServices, a.log.With("subsys", "service")),
		parsed:   map[string]parsedPolicy{},

		maglevs: map[maglevKey][]uint16{},
		flows:   newFlowHub(),
		kicks:   make(chan struct{}, 1),
	}
}

type parsedPolicy struct {
	raw  string
	pols []policy.Policy
	err  error
}

// currentPolicies parses what changed in the policies mirror.
func (r *dpReconciler) currentPolicies(raw map[string][]byte) ([]policy.Policy, error) {
	r.parsedMu.Lock()
	defer r.parsedMu.Unlock()
	var (
		out  []policy.Policy
		errs []error
	)
	for key := range r.parsed {
		if _, ok := raw[key]; !ok {
			delete(r.parsed, key)
		}
	}
	for _, key := range slices.Sorted(maps.Keys(raw)) {
		pp, ok := r.parsed[key]
		if !ok || pp.raw != string(raw[key]) {
			pols, err := policy.Parse(raw[key])
			pp = parsedPolicy{raw: string(raw[key]), pols: pols, err: err}
			r.parsed[key] = pp
		}
		if pp.err != nil {
			errs = append(errs, fmt.Errorf("stored policy %s: %w", key, pp.err))
			continue
		}
		out = append(out, pp.pols...)
	}
	return out, errors.Join(errs...)
}

// compilePolicies gives each local endpoint its compiled policy, in the
// datapath's terms.
func (r *dpReconciler) compilePolicies(st *bpf.State, local []policy.Endpoint) error {
	raw, _ := r.policies.Snapshot()
	pols, perr := r.currentPolicies(raw)
	if len(pols) == 0 {
		return perr
	}
	ids, _ := r.idents.Snapshot()
	compiled := policy.Compile(pols, local, identitiesFrom(ids), nil)
	cidrs := cidrIdentities(compiled)
	st.IPCache = append(st.IPCache, cidrIPCache(cidrs, st.IPCache)...)
	for i := range st.Endpoints {
		ep := compiled[local[i].ID]
		bp := bpf.EndpointPolicy{IngressEnforced: ep.IngressEnforced, EgressEnforced: ep.EgressEnforced}
		for _, e := range ep.Entries {
			if e.CIDR.IsValid() {
				// One entry per prefix identity the CIDR covers: the
				// ipcache's longest match gives a more specific prefix
				// of another rule its own identity, and this rule must
				// hold for it too.
				for _, id := range cidrs.covered(e.CIDR) {
					e2 := e
					e2.CIDR, e2.Identity = netip.Prefix{}, id
					bp.Entries = append(bp.Entries, bpfEntry(e2)...)
				}
				continue
			}
			bp.Entries = append(bp.Entries, bpfEntry(e)...)
			if e.Identity == uint32(identity.World) {
				// Outside addresses a CIDR rule names resolve to their
				// prefix's identity; they are still the world.
				for _, id := range cidrs.all() {
					e2 := e
					e2.Identity = id
					bp.Entries = append(bp.Entries, bpfEntry(e2)...)
				}
			}
		}
		st.Endpoints[i].Policy = bp
	}
	return perr
}

// bpfEntry turns one compiled entry into the datapath's terms (none when
// the datapath cannot express it without opening more than it should).
func bpfEntry(e policy.Entry) []bpf.PolicyEntry {
	dir := bpf.Ingress
	if e.Direction == policy.Egress {
		dir = bpf.Egress
	}
	deny := e.Verdict == policy.Deny
	if e.ICMP && e.Port == 0 {
		// The datapath reads ICMP type 0 (echo reply) as "any type". Err on
		// the closed side: an allow of echo replies is left out (replies
		// pass by connection tracking anyway), a deny of them denies every
		// ICMP type.
		if !deny {
			return nil
		}
		e.PortEnd = 0
	}
	return []bpf.PolicyEntry{{Direction: dir, Identity: e.Identity, Proto: e.Proto,
		PortLo: e.Port, PortHi: e.PortEnd, Deny: deny}}
}

// run follows the store until ctx ends. A periodic pass repairs anything
// changed behind the agent's back.
func (r *dpReconciler) run(ctx context.Context) {
	go r.eps.run(ctx, r.a.store)
	go r.flowLoop(ctx)
	go r.policies.run(ctx, r.a.store)
	go r.idents.run(ctx, r.a.store)
	go r.services.run(ctx, r.a.store)
	go r.lbIPs.run(ctx, r.a.store)
	go r.gcLoop(ctx)
	// Gossip's verdicts move service backends off dead nodes at once.
	var members <-chan gossip.Event
	if r.a.pool != nil {
		ev, cancel := r.a.pool.Subscribe(0)
		defer cancel()
		members = ev
	}
	resync := time.NewTicker(10 * time.Second)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.eps.Changed():
		case <-r.nodes.Changed():
		case <-r.policies.Changed():
		case <-r.idents.Changed():
		case <-r.services.Changed():
		case <-r.lbIPs.Changed():
		case <-members:
		case <-r.kicks:
		case <-resync.C:
			r.mu.Lock()
			r.applied = false // force a full Apply
			r.mu.Unlock()
		}
		// Let a burst of changes settle into one Apply.
		time.Sleep(5 * time.Millisecond)
		if err := r.reconcile(); err != nil {
			r.a.log.Warn("datapath apply failed", "err", err)
		}
	}
}

// reconcile computes the desired state and applies it if it changed.
func (r *dpReconciler) reconcile() error {
	st, ok := r.desired()
	if !ok {
		return nil // the store has not been read fully yet
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.applied && reflect.DeepEqual(st, r.last) {
		return nil
	}
	err := r.dp.Apply(st)
	if err == nil {
		routes := map[netip.Addr]int{}
		for _, ep := range st.Endpoints {
			for _, ip := range ep.IPs {
				routes[ip] = ep.HostIfIndex
			}
		}
		err = tunnel.SetEndpointRoutes(routes)
	}
	if err == nil {
		err = r.masquerade()
	}
	r.lastErr, r.lastApply = err, time.Now()
	if err != nil {
		r.applied = false
		return err
	}
	served := servedFrontends(st)
	changed := !maps.Equal(r.served, served)
	r.last, r.applied, r.served = st, true, served
	if r.a.bgp != nil && changed {
		r.a.bgp.kick() // announce what is now served, withdraw what is not
	}
	return nil
}

// servedFrontends returns the addresses of the external frontends the
// datapath last applied with at least one backend: what outside traffic
// to this node is answered on. Callers only read it.
func (r *dpReconciler) servedFrontends() map[netip.Addr]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.served
}

func servedFrontends(st bpf.State) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, s := range st.Services {
		if s.External && len(s.Backends) > 0 {
			out[s.Frontend.Addr()] = true
		}
	}
	return out
}

// syncTo waits until the mirrors include store revision rev, then
// reconciles, so a caller that just wrote an endpoint knows the datapath
// serves it when this returns.
func (r *dpReconciler) syncTo(ctx context.Context, rev int64) error {
	if err := r.eps.WaitRevision(ctx, rev); err != nil {
		return err
	}
	return r.reconcile()
}

// desired builds the datapath state: this node's attached endpoints; the
// other nodes' endpoints (with their identities) and pod CIDRs, reached
// through their underlay address; node addresses as remote-node.
func (r *dpReconciler) desired() (bpf.State, bool) {
	eps, ok1 := r.eps.Snapshot()
	nodes, ok2 := r.nodes.Snapshot()
	_, ok3 := r.policies.Snapshot()
	_, ok4 := r.idents.Snapshot()
	_, ok5 := r.services.Snapshot()
	_, ok6 := r.lbIPs.Snapshot()
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 {
		return bpf.State{}, false
	}
	self := r.a.cfg.NodeName
	// Per node, the underlay address to tunnel (or route) to per family
	// of the inner packet: the overlays carry both families over IPv4;
	// native routing needs a next hop of the packet's own family.
	type hop struct{ v4, v6 netip.Addr }
	hops := map[string]hop{}
	var (
		st    bpf.State
		local []policy.Endpoint // parallel to st.Endpoints
		svcEp []service.Endpoint
	)
	for _, raw := range nodes {
		var rec nodeRecord
		if json.Unmarshal(raw, &rec) != nil || rec.Name == "" {
			continue
		}
		var h hop
		for _, u := range rec.Underlay {
			ip, err := netip.ParseAddr(u)
			if err != nil {
				continue
			}
			if ip.Is4() && !h.v4.IsValid() {
				h.v4 = ip
			} else if ip.Is6() && !h.v6.IsValid() {
				h.v6 = ip
			}
			id := identity.RemoteNode
			if rec.Name == self {
				id = identity.Host
			}
			st.IPCache = append(st.IPCache, bpf.IPCacheEntry{Prefix: netip.PrefixFrom(ip, ip.BitLen()), Identity: uint32(id)})
		}
		if rec.Name == self || !h.v4.IsValid() {
			continue
		}
		// In native mode a node on another segment is reached through
		// the router that taught us the route to its pods.
		if r.a.cfg.DatapathMode == "native" {
			for _, c := range rec.PodCIDRs {
				p, err := netip.ParsePrefix(c)
				if err != nil {
					continue
				}
				if nh, ok := r.a.learnedNextHop(p); ok && nh.Is4() == p.Addr().Is4() {
					if p.Addr().Is4() {
						h.v4 = nh
					} else {
						h.v6 = nh
					}
				}
			}
		}
		hops[rec.Name] = h
		for _, c := range rec.PodCIDRs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				continue
			}
			st.IPCache = append(st.IPCache, bpf.IPCacheEntry{Prefix: p, Node: r.nextHop(h.v4, h.v6, p.Addr())})
		}
	}
	for key, raw := range eps {
		var ep api.Endpoint
		if json.Unmarshal(raw, &ep) != nil {
			continue
		}
		node := strings.SplitN(strings.TrimPrefix(key, "endpoints/"), "/", 2)[0]
		var ips []netip.Addr
		for _, s := range ep.IPs {
			if ip, err := netip.ParseAddr(s); err == nil {
				ips = append(ips, ip)
			}
		}
		if ep.Attachment != nil {
			labels, _ := identity.ParseLabels(ep.Labels)
			svcEp = append(svcEp, service.Endpoint{ID: ep.ID, Node: node, IPs: ips, Labels: labels, Ready: true})
		}
		if node == self {
			if ep.Attachment == nil {
				continue
			}
			hostMAC, err1 := net.ParseMAC(ep.Attachment.HostMAC)
			mac, err2 := net.ParseMAC(ep.Attachment.WorkloadMAC)
			if err1 != nil || err2 != nil {
				continue
			}
			st.Endpoints = append(st.Endpoints, bpf.Endpoint{IPs: ips, HostIfIndex: ep.Attachment.HostIfIndex,
				HostMAC: hostMAC, MAC: mac, Identity: ep.Identity})
			labels, _ := identity.ParseLabels(ep.Labels)
			local = append(local, policy.Endpoint{ID: ep.ID, Identity: ep.Identity, Labels: labels})
			continue
		}
		h, ok := hops[node]
		if !ok {
			continue
		}
		for _, ip := range ips {
			st.IPCache = append(st.IPCache, bpf.IPCacheEntry{Prefix: netip.PrefixFrom(ip, ip.BitLen()),
				Identity: ep.Identity, Node: r.nextHop(h.v4, h.v6, ip)})
		}
	}
	err := r.compilePolicies(&st, local)
	slices.SortFunc(svcEp, func(x, y service.Endpoint) int { return strings.Compare(x.ID, y.ID) })
	backends := r.compileServices(&st, svcEp)
	r.mu.Lock()
	r.policyErr = err
	r.lastBackends = backends
	r.mu.Unlock()
	// A stable order makes "unchanged" cheap to see.
	slices.SortFunc(st.Endpoints, func(x, y bpf.Endpoint) int { return x.HostIfIndex - y.HostIfIndex })
	slices.SortFunc(st.IPCache, func(x, y bpf.IPCacheEntry) int {
		if c := x.Prefix.Addr().Compare(y.Prefix.Addr()); c != 0 {
			return c
		}
		return x.Prefix.Bits() - y.Prefix.Bits()
	})
	return st, true
}

// gcLoop collects expired connection-tracking entries, so the tables do not
// rely on LRU eviction alone (which forgets busy connections too).
func (r *dpReconciler) gcLoop(ctx context.Context) {
	every := r.a.cfg.Conntrack.GCInterval
	if every == 0 {
		every = 30 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := r.dp.GCConntrack(time.Now())
		if err != nil {
			r.a.log.Warn("conntrack GC", "err", err)
			continue
		}
		r.ctCollected.Add(uint64(n))
		if n > 0 {
			r.a.log.Debug("conntrack GC", "removed", n)
		}
	}
}

// masquerade keeps the node's masquerade rules in step with the cluster's
// node addresses (which it leaves the datapath's NAT replies to).
func (r *dpReconciler) masquerade() error {
	var pools []netip.Prefix
	if r.a.cfg.Masquerade {
		for _, p := range r.a.cfg.PodPools {
			pools = append(pools, netip.MustParsePrefix(p))
		}
	}
	var nodes []netip.Addr
	recs, _ := r.nodes.Snapshot()
	for _, raw := range recs {
		var rec nodeRecord
		if json.Unmarshal(raw, &rec) != nil {
			continue
		}
		for _, u := range rec.Underlay {
			if ip, err := netip.ParseAddr(u); err == nil {
				nodes = append(nodes, ip)
			}
		}
	}
	slices.SortFunc(nodes, netip.Addr.Compare)
	key := fmt.Sprint(pools, nodes)
	if r.applied && key == r.masqKey {
		return nil
	}
	if err := tunnel.SetMasquerade(r.a.cfg.UnderlayInterface, pools, nodes, [2]uint16{bpf.DefaultNATPortMin, bpf.DefaultNATPortMax}); err != nil {
		return err
	}
	r.masqKey = key
	return nil
}

// kick asks for a reconcile soon; it never blocks.
func (r *dpReconciler) kick() {
	select {
	case r.kicks <- struct{}{}:
	default:
	}
}

func (r *dpReconciler) nextHop(v4, v6, inner netip.Addr) netip.Addr {
	if r.a.cfg.DatapathMode == "native" && inner.Is6() && v6.IsValid() {
		return v6
	}
	return v4
}

// status reports what the datapath was last given.
func (r *dpReconciler) status() api.DatapathStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	ds := api.DatapathStatus{Mode: r.a.cfg.DatapathMode, Endpoints: len(r.last.Endpoints),
		IPCache: len(r.last.IPCache), Services: len(r.last.Services), MTU: r.a.workloadMTU(), LastApply: r.lastApply}
	if err := errors.Join(r.lastErr, r.policyErr); err != nil {
		ds.Error = err.Error()
	}
	return ds
}

// ipcache reports the kernel's IP cache.
func (r *dpReconciler) ipcache() ([]api.IPCacheEntry, error) {
	entries, err := r.dp.IPCache()
	if err != nil {
		return nil, err
	}
	out := make([]api.IPCacheEntry, 0, len(entries))
	for _, e := range entries {
		ae := api.IPCacheEntry{Prefix: e.Prefix.String(), Identity: e.Identity}
		if e.Node.IsValid() {
			ae.Node = e.Node.String()
		}
		out = append(out, ae)
	}
	slices.SortFunc(out, func(x, y api.IPCacheEntry) int { return strings.Compare(x.Prefix, y.Prefix) })
	return out, nil
}

// seen reports the identities the receiving side resolved.
func (r *dpReconciler) seen() ([]api.IdentityFlow, error) {
	m, err := r.dp.IngressSeen()
	if err != nil {
		return nil, err
	}
	out := make([]api.IdentityFlow, 0, len(m))
	for k, n := range m {
		out = append(out, api.IdentityFlow{Source: k[0], Destination: k[1], Packets: n})
	}
	slices.SortFunc(out, func(x, y api.IdentityFlow) int {
		if x.Source != y.Source {
			return int(x.Source) - int(y.Source)
		}
		return int(x.Destination) - int(y.Destination)
	})
	return out, nil
}

// attachEndpoint records that the endpoint's interface exists and waits
// until the datapath serves it.
func (a *Agent) attachEndpoint(ctx context.Context, id string, att api.Attachment) (api.Endpoint, error) {
	if !endpointIDRE.MatchString(id) {
		return api.Endpoint{}, badRequest("id: %q is not a valid endpoint ID", id)
	}
	if att.HostIfIndex <= 0 {
		return api.Endpoint{}, badRequest("hostIfIndex: %d is not an interface index: give the host veth's ifindex", att.HostIfIndex)
	}
	if att.HostIfName == "" || len(att.HostIfName) > 15 {
		return api.Endpoint{}, badRequest("hostIfName: %q is not an interface name", att.HostIfName)
	}
	for field, v := range map[string]string{"hostMAC": att.HostMAC, "workloadMAC": att.WorkloadMAC} {
		if _, err := net.ParseMAC(v); err != nil {
			return api.Endpoint{}, badRequest("%s: %q is not a MAC address", field, v)
		}
	}
	a.epMu.Lock()
	key := endpointPrefix(a.cfg.NodeName) + id
	kv, ok, err := a.store.Get(ctx, key)
	if err != nil {
		a.epMu.Unlock()
		return api.Endpoint{}, fmt.Errorf("read endpoint: %w", err)
	}
	if !ok {
		a.epMu.Unlock()
		return api.Endpoint{}, &httpError{404, fmt.Sprintf("endpoint %s not found: create it first", id)}
	}
	var ep api.Endpoint
	if err := json.Unmarshal(kv.Value, &ep); err != nil {
		a.epMu.Unlock()
		return api.Endpoint{}, fmt.Errorf("decode endpoint %s: %w", key, err)
	}
	rev := kv.ModRevision
	if ep.Attachment == nil || *ep.Attachment != att {
		ep.Attachment = &att
		b, _ := json.Marshal(ep)
		res, err := a.store.Txn(ctx, store.Txn{
			Compares: []store.Compare{{Key: key, ModRevision: kv.ModRevision}},
			Ops:      []store.Op{{Type: store.OpPut, Key: key, Value: b}},
		})
		if err != nil {
			a.epMu.Unlock()
			return api.Endpoint{}, fmt.Errorf("record attachment: %w", err)
		}
		if !res.Succeeded {
			a.epMu.Unlock()
			return api.Endpoint{}, conflict("endpoint %s changed while attaching: retry", id)
		}
		rev = res.Revision
	}
	a.epMu.Unlock()
	if a.dp != nil {
		if err := a.dp.syncTo(ctx, rev); err != nil {
			return api.Endpoint{}, fmt.Errorf("program datapath for %s: %w", id, err)
		}
	}
	a.log.Info("endpoint attached", "endpoint", id, "host_if", att.HostIfName, "ifindex", att.HostIfIndex)
	return ep, nil
}

// getEndpoint returns one of this node's endpoints.
func (a *Agent) getEndpoint(ctx context.Context, id string) (api.Endpoint, error) {
	kv, ok, err := a.store.Get(ctx, endpointPrefix(a.cfg.NodeName)+id)
	if err != nil {
		return api.Endpoint{}, err
	}
	if !ok {
		return api.Endpoint{}, &httpError{404, fmt.Sprintf("endpoint %s not found on %s", id, a.cfg.NodeName)}
	}
	var ep api.Endpoint
	return ep, json.Unmarshal(kv.Value, &ep)
}
