package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/identity"
	"github.com/fabric-net/fabric/fabric/policy"
	"github.com/fabric-net/fabric/fabric/store"
)

// Policies live under policies/<kind>/<namespace>/<name> as the YAML the
// user applied (re-encoded); every node compiles them for its endpoints.
const policyPrefix = "policies/"

var kindShort = map[string]string{
	policy.KindCiliumNetworkPolicy:            "cnp",
	policy.KindCiliumClusterwideNetworkPolicy: "ccnp",
	policy.KindNetworkPolicy:                  "knp",
}

func policyKey(p policy.Policy) string {
	ns := p.Namespace
	if ns == "" {
		ns = "_"
	}
	return policyPrefix + kindShort[p.Kind] + "/" + ns + "/" + p.Name
}

// applyPolicies parses a YAML stream and stores every policy in it in one
// transaction: all of them or none.
func (a *Agent) applyPolicies(ctx context.Context, data []byte) ([]api.PolicyInfo, error) {
	pols, err := policy.Parse(data)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if len(pols) == 0 {
		return nil, badRequest("no policy in the input: give CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or NetworkPolicy documents")
	}
	var ops []store.Op
	var out []api.PolicyInfo
	for _, p := range pols {
		ops = append(ops, store.Op{Type: store.OpPut, Key: policyKey(p), Value: p.Source})
		out = append(out, policyInfo(p))
	}
	if _, err := a.store.Txn(ctx, store.Txn{Ops: ops}); err != nil {
		return nil, fmt.Errorf("store policies: %w", err)
	}
	for _, p := range pols {
		a.log.Info("policy applied", "kind", p.Kind, "namespace", p.Namespace, "name", p.Name, "rules", len(p.Rules), "warnings", len(p.Warnings))
	}
	return out, nil
}

func policyInfo(p policy.Policy) api.PolicyInfo {
	return api.PolicyInfo{Kind: p.Kind, Namespace: p.Namespace, Name: p.Name, Rules: len(p.Rules),
		Warnings: p.Warnings, YAML: string(p.Source)}
}

// storedPolicies reads and parses every stored policy. A record that no
// longer parses (written by another version) is reported, not skipped
// silently.
func (a *Agent) storedPolicies(ctx context.Context) ([]policy.Policy, error) {
	kvs, _, err := a.store.List(ctx, policyPrefix)
	if err != nil {
		return nil, err
	}
	return parseStoredPolicies(kvs)
}

func parseStoredPolicies(kvs []store.KeyValue) ([]policy.Policy, error) {
	var out []policy.Policy
	for _, kv := range kvs {
		ps, err := policy.Parse(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("stored policy %s: %w", kv.Key, err)
		}
		out = append(out, ps...)
	}
	return out, nil
}

func (a *Agent) listPolicies(ctx context.Context) ([]api.PolicyInfo, error) {
	pols, err := a.storedPolicies(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.PolicyInfo, 0, len(pols))
	for _, p := range pols {
		out = append(out, policyInfo(p))
	}
	return out, nil
}

// deletePolicy removes one policy; ref is KIND/NAMESPACE/NAME (namespace
// "_" or empty for clusterwide policies).
func (a *Agent) deletePolicy(ctx context.Context, kind, ns, name string) error {
	short, ok := kindShort[kind]
	if !ok {
		for _, s := range kindShort {
			if s == strings.ToLower(kind) {
				short, ok = s, true
			}
		}
	}
	if !ok {
		return badRequest("kind: %q is unknown: use CiliumNetworkPolicy (cnp), CiliumClusterwideNetworkPolicy (ccnp) or NetworkPolicy (knp)", kind)
	}
	if ns == "" {
		ns = "_"
	}
	key := policyPrefix + short + "/" + ns + "/" + name
	if _, ok, err := a.store.Get(ctx, key); err != nil {
		return err
	} else if !ok {
		return &httpError{http.StatusNotFound, fmt.Sprintf("no policy %s/%s/%s", kind, ns, name)}
	}
	if _, err := store.Delete(ctx, a.store, key); err != nil {
		return err
	}
	a.log.Info("policy deleted", "kind", kind, "namespace", ns, "name", name)
	return nil
}

// identitySet is every identity the store knows, with its labels: what
// selectors are expanded over.
type identitySet map[uint32]identity.Labels

func (s identitySet) All() map[uint32]identity.Labels { return s }

func identitiesFrom(kvs map[string][]byte) identitySet {
	out := identitySet{}
	for key, raw := range kvs {
		id, err := identity.ParseID(strings.TrimPrefix(key, identity.PrefixIDs))
		if err != nil {
			continue
		}
		var rec identity.Record
		if json.Unmarshal(raw, &rec) != nil {
			continue
		}
		if l, err := identity.ParseLabels(rec.Labels); err == nil {
			out[uint32(id)] = l
		}
	}
	return out
}

// tracePolicy answers `fabric policy trace`: would traffic from one set of
// labels (or endpoint) to another be allowed, and by which rule.
func (a *Agent) tracePolicy(ctx context.Context, req api.TraceRequest) (api.TraceResult, error) {
	proto, err := parseProto(req.Proto)
	if err != nil {
		return api.TraceResult{}, err
	}
	pols, err := a.storedPolicies(ctx)
	if err != nil {
		return api.TraceResult{}, err
	}
	kvs, _, err := a.store.List(ctx, identity.PrefixIDs)
	if err != nil {
		return api.TraceResult{}, err
	}
	raw := map[string][]byte{}
	for _, kv := range kvs {
		raw[kv.Key] = kv.Value
	}
	idents := identitiesFrom(raw)
	resolve := func(field string, te api.TraceEnd) (policy.TraceEndpoint, error) {
		switch {
		case te.Endpoint != "":
			eps, err := a.listEndpoints(ctx, true)
			if err != nil {
				return policy.TraceEndpoint{}, err
			}
			for _, ep := range eps {
				if ep.ID == te.Endpoint || ep.Node+"/"+ep.ID == te.Endpoint {
					l, _ := identity.ParseLabels(ep.Labels)
					return policy.TraceEndpoint{Identity: ep.Identity, Labels: l}, nil
				}
			}
			return policy.TraceEndpoint{}, badRequest("%s.endpoint: no endpoint %q: see `fabric endpoint list --all`", field, te.Endpoint)
		case te.Labels != "":
			l, err := identity.ParseLabels(te.Labels)
			if err != nil {
				return policy.TraceEndpoint{}, badRequest("%s.labels: %v", field, err)
			}
			return policy.TraceEndpoint{Labels: l}, nil
		case te.Identity != 0:
			return policy.TraceEndpoint{Identity: te.Identity}, nil
		}
		return policy.TraceEndpoint{}, badRequest("%s: give labels, an endpoint or an identity", field)
	}
	src, err := resolve("from", req.From)
	if err != nil {
		return api.TraceResult{}, err
	}
	dst, err := resolve("to", req.To)
	if err != nil {
		return api.TraceResult{}, err
	}
	r := policy.Trace(pols, src, dst, req.Port, proto, idents)
	dir := func(d policy.DirectionTrace) api.DirectionTrace {
		return api.DirectionTrace{Verdict: d.Verdict.String(), Enforced: d.Enforced, Rule: d.Rule, Reason: d.Reason}
	}
	return api.TraceResult{Verdict: r.Verdict.String(), DecidingRule: r.DecidingRule, Reason: r.Reason,
		Egress: dir(r.Egress), Ingress: dir(r.Ingress)}, nil
}

var protoNumbers = map[string]uint8{"any": 0, "": 6, "tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}

func parseProto(s string) (uint8, error) {
	if p, ok := protoNumbers[strings.ToLower(s)]; ok {
		return p, nil
	}
	if n, err := strconv.ParseUint(s, 10, 8); err == nil {
		return uint8(n), nil
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range protoNumbers {
			if k != "" && !yield(k) {
				return
			}
		}
	})
	return 0, badRequest("proto: %q is unknown: use one of %s or a protocol number", s, strings.Join(names, ", "))
}
