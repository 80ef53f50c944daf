package l2announce

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/fabric-net/fabric/fabric/lbipam"
	"github.com/fabric-net/fabric/fabric/suggest"
)

// ParsePolicies parses CiliumL2AnnouncementPolicy YAML: one or more
// documents separated by "---", each a policy or a "kind: List" of them.
// Fields Fabric does not know are errors, so a typo never silently widens a
// policy to every node or interface; Kubernetes' own metadata fields and
// status are accepted and ignored. Every error names the document, the
// line, the field path and what to write instead; all errors found are
// joined. Policies come back validated, in the order written.
func ParsePolicies(data []byte) ([]Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []Policy
	var errs []error
	for doc := 1; ; doc++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("l2announce: document %d: %w; fix the YAML syntax", doc, err))
			break
		}
		p := &parser{doc: doc}
		out = append(out, p.document(&n)...)
		errs = append(errs, p.errs...)
	}
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

type parser struct {
	doc  int
	errs []error
}

func (p *parser) errorf(n *yaml.Node, path, format string, args ...any) {
	where := fmt.Sprintf("document %d", p.doc)
	if n != nil && n.Line > 0 {
		where += fmt.Sprintf(", line %d", n.Line)
	}
	if path != "" {
		path += ": "
	}
	p.errs = append(p.errs, fmt.Errorf("l2announce: %s: %s%s", where, path, fmt.Sprintf(format, args...)))
}

// deref follows aliases a bounded number of times; only known fields are
// descended into and the schema is shallow, so recursive anchors cannot loop.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// fields returns mapping n's values by key and reports every key that is in
// neither known nor ignored, with a did-you-mean hint.
func (p *parser) fields(n *yaml.Node, path string, known, ignored []string) map[string]*yaml.Node {
	n = deref(n)
	out := map[string]*yaml.Node{}
	if isNull(n) {
		return out
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "is a %s, not a mapping; write it as key: value lines", kindName(n))
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			p.errorf(n.Content[i], path, "has a key that is not a plain name; use field names as keys")
			continue
		}
		switch {
		case slices.Contains(known, k.Value):
			if _, dup := out[k.Value]; dup {
				p.errorf(k, join(path, k.Value), "is given twice; keep one")
			}
			out[k.Value] = v
		case slices.Contains(ignored, k.Value):
		default:
			msg := fmt.Sprintf("unknown field %q; known fields are %s", k.Value, strings.Join(known, ", "))
			if s := suggest.Closest(k.Value, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			p.errorf(k, join(path, k.Value), "%s", msg)
		}
	}
	return out
}

func (p *parser) str(n *yaml.Node, path string) (string, bool) {
	n = deref(n)
	if n == nil || n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		p.errorf(n, path, "is a %s; give a string", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) boolean(n *yaml.Node, path string) bool {
	d := deref(n)
	var b bool
	if d == nil || d.Kind != yaml.ScalarNode || d.ShortTag() != "!!bool" || d.Decode(&b) != nil {
		p.errorf(n, path, "is a %s, not a boolean; write true or false", kindName(d))
		return false
	}
	return b
}

func (p *parser) list(n *yaml.Node, path string) []*yaml.Node {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, path, "is a %s, not a list; write one \"- \" item per line", kindName(n))
		return nil
	}
	return n.Content
}

func (p *parser) stringMap(n *yaml.Node, path string) map[string]string {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "is a %s, not a mapping; write key: value lines", kindName(n))
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, ok := p.str(n.Content[i], path+" key")
		if !ok {
			continue
		}
		if v, ok := p.str(n.Content[i+1], join(path, k)); ok {
			out[k] = v
		}
	}
	return out
}

func (p *parser) document(n *yaml.Node) []Policy {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	if isNull(n) {
		return nil // an empty document, as a trailing "---" makes
	}
	top := p.fields(n, "", []string{"apiVersion", "kind", "metadata", "spec", "items"}, []string{"status"})
	if len(p.errs) > 0 {
		return nil
	}
	kind := ""
	if k, ok := top["kind"]; ok {
		kind, _ = p.str(k, "kind")
	}
	if kind == "List" || kind == Kind+"List" {
		var out []Policy
		for i, item := range p.list(top["items"], "items") {
			if pol, ok := p.policy(item, fmt.Sprintf("items[%d].", i)); ok {
				out = append(out, pol)
			}
		}
		return out
	}
	if _, ok := top["items"]; ok {
		p.errorf(top["items"], "items", "only a kind: List has items; remove items or set kind: List")
		return nil
	}
	if pol, ok := p.policy(n, ""); ok {
		return []Policy{pol}
	}
	return nil
}

var ignoredMetadata = []string{
	"namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
	"deletionTimestamp", "deletionGracePeriodSeconds", "managedFields",
	"finalizers", "ownerReferences", "generateName", "selfLink", "annotations",
}

// policy parses one CiliumL2AnnouncementPolicy; prefix is the object's path
// inside its document.
func (p *parser) policy(n *yaml.Node, prefix string) (Policy, bool) {
	before := len(p.errs)
	f := p.fields(n, strings.TrimSuffix(prefix, "."), []string{"apiVersion", "kind", "metadata", "spec"}, []string{"status"})
	if len(p.errs) > before {
		return Policy{}, false
	}
	for _, k := range []string{"apiVersion", "kind"} {
		if _, ok := f[k]; !ok {
			p.errorf(deref(n), prefix+k, "is missing; start the object with apiVersion: %s and kind: %s", APIVersion, Kind)
		}
	}
	if len(p.errs) > before {
		return Policy{}, false
	}
	if v, ok := p.str(f["apiVersion"], prefix+"apiVersion"); ok && v != APIVersion {
		p.errorf(f["apiVersion"], prefix+"apiVersion", "%q is not a %s version; use %s", v, Kind, APIVersion)
	}
	if k, ok := p.str(f["kind"], prefix+"kind"); ok && k != Kind {
		p.errorf(f["kind"], prefix+"kind", "%q is not accepted here; only %s objects (or a List of them) describe L2 announcements", k, Kind)
	}
	if len(p.errs) > before {
		return Policy{}, false
	}

	var pol Policy
	meta := p.fields(f["metadata"], prefix+"metadata", []string{"name", "labels"}, ignoredMetadata)
	if v, ok := meta["name"]; ok {
		pol.Name, _ = p.str(v, prefix+"metadata.name")
	} else {
		p.errorf(deref(n), prefix+"metadata.name", "is missing; give the policy a name")
	}
	p.stringMap(meta["labels"], prefix+"metadata.labels") // checked, not used

	if isNull(f["spec"]) {
		p.errorf(deref(n), prefix+"spec", "is missing; add spec with loadBalancerIPs: true and/or externalIPs: true")
		return Policy{}, false
	}
	spec := p.fields(f["spec"], prefix+"spec", []string{"serviceSelector", "nodeSelector", "interfaces", "externalIPs", "loadBalancerIPs"}, nil)
	if s, ok := spec["serviceSelector"]; ok {
		pol.ServiceSelector = p.selector(s, prefix+"spec.serviceSelector")
	}
	if s, ok := spec["nodeSelector"]; ok {
		pol.NodeSelector = p.selector(s, prefix+"spec.nodeSelector")
	}
	for i, v := range p.list(spec["interfaces"], prefix+"spec.interfaces") {
		if s, ok := p.str(v, fmt.Sprintf("%sspec.interfaces[%d]", prefix, i)); ok {
			pol.InterfacePatterns = append(pol.InterfacePatterns, s)
		}
	}
	if v, ok := spec["externalIPs"]; ok {
		pol.ExternalIPs = p.boolean(v, prefix+"spec.externalIPs")
	}
	if v, ok := spec["loadBalancerIPs"]; ok {
		pol.LoadBalancerIPs = p.boolean(v, prefix+"spec.loadBalancerIPs")
	}
	if len(p.errs) > before {
		return Policy{}, false
	}
	if err := pol.Validate(); err != nil {
		p.errorf(deref(n), strings.TrimSuffix(prefix, "."), "%v", strings.TrimPrefix(err.Error(), "l2announce: "))
		return Policy{}, false
	}
	return pol, true
}

func (p *parser) selector(n *yaml.Node, path string) lbipam.Selector {
	f := p.fields(n, path, []string{"matchLabels", "matchExpressions"}, nil)
	s := lbipam.Selector{MatchLabels: p.stringMap(f["matchLabels"], path+".matchLabels")}
	for i, e := range p.list(f["matchExpressions"], path+".matchExpressions") {
		ep := fmt.Sprintf("%s.matchExpressions[%d]", path, i)
		ef := p.fields(e, ep, []string{"key", "operator", "values"}, nil)
		var r lbipam.Requirement
		if v, ok := ef["key"]; ok {
			r.Key, _ = p.str(v, ep+".key")
		} else {
			p.errorf(deref(e), ep+".key", "is missing; give the label's name")
		}
		if v, ok := ef["operator"]; ok {
			op, _ := p.str(v, ep+".operator")
			r.Operator = lbipam.Operator(op)
		} else {
			p.errorf(deref(e), ep+".operator", "is missing; use In, NotIn, Exists or DoesNotExist")
		}
		for j, v := range p.list(ef["values"], ep+".values") {
			if s, ok := p.str(v, fmt.Sprintf("%s.values[%d]", ep, j)); ok {
				r.Values = append(r.Values, s)
			}
		}
		s.MatchExpressions = append(s.MatchExpressions, r)
	}
	return s
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func kindName(n *yaml.Node) string {
	switch {
	case n == nil || n.Kind == 0:
		return "missing value"
	case n.Kind == yaml.MappingNode:
		return "mapping"
	case n.Kind == yaml.SequenceNode:
		return "list"
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null":
		return "empty value"
	case n.Kind == yaml.ScalarNode:
		return fmt.Sprintf("value %q", n.Value)
	default:
		return "alias"
	}
}
