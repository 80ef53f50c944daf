package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/identity"
	"github.com/fabric-net/fabric/fabric/l2announce"
	"github.com/fabric-net/fabric/fabric/lbipam"
	"github.com/fabric-net/fabric/fabric/service"
	"github.com/fabric-net/fabric/fabric/store"
	"github.com/fabric-net/fabric/gossip"
)

// L2 announcement policies live under l2policies/<name> as the YAML applied.
const l2PolicyPrefix = "l2policies/"

// l2Settle is how long a node that joined is passed over for ownership
// (unless no settled node can answer): a node that comes and goes at start
// must not move addresses back and forth.
const l2Settle = 3 * time.Second

// l2Reconciler decides which load-balancer and external IPs this node
// answers ARP/NDP for. Every node computes the owner of every IP from the
// same inputs (the alive members gossip reports, with their start times and
// eligibility, the policies, the services and their addresses), so no lease
// or central decision is needed: a dead owner's addresses move as soon as
// gossip declares it dead.
type l2Reconciler struct {
	a        *Agent
	ann      *l2announce.Announcer
	policies *mirror
	services *mirror
	lbIPs    *mirror

	mu      sync.Mutex
	downIfs map[string]bool // announcing interfaces without link
	owned   map[netip.Addr][]string
	lastErr error
}

func newL2Reconciler(a *Agent) *l2Reconciler {
	log := a.log.With("subsys", "l2announce")
	return &l2Reconciler{
		a:        a,
		ann:      l2announce.NewAnnouncer(log),
		policies: newMirror(l2PolicyPrefix, log),
		services: newMirror(serviceDefPrefix, log),
		lbIPs:    newMirror(lbipam.PrefixServices, log),
		downIfs:  map[string]bool{},
	}
}

func (r *l2Reconciler) run(ctx context.Context) {
	defer r.ann.Close()
	go r.policies.run(ctx, r.a.store)
	go r.services.run(ctx, r.a.store)
	go r.lbIPs.run(ctx, r.a.store)
	links := make(chan struct{}, 1)
	go func() {
		err := r.ann.WatchLinks(ctx, func(ifname string, up bool) {
			r.mu.Lock()
			changed := r.downIfs[ifname] == up
			if up {
				delete(r.downIfs, ifname)
			} else {
				r.downIfs[ifname] = true
			}
			r.mu.Unlock()
			if changed {
				r.a.log.Info("announcing interface link", "interface", ifname, "up", up)
				select {
				case links <- struct{}{}:
				default:
				}
			}
		})
		if err != nil && ctx.Err() == nil {
			r.a.log.Warn("watch links for L2 announcements", "err", err)
		}
	}()
	events, cancel := r.a.pool.Subscribe(0)
	defer cancel()
	// The settle time passes without an event; a tick notices it.
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.policies.Changed():
		case <-r.services.Changed():
		case <-r.lbIPs.Changed():
		case <-events:
		case <-links:
		case <-tick.C:
		}
		r.reconcile()
	}
}

// reconcile computes the IPs this node owns and has the announcer answer
// for exactly those.
func (r *l2Reconciler) reconcile() {
	pols, ok1 := r.policies.Snapshot()
	svcRaw, ok2 := r.services.Snapshot()
	held, ok3 := r.lbIPs.Snapshot()
	if !ok1 || !ok2 || !ok3 {
		return
	}
	var policies []l2announce.Policy
	for _, key := range sortedServiceKeys(pols) {
		ps, err := l2announce.ParsePolicies(pols[key])
		if err != nil {
			r.a.log.Warn("stored L2 policy unreadable: ignored", "key", key, "err", err)
			continue
		}
		policies = append(policies, ps...)
	}
	lb := lbIPsFrom(held)
	svcs := r.a.svcs.decode(svcRaw)

	// This node's own eligibility is known at once; the others' through
	// gossip.
	r.mu.Lock()
	down := r.interfacesDown(policies)
	r.mu.Unlock()
	if r.a.metaL2Down() != down {
		r.a.updateMeta(func(m *gossip.Meta) { m.L2Down = down })
	}
	members := r.members(down)
	localBackends := r.a.nodesWithBackends(svcs)

	owners := map[netip.Addr]string{}
	var wants []l2announce.Want
	now := time.Now()
	for _, s := range svcs {
		labels := s.Labels.Map()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[lbipam.LabelServiceNamespace], labels[lbipam.LabelServiceName] = s.Namespace, s.Name
		var ws []l2announce.Want
		if s.Type == service.LoadBalancer {
			for _, ip := range lb[s.Key()] {
				ws = append(ws, l2announce.Want{IP: ip, Service: s.Key(), Labels: labels, Kind: l2announce.LoadBalancerIP})
			}
		}
		if s.Type != service.ClusterIP {
			for _, ip := range s.ExternalIPs {
				ws = append(ws, l2announce.Want{IP: ip, Service: s.Key(), Labels: labels, Kind: l2announce.ExternalIP})
			}
		}
		if len(ws) == 0 {
			continue
		}
		// With externalTrafficPolicy Local an owner must have a backend
		// of its own; with Cluster any node can own the address.
		cands := members
		if with := localBackends[s.Key()]; len(with) > 0 && (s.ExternalPolicy == service.Local || !externalToRemoteBackends) {
			cands = slices.DeleteFunc(slices.Clone(members), func(m l2announce.Member) bool { return !with[m.Name] })
		}
		for ip, owner := range l2announce.Assign(policies, ws, cands, now, l2Settle) {
			owners[ip] = owner
		}
		wants = append(wants, ws...)
	}
	var self l2announce.Member
	for _, m := range members {
		if m.Name == r.a.cfg.NodeName {
			self = m
		}
	}
	local := l2announce.Local(self, policies, wants, owners, interfaceNames())
	err := r.ann.Set(local)
	r.mu.Lock()
	changed := !reflect.DeepEqual(local, r.owned)
	r.owned, r.lastErr = local, err
	r.mu.Unlock()
	if err != nil {
		r.a.log.Warn("L2 announcements", "err", err)
	}
	if changed {
		r.a.log.Info("L2 announcements", "owned", len(local))
	}
}

// interfacesDown reports whether an interface some policy would announce
// on has lost its link. Callers hold r.mu.
func (r *l2Reconciler) interfacesDown(policies []l2announce.Policy) bool {
	names := interfaceNames()
	for _, p := range policies {
		for _, n := range p.Interfaces(names) {
			if r.downIfs[n] {
				return true
			}
		}
	}
	return false
}

// members are the alive nodes gossip reports, with their labels from the
// store and the start time they announced, so that all nodes agree on who
// has settled.
func (r *l2Reconciler) members(selfDown bool) []l2announce.Member {
	recs, _ := r.a.nodes.Snapshot()
	labels := map[string]map[string]string{}
	for _, raw := range recs {
		var rec nodeRecord
		if json.Unmarshal(raw, &rec) == nil {
			labels[rec.Name] = rec.Labels
		}
	}
	var out []l2announce.Member
	for _, m := range r.a.pool.Members() {
		if m.State != gossip.StateAlive {
			continue
		}
		mem := l2announce.Member{Name: m.Meta.Name, Labels: labels[m.Meta.Name],
			Since: time.UnixMilli(m.Meta.Started), Eligible: !m.Meta.L2Down}
		if m.Meta.Name == r.a.cfg.NodeName {
			mem.Labels, mem.Eligible = r.a.nodeLabels(), !selfDown
		}
		if mem.Labels == nil {
			mem.Labels = map[string]string{"kubernetes.io/hostname": m.Meta.Name}
		}
		out = append(out, mem)
	}
	slices.SortFunc(out, func(x, y l2announce.Member) int { return strings.Compare(x.Name, y.Name) })
	return out
}

func (a *Agent) metaL2Down() bool {
	a.metaMu.Lock()
	defer a.metaMu.Unlock()
	return a.meta.L2Down
}

// nodesWithBackends returns, per service, the nodes with a ready backend.
func (a *Agent) nodesWithBackends(svcs []service.Service) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	if a.dp == nil {
		return out
	}
	eps, _ := a.dp.eps.Snapshot()
	var all []service.Endpoint
	for key, raw := range eps {
		var ep api.Endpoint
		if json.Unmarshal(raw, &ep) != nil || ep.Attachment == nil {
			continue
		}
		node := strings.SplitN(strings.TrimPrefix(key, "endpoints/"), "/", 2)[0]
		labels, _ := identity.ParseLabels(ep.Labels)
		var ips []netip.Addr
		for _, s := range ep.IPs {
			if ip, err := netip.ParseAddr(s); err == nil {
				ips = append(ips, ip)
			}
		}
		all = append(all, service.Endpoint{ID: ep.ID, Node: node, IPs: ips, Labels: labels, Ready: true})
	}
	dead := a.deadNodes()
	for _, s := range svcs {
		for _, b := range service.Backends(s, all) {
			if dead[b.Node] {
				continue
			}
			if out[s.Key()] == nil {
				out[s.Key()] = map[string]bool{}
			}
			out[s.Key()][b.Node] = true
		}
	}
	return out
}

// interfaceNames lists the node's interfaces.
func interfaceNames() []string {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(ifs))
	for _, i := range ifs {
		out = append(out, i.Name)
	}
	return out
}

// status reports what this node announces.
func (r *l2Reconciler) status() api.L2Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := api.L2Status{Enabled: true}
	for ip, ifs := range r.owned {
		st.Owned = append(st.Owned, api.L2Owned{IP: ip.String(), Interfaces: ifs})
	}
	slices.SortFunc(st.Owned, func(x, y api.L2Owned) int { return strings.Compare(x.IP, y.IP) })
	for n := range r.downIfs {
		st.LinksDown = append(st.LinksDown, n)
	}
	slices.Sort(st.LinksDown)
	if r.lastErr != nil {
		st.Error = r.lastErr.Error()
	}
	return st
}

// applyL2Policies stores the policies of a YAML stream in one transaction.
func (a *Agent) applyL2Policies(ctx context.Context, data []byte) ([]api.L2PolicyInfo, error) {
	pols, err := l2announce.ParsePolicies(data)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if len(pols) == 0 {
		return nil, badRequest("no policy in the input: give CiliumL2AnnouncementPolicy documents (apiVersion cilium.io/v2alpha1)")
	}
	docs := map[string][]byte{}
	for _, doc := range splitDocuments(data) {
		if ps, err := l2announce.ParsePolicies(doc); err == nil && len(ps) == 1 {
			docs[ps[0].Name] = doc
		}
	}
	var ops []store.Op
	var out []api.L2PolicyInfo
	for _, p := range pols {
		doc, ok := docs[p.Name]
		if !ok {
			return nil, badRequest("policy %s: put each policy in its own YAML document (separated by ---)", p.Name)
		}
		ops = append(ops, store.Op{Type: store.OpPut, Key: l2PolicyPrefix + p.Name, Value: doc})
		out = append(out, l2PolicyInfo(p, doc))
	}
	if _, err := a.store.Txn(ctx, store.Txn{Ops: ops}); err != nil {
		return nil, fmt.Errorf("store L2 policies: %w", err)
	}
	return out, nil
}

func l2PolicyInfo(p l2announce.Policy, doc []byte) api.L2PolicyInfo {
	return api.L2PolicyInfo{Name: p.Name, Interfaces: p.InterfacePatterns, LoadBalancerIPs: p.LoadBalancerIPs,
		ExternalIPs: p.ExternalIPs, YAML: string(doc)}
}

func (a *Agent) listL2Policies(ctx context.Context) ([]api.L2PolicyInfo, error) {
	kvs, _, err := a.store.List(ctx, l2PolicyPrefix)
	if err != nil {
		return nil, err
	}
	var out []api.L2PolicyInfo
	for _, kv := range kvs {
		ps, err := l2announce.ParsePolicies(kv.Value)
		if err != nil || len(ps) != 1 {
			return nil, fmt.Errorf("stored L2 policy %s: %v", kv.Key, err)
		}
		out = append(out, l2PolicyInfo(ps[0], kv.Value))
	}
	return out, nil
}

func (a *Agent) deleteL2Policy(ctx context.Context, name string) error {
	key := l2PolicyPrefix + name
	if _, ok, err := a.store.Get(ctx, key); err != nil {
		return err
	} else if !ok {
		return &httpError{http.StatusNotFound, fmt.Sprintf("no L2 announcement policy %s", name)}
	}
	_, err := a.store.Txn(ctx, store.Txn{Ops: []store.Op{{Type: store.OpDelete, Key: key}}})
	return err
}
