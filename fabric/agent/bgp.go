package agent

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/fabric-net/fabric/bgp"
	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/lbipam"
	"github.com/fabric-net/fabric/fabric/service"
)

// bgpReconciler announces what this node serves to its BGP peers (its pod
// CIDRs; the load-balancer and external IPs of services it has a backend
// of) and keeps the routes they teach, which native routing uses to reach
// nodes on other segments.
type bgpReconciler struct {
	a        *Agent
	speaker  *bgp.Speaker
	services *mirror
	lbIPs    *mirror

	// kicks asks for a reconcile from outside the store: the datapath
	// has just started (or stopped) serving a frontend.
	kicks chan struct{}

	mu      sync.Mutex
	learned []bgp.Route
	adv     []bgp.Advertisement
	lastErr error
}

func newBGPReconciler(a *Agent, sp *bgp.Speaker) *bgpReconciler {
	log := a.log.With("subsys", "bgp")
	return &bgpReconciler{a: a, speaker: sp, kicks: make(chan struct{}, 1),
		services: newMirror(serviceDefPrefix, log), lbIPs: newMirror(lbipam.PrefixServices, log)}
}

// kick asks for a reconcile soon; it never blocks.
func (r *bgpReconciler) kick() {
	select {
	case r.kicks <- struct{}{}:
	default:
	}
}

func (r *bgpReconciler) run(ctx context.Context) {
	go r.services.run(ctx, r.a.store)
	go r.lbIPs.run(ctx, r.a.store)
	go func() {
		err := r.speaker.WatchRoutes(ctx, func(routes []bgp.Route) {
			r.mu.Lock()
			changed := !reflect.DeepEqual(routes, r.learned)
			r.learned = routes
			r.mu.Unlock()
			if changed && r.a.dp != nil {
				r.a.dp.kick()
			}
		})
		if err != nil && ctx.Err() == nil {
			r.a.log.Warn("watch learned BGP routes", "err", err)
		}
	}()
	events, cancel := r.a.pool.Subscribe(0)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.services.Changed():
		case <-r.lbIPs.Changed():
		case <-events:
		case <-r.kicks:
		case <-tick.C:
		}
		r.reconcile()
	}
}

// reconcile hands the speaker the whole set to announce; the speaker sends
// only the difference.
func (r *bgpReconciler) reconcile() {
	b := r.a.cfg.BGP
	var advs []bgp.Advertisement
	if b.AdvertisePodCIDRs == nil || *b.AdvertisePodCIDRs {
		cidrs, _ := r.a.podCIDRs()
		for _, c := range cidrs {
			advs = append(advs, bgp.Advertisement{Prefix: c})
		}
	}
	if b.AdvertiseLoadBalancerIPs == nil || *b.AdvertiseLoadBalancerIPs {
		advs = append(advs, r.serviceAdvertisements()...)
	}
	slices.SortFunc(advs, func(x, y bgp.Advertisement) int {
		if c := x.Prefix.Addr().Compare(y.Prefix.Addr()); c != 0 {
			return c
		}
		return x.Prefix.Bits() - y.Prefix.Bits()
	})
	advs = slices.CompactFunc(advs, func(x, y bgp.Advertisement) bool { return x.Prefix == y.Prefix })
	err := r.speaker.Advertise(advs)
	r.mu.Lock()
	changed := !reflect.DeepEqual(advs, r.adv)
	r.adv, r.lastErr = advs, err
	r.mu.Unlock()
	if err != nil {
		r.a.log.Warn("BGP advertisements", "err", err)
	} else if changed {
		r.a.log.Info("BGP advertisements", "prefixes", len(advs))
	}
}

// serviceAdvertisements are the /32 and /128 of the load-balancer and
// external IPs this node can serve: with a local backend (externalTraffic
// Policy Local always needs one; Cluster needs one too while the datapath
// cannot send outside traffic to other nodes' backends). A router then
// spreads the traffic over exactly the nodes that serve it. An address is
// announced only once the datapath serves it, so a router never sends a
// connection here before this node can answer it.
func (r *bgpReconciler) serviceAdvertisements() []bgp.Advertisement {
	raw, ok1 := r.services.Snapshot()
	held, ok2 := r.lbIPs.Snapshot()
	if !ok1 || !ok2 {
		return nil
	}
	var svcs []service.Service
	for _, s := range r.a.svcs.decode(raw) {
		if s.Type != service.ClusterIP {
			svcs = append(svcs, s)
		}
	}
	lb := lbIPsFrom(held)
	serving := r.a.nodesWithBackends(svcs)
	self := r.a.cfg.NodeName
	gated := r.a.dp != nil // without a datapath (mode none) there is nothing to wait for
	var served map[netip.Addr]bool
	if gated {
		served = r.a.dp.servedFrontends()
	}
	var out []bgp.Advertisement
	for _, s := range svcs {
		local := serving[s.Key()][self]
		if !local && (s.ExternalPolicy == service.Local || !externalToRemoteBackends) {
			continue
		}
		var ips []netip.Addr
		if s.Type == service.LoadBalancer {
			ips = append(ips, lb[s.Key()]...)
		}
		ips = append(ips, s.ExternalIPs...)
		for _, ip := range ips {
			if gated && !served[ip] {
				continue // announced by the next pass after the datapath's
			}
			out = append(out, bgp.Advertisement{Prefix: netip.PrefixFrom(ip, ip.BitLen())})
		}
	}
	return out
}

// learnedNextHop returns the next hop of the learned route for exactly p.
func (a *Agent) learnedNextHop(p netip.Prefix) (netip.Addr, bool) {
	if a.bgp == nil {
		return netip.Addr{}, false
	}
	a.bgp.mu.Lock()
	defer a.bgp.mu.Unlock()
	for _, rt := range a.bgp.learned {
		if rt.Prefix == p && rt.NextHop.IsValid() {
			return rt.NextHop, true
		}
	}
	return netip.Addr{}, false
}

// status summarises the speaker for fabric status and fabric bgp.
func (r *bgpReconciler) status() api.BGPStatus {
	st := api.BGPStatus{LocalASN: r.a.cfg.BGP.LocalASN}
	for _, p := range r.speaker.Peers() {
		st.Peers = append(st.Peers, api.BGPPeer{Address: p.Address.String(), ASN: p.ASN, State: p.State,
			Uptime: p.Uptime.Round(time.Second).String(), Received: p.Received, Accepted: p.Accepted, Advertised: p.Advertised})
		if p.State == "established" {
			st.Established++
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rt := range r.learned {
		br := api.BGPRoute{Prefix: rt.Prefix.String(), NextHop: rt.NextHop.String(), ASPath: rt.ASPath}
		if rt.Peer.IsValid() {
			br.Peer = rt.Peer.String()
		}
		st.Learned = append(st.Learned, br)
	}
	for _, a := range r.adv {
		st.Advertised = append(st.Advertised, a.Prefix.String())
	}
	if r.lastErr != nil {
		st.Error = r.lastErr.Error()
	}
	return st
}
