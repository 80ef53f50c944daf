package l2announce

import (
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/fabric-net/fabric/fabric/lbipam"
	"github.com/fabric-net/fabric/fabric/manifest"
)

// ParsePolicies parses CiliumL2AnnouncementPolicy YAML: one or more
// documents separated by "---", each a policy or a "kind: List" of them.
// Fields Fabric does not know are errors, so a typo never silently widens a
// policy to every node or interface; Kubernetes' own metadata fields and
// status are accepted and ignored. Every error names the document, the
// line, the field path and what to write instead; all errors found are
// joined. Policies come back validated, in the order written.
func ParsePolicies(data []byte) ([]Policy, error) {
	out, errs := manifest.Parse(data, "l2announce", Kind, func(r *manifest.Reader, n *yaml.Node, path string) (Policy, bool) {
		return (&parser{r}).policy(n, path)
	})
	seen := map[string]bool{}
	for _, pol := range out {
		if seen[pol.Name] {
			errs = append(errs, fmt.Errorf("l2announce: policy %q is defined twice; give each policy its own metadata.name", pol.Name))
		}
		seen[pol.Name] = true
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

type parser struct{ *manifest.Reader }

// policy parses one CiliumL2AnnouncementPolicy; prefix is the object's path
// inside its document.
func (p *parser) policy(n *yaml.Node, prefix string) (Policy, bool) {
	before := len(p.Errs)
	f, ok := p.Object(n, prefix, APIVersion, Kind)
	if !ok {
		return Policy{}, false
	}
	if v, ok := p.Str(f["apiVersion"], prefix+"apiVersion"); ok && v != APIVersion {
		p.Errorf(f["apiVersion"], prefix+"apiVersion", "%q is not a %s version; use %s", v, Kind, APIVersion)
	}
	if k, ok := p.Str(f["kind"], prefix+"kind"); ok && k != Kind {
		p.Errorf(f["kind"], prefix+"kind", "%q is not accepted here; only %s objects (or a List of them) describe L2 announcements", k, Kind)
	}
	if len(p.Errs) > before {
		return Policy{}, false
	}

	var pol Policy
	pol.Name, _ = p.Metadata(n, f, prefix, "policy")

	if manifest.IsNull(f["spec"]) {
		p.Errorf(manifest.Deref(n), prefix+"spec", "is missing; add spec with loadBalancerIPs: true and/or externalIPs: true")
		return Policy{}, false
	}
	spec := p.Fields(f["spec"], prefix+"spec", []string{"serviceSelector", "nodeSelector", "interfaces", "externalIPs", "loadBalancerIPs"}, nil)
	if s, ok := spec["serviceSelector"]; ok {
		pol.ServiceSelector = p.selector(s, prefix+"spec.serviceSelector")
	}
	if s, ok := spec["nodeSelector"]; ok {
		pol.NodeSelector = p.selector(s, prefix+"spec.nodeSelector")
	}
	for i, v := range p.List(spec["interfaces"], prefix+"spec.interfaces") {
		if s, ok := p.Str(v, fmt.Sprintf("%sspec.interfaces[%d]", prefix, i)); ok {
			pol.InterfacePatterns = append(pol.InterfacePatterns, s)
		}
	}
	if v, ok := spec["externalIPs"]; ok {
		pol.ExternalIPs = p.Bool(v, prefix+"spec.externalIPs")
	}
	if v, ok := spec["loadBalancerIPs"]; ok {
		pol.LoadBalancerIPs = p.Bool(v, prefix+"spec.loadBalancerIPs")
	}
	if len(p.Errs) > before {
		return Policy{}, false
	}
	if err := pol.Validate(); err != nil {
		p.Errorf(manifest.Deref(n), strings.TrimSuffix(prefix, "."), "%v", strings.TrimPrefix(err.Error(), "l2announce: "))
		return Policy{}, false
	}
	return pol, true
}

func (p *parser) selector(n *yaml.Node, path string) lbipam.Selector {
	f := p.Fields(n, path, []string{"matchLabels", "matchExpressions"}, nil)
	s := lbipam.Selector{MatchLabels: p.StringMap(f["matchLabels"], path+".matchLabels")}
	for i, e := range p.List(f["matchExpressions"], path+".matchExpressions") {
		ep := fmt.Sprintf("%s.matchExpressions[%d]", path, i)
		ef := p.Fields(e, ep, []string{"key", "operator", "values"}, nil)
		var r lbipam.Requirement
		if v, ok := ef["key"]; ok {
			r.Key, _ = p.Str(v, ep+".key")
		} else {
			p.Errorf(manifest.Deref(e), ep+".key", "is missing; give the label's name")
		}
		if v, ok := ef["operator"]; ok {
			op, _ := p.Str(v, ep+".operator")
			r.Operator = lbipam.Operator(op)
		} else {
			p.Errorf(manifest.Deref(e), ep+".operator", "is missing; use In, NotIn, Exists or DoesNotExist")
		}
		for j, v := range p.List(ef["values"], ep+".values") {
			if s, ok := p.Str(v, fmt.Sprintf("%s.values[%d]", ep, j)); ok {
				r.Values = append(r.Values, s)
			}
		}
		s.MatchExpressions = append(s.MatchExpressions, r)
	}
	return s
}
