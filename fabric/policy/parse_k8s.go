package policy

import (
	"fmt"
	"slices"
)

// namespaceNameKey is the label Kubernetes sets on every namespace to its
// name; Fabric maps it to the namespace label itself.
const namespaceNameKey = "kubernetes.io/metadata.name"

func (w *walker) k8sPolicy(v val) (Policy, error) {
	f, err := w.fields(v, "apiVersion", "kind", "metadata", "spec", "status")
	if err != nil {
		return Policy{}, err
	}
	p := Policy{Kind: KindNetworkPolicy}
	if err := w.metadata(at(f, v, "metadata"), true, &p); err != nil {
		return Policy{}, err
	}
	specV, ok := f["spec"]
	if !ok {
		return Policy{}, w.errf(val{v.n, v.field("spec")}, "missing: a NetworkPolicy needs spec.podSelector")
	}
	sf, err := w.fields(specV, "podSelector", "policyTypes", "ingress", "egress")
	if err != nil {
		return Policy{}, err
	}
	psV, ok := sf["podSelector"]
	if !ok {
		return Policy{}, w.errf(val{specV.n, specV.field("podSelector")}, "missing: select the pods, or write {} for every pod in the namespace")
	}
	sel, err := w.selector(psV, nil)
	if err != nil {
		return Policy{}, err
	}
	sel = sel.with(Requirement{Key: NamespaceLabel, Op: OpIn, Values: []string{p.Namespace}})

	ingress, err := w.list(sf["ingress"])
	if err != nil {
		return Policy{}, err
	}
	egress, err := w.list(sf["egress"])
	if err != nil {
		return Policy{}, err
	}
	// Kubernetes' default: Ingress always, Egress when egress rules exist.
	types := map[Direction]bool{Ingress: true, Egress: len(egress) > 0}
	if tv, ok := sf["policyTypes"]; ok {
		names, items, err := w.strs(tv)
		if err != nil {
			return Policy{}, err
		}
		types = map[Direction]bool{}
		for i, n := range names {
			switch n {
			case "Ingress":
				types[Ingress] = true
			case "Egress":
				types[Egress] = true
			default:
				return Policy{}, w.errf(items[i], "%q is not a policy type: use Ingress or Egress", n)
			}
		}
	}
	for _, sec := range []struct {
		name  string
		dir   Direction
		rules []val
	}{{"ingress", Ingress, ingress}, {"egress", Egress, egress}} {
		if !types[sec.dir] {
			if len(sec.rules) > 0 {
				p.Warnings = append(p.Warnings, fmt.Sprintf("%s: spec.%s ignored: policyTypes does not list %s, as in Kubernetes",
					origin(&p, sec.name), sec.name, map[Direction]string{Ingress: "Ingress", Egress: "Egress"}[sec.dir]))
			}
			continue
		}
		if len(sec.rules) == 0 {
			// Selected for this direction with no rules: deny all.
			p.Rules = append(p.Rules, Rule{Selector: sel, Direction: sec.dir, Origin: origin(&p, "policyTypes")})
			continue
		}
		for i, it := range sec.rules {
			r, err := w.k8sRule(it, sec.dir, p.Namespace)
			if err != nil {
				return Policy{}, err
			}
			r.Selector = sel
			r.Origin = origin(&p, fmt.Sprintf("%s[%d]", sec.name, i))
			p.Rules = append(p.Rules, r)
		}
	}
	return p, nil
}

func (w *walker) k8sRule(v val, dir Direction, ns string) (Rule, error) {
	peersName := "from"
	if dir == Egress {
		peersName = "to"
	}
	f, err := w.fields(v, peersName, "ports")
	if err != nil {
		return Rule{}, err
	}
	r := Rule{Direction: dir}
	peers, err := w.list(f[peersName])
	if err != nil {
		return Rule{}, err
	}
	for _, pv := range peers {
		peer, err := w.k8sPeer(pv, ns)
		if err != nil {
			return Rule{}, err
		}
		r.Peers = append(r.Peers, peer)
	}
	// An empty or missing from/to matches every peer in Kubernetes.
	if len(r.Peers) == 0 {
		r.Peers = []Peer{{Kind: PeerAll}}
	}
	ports, err := w.list(f["ports"])
	if err != nil {
		return Rule{}, err
	}
	for _, pv := range ports {
		pf, err := w.fields(pv, "port", "endPort", "protocol")
		if err != nil {
			return Rule{}, err
		}
		if protoV, ok := pf["protocol"]; ok {
			s, err := w.str(protoV)
			if err != nil {
				return Rule{}, err
			}
			if !slices.Contains([]string{"TCP", "UDP", "SCTP"}, s) {
				return Rule{}, w.errf(protoV, "%q is not a protocol: use TCP, UDP or SCTP", s)
			}
		}
		pr, err := w.portRange(pv, pf, "TCP")
		if err != nil {
			return Rule{}, err
		}
		r.Ports = append(r.Ports, pr)
	}
	return r, nil
}

func (w *walker) k8sPeer(v val, ns string) (Peer, error) {
	f, err := w.fields(v, "podSelector", "namespaceSelector", "ipBlock")
	if err != nil {
		return Peer{}, err
	}
	ipb, hasIP := f["ipBlock"]
	pod, hasPod := f["podSelector"]
	nsSel, hasNS := f["namespaceSelector"]
	switch {
	case hasIP && (hasPod || hasNS):
		return Peer{}, w.errf(ipb, "ipBlock cannot be combined with podSelector or namespaceSelector: use separate peers")
	case hasIP:
		bf, err := w.fields(ipb, "cidr", "except")
		if err != nil {
			return Peer{}, err
		}
		c, ok := bf["cidr"]
		if !ok {
			return Peer{}, w.errf(val{ipb.n, ipb.field("cidr")}, "missing: give the CIDR, e.g. 10.0.0.0/8")
		}
		var except *val
		if e, ok := bf["except"]; ok {
			except = &e
		}
		return w.cidrPeer(c, except)
	case !hasPod && !hasNS:
		return Peer{}, w.errf(v, "empty peer: give podSelector, namespaceSelector or ipBlock")
	}
	var sel Selector
	if hasPod {
		if sel, err = w.selector(pod, nil); err != nil {
			return Peer{}, err
		}
	}
	if !hasNS {
		return Peer{Kind: PeerSelector, Selector: sel.with(Requirement{Key: NamespaceLabel, Op: OpIn, Values: []string{ns}})}, nil
	}
	nsReqs, err := w.selector(nsSel, func(k string) string {
		if k == namespaceNameKey {
			return NamespaceLabel
		}
		return NamespaceLabelsPrefix + k
	})
	if err != nil {
		return Peer{}, err
	}
	// Exists keeps a namespaceSelector of {} to endpoints that are in some
	// namespace, i.e. pods, not reserved identities such as world.
	sel = sel.with(nsReqs.Requirements...).with(Requirement{Key: NamespaceLabel, Op: OpExists})
	return Peer{Kind: PeerSelector, Selector: sel}, nil
}
