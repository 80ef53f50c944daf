package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/lbipam"
	"github.com/fabric-net/fabric/fabric/service"
	"github.com/fabric-net/fabric/fabric/store"
)

// Load-balancer addresses come from the pools of the lbipam package, kept in
// the store: a service of type LoadBalancer is assigned its addresses when it
// is applied, and again by the store's leader every few seconds while it
// lacks some (a pool created after the service, an address freed), so a
// pending service never needs a second apply.

// lbRequest is what a LoadBalancer service asks lbipam for.
func lbRequest(s service.Service) (lbipam.Request, error) {
	requested, key, err := lbipam.ServiceAnnotations(s.Annotations)
	if err != nil {
		return lbipam.Request{}, err
	}
	for _, ip := range s.LoadBalancerIPs {
		if !slices.Contains(requested, ip) {
			requested = append(requested, ip)
		}
	}
	req := lbipam.Request{Service: s.Key(), Labels: s.Labels.Map(), RequestedIPs: requested, SharingKey: key}
	for _, p := range s.Ports {
		req.Ports = append(req.Ports, lbipam.PortKey{Proto: p.Protocol.String(), Port: p.Port})
	}
	return req, nil
}

// assignLB gives a LoadBalancer service its addresses, or releases them
// from a service that is no longer one. It returns the conditions to show.
func (a *Agent) assignLB(ctx context.Context, s service.Service) ([]string, error) {
	if s.Type != service.LoadBalancer {
		return nil, a.lbipam.Release(ctx, s.Key())
	}
	req, err := lbRequest(s)
	if err != nil {
		return []string{err.Error()}, nil
	}
	st, err := a.lbipam.Assign(ctx, req)
	if err != nil {
		return nil, err
	}
	var conds []string
	for _, c := range st.Conditions {
		if c.Type != lbipam.Assigned {
			conds = append(conds, string(c.Type)+": "+c.Message)
		}
	}
	return conds, nil
}

// lbIPs reads the addresses lbipam holds for each service.
func lbIPsFrom(raw map[string][]byte) map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for k, v := range raw {
		var idx struct {
			IPs []netip.Addr `json:"ips"`
		}
		if json.Unmarshal(v, &idx) == nil {
			out[strings.TrimPrefix(k, lbipam.PrefixServices)] = idx.IPs
		}
	}
	return out
}

// lbLoop, on the store's leader, assigns addresses to LoadBalancer services
// that lack some and releases those of services that are gone.
func (a *Agent) lbLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if a.store.Status().Role != "leader" {
			continue
		}
		kvs, _, err := a.store.List(ctx, serviceDefPrefix)
		if err != nil {
			continue
		}
		held, _, err := a.store.List(ctx, lbipam.PrefixServices)
		if err != nil {
			continue
		}
		ips := lbIPsFrom(kvMap(held))
		want := map[string]bool{}
		for _, kv := range kvs {
			s, _, err := decodeService(kv.Value)
			if err != nil || s.Type != service.LoadBalancer {
				continue
			}
			want[s.Key()] = true
			if len(ips[s.Key()]) > 0 && len(s.LoadBalancerIPs) == 0 {
				continue // has its address; nothing asked for by name
			}
			if _, err := a.assignLB(ctx, s); err != nil {
				a.log.Warn("assign load-balancer IPs", "service", s.Key(), "err", err)
			}
		}
		for key := range ips {
			if !want[key] {
				if err := a.lbipam.Release(ctx, key); err != nil {
					a.log.Warn("release load-balancer IPs", "service", key, "err", err)
				}
			}
		}
	}
}

func kvMap(kvs []store.KeyValue) map[string][]byte {
	m := make(map[string][]byte, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// applyLBPools merges the pools of a YAML stream into the stored set: pools
// of the same name are replaced, others kept.
func (a *Agent) applyLBPools(ctx context.Context, data []byte) ([]api.LBPoolInfo, error) {
	pools, err := lbipam.ParsePools(data)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if len(pools) == 0 {
		return nil, badRequest("no pool in the input: give CiliumLoadBalancerIPPool documents (apiVersion cilium.io/v2alpha1)")
	}
	cur, err := a.lbipam.Pools(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]lbipam.Pool{}
	for _, ps := range cur {
		if !ps.Gone {
			byName[ps.Pool.Name] = ps.Pool
		}
	}
	for _, p := range pools {
		byName[p.Name] = p
	}
	all := make([]lbipam.Pool, 0, len(byName))
	for _, p := range byName {
		all = append(all, p)
	}
	slices.SortFunc(all, func(x, y lbipam.Pool) int { return strings.Compare(x.Name, y.Name) })
	if err := a.lbipam.SetPools(ctx, all); err != nil {
		return nil, badRequest("%v", err)
	}
	var out []api.LBPoolInfo
	for _, p := range pools {
		out = append(out, poolInfo(lbipam.PoolStatus{Pool: p}))
		a.log.Info("load-balancer pool applied", "pool", p.Name, "blocks", len(p.Blocks))
	}
	return out, nil
}

func poolInfo(ps lbipam.PoolStatus) api.LBPoolInfo {
	info := api.LBPoolInfo{Name: ps.Pool.Name, Used: ps.Used, Free: ps.Free, Disabled: ps.Pool.Disabled, Gone: ps.Gone}
	for _, b := range ps.Pool.Blocks {
		info.Blocks = append(info.Blocks, b.String())
	}
	return info
}

func (a *Agent) listLBPools(ctx context.Context) ([]api.LBPoolInfo, error) {
	cur, err := a.lbipam.Pools(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.LBPoolInfo, 0, len(cur))
	for _, ps := range cur {
		out = append(out, poolInfo(ps))
	}
	return out, nil
}

func (a *Agent) deleteLBPool(ctx context.Context, name string) error {
	cur, err := a.lbipam.Pools(ctx)
	if err != nil {
		return err
	}
	var keep []lbipam.Pool
	found := false
	for _, ps := range cur {
		if ps.Gone {
			continue
		}
		if ps.Pool.Name == name {
			found = true
			continue
		}
		keep = append(keep, ps.Pool)
	}
	if !found {
		return &httpError{http.StatusNotFound, fmt.Sprintf("no load-balancer pool %s", name)}
	}
	return a.lbipam.SetPools(ctx, keep)
}
