package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/identity"
	"github.com/fabric-net/fabric/fabric/ipam"
	"github.com/fabric-net/fabric/fabric/store"
)

// Endpoints live under endpoints/<node>/<id>, written by their node only.
func endpointPrefix(node string) string { return "endpoints/" + node + "/" }

var endpointIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// createEndpoint gives a workload its addresses and identity. Asking again
// for the same ID returns what was given the first time, so a runtime that
// retries after a timeout never gets a second address.
func (a *Agent) createEndpoint(ctx context.Context, req api.EndpointRequest) (api.Endpoint, error) {
	if !endpointIDRE.MatchString(req.ID) {
		return api.Endpoint{}, badRequest("id: %q is not a valid endpoint ID: use 1-128 letters, digits, '_', '.', ':' or '-'", req.ID)
	}
	labels, err := identity.ParseLabels(req.Labels)
	if err != nil {
		return api.Endpoint{}, badRequest("labels: %v", err)
	}
	cidrs, err := a.podCIDRs()
	if err != nil {
		return api.Endpoint{}, err
	}
	a.epMu.Lock()
	defer a.epMu.Unlock()
	key := endpointPrefix(a.cfg.NodeName) + req.ID
	if kv, ok, err := a.store.Get(ctx, key); err != nil {
		return api.Endpoint{}, fmt.Errorf("read endpoint: %w", err)
	} else if ok {
		var ep api.Endpoint
		if err := json.Unmarshal(kv.Value, &ep); err != nil {
			return api.Endpoint{}, fmt.Errorf("decode endpoint %s: %w", key, err)
		}
		if ep.Labels != labels.String() {
			return api.Endpoint{}, conflict("endpoint %s exists with labels %q: delete it before adding it with %q", req.ID, ep.Labels, labels.String())
		}
		return ep, nil
	}
	ips, err := a.ipam.AllocateIP(ctx, req.ID)
	if err != nil {
		return api.Endpoint{}, fmt.Errorf("allocate IP: %w", err)
	}
	id, err := a.ids.Allocate(ctx, labels, req.ID)
	if err != nil {
		return api.Endpoint{}, fmt.Errorf("allocate identity: %w", err)
	}
	ep := api.Endpoint{ID: req.ID, Node: a.cfg.NodeName, Identity: uint32(id), Labels: labels.String(),
		Created: time.Now().UTC(), ContainerID: req.ContainerID, Netns: req.Netns, IfName: req.IfName,
		MTU: a.workloadMTU()}
	for _, ip := range ips {
		ep.IPs = append(ep.IPs, ip.String())
		for _, c := range cidrs {
			if c.Contains(ip) {
				ep.Gateways = append(ep.Gateways, ipam.GatewayOf(c).String())
			}
		}
	}
	b, _ := json.Marshal(ep)
	if _, err := store.Put(ctx, a.store, key, b); err != nil {
		return api.Endpoint{}, fmt.Errorf("record endpoint: %w", err)
	}
	a.log.Info("endpoint created", "endpoint", req.ID, "ips", ep.IPs, "identity", ep.Identity, "labels", ep.Labels)
	return ep, nil
}

// deleteEndpoint releases a workload's addresses and identity reference.
// Deleting an unknown endpoint succeeds: runtimes call DEL more than once.
func (a *Agent) deleteEndpoint(ctx context.Context, id string) error {
	if !endpointIDRE.MatchString(id) {
		return badRequest("id: %q is not a valid endpoint ID", id)
	}
	a.epMu.Lock()
	defer a.epMu.Unlock()
	key := endpointPrefix(a.cfg.NodeName) + id
	kv, ok, err := a.store.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read endpoint: %w", err)
	}
	if ok {
		var ep api.Endpoint
		if err := json.Unmarshal(kv.Value, &ep); err == nil && ep.Identity != 0 {
			if err := a.ids.Release(ctx, identity.ID(ep.Identity), id); err != nil {
				return fmt.Errorf("release identity: %w", err)
			}
		}
	}
	if err := a.ipam.ReleaseIP(ctx, id); err != nil {
		return fmt.Errorf("release IP: %w", err)
	}
	if ok {
		rev, err := store.Delete(ctx, a.store, key)
		if err != nil {
			return fmt.Errorf("delete endpoint record: %w", err)
		}
		a.log.Info("endpoint deleted", "endpoint", id)
		if a.dp != nil {
			if err := a.dp.syncTo(ctx, rev); err != nil {
				return fmt.Errorf("remove %s from the datapath: %w", id, err)
			}
		}
	}
	return nil
}

// listEndpoints returns this node's endpoints, or every node's.
func (a *Agent) listEndpoints(ctx context.Context, all bool) ([]api.Endpoint, error) {
	prefix := endpointPrefix(a.cfg.NodeName)
	if all {
		prefix = "endpoints/"
	}
	kvs, _, err := a.store.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	eps := make([]api.Endpoint, 0, len(kvs))
	for _, kv := range kvs {
		var ep api.Endpoint
		if err := json.Unmarshal(kv.Value, &ep); err != nil {
			a.log.Warn("undecodable endpoint record", "key", kv.Key, "err", err)
			continue
		}
		eps = append(eps, ep)
	}
	return eps, nil
}
