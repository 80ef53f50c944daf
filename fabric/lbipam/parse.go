package lbipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/fabric-net/fabric/fabric/manifest"
)

// Kinds and API versions ParsePools accepts.
const (
	Kind              = "CiliumLoadBalancerIPPool"
	APIVersionV2      = "cilium.io/v2"
	APIVersionV2Alpha = "cilium.io/v2alpha1"
)

// AnnotationExclude on a pool lists addresses of its blocks that are never
// handed out: comma-separated addresses, CIDRs and first-last ranges, as in
// "10.0.0.5,10.0.0.10-10.0.0.12,10.0.0.64/30". Cilium has no such field, so
// Fabric takes it from an annotation and the same YAML still applies to a
// Cilium cluster.
const AnnotationExclude = "lbipam.fabric.io/exclude"

// annotationPrefix is Fabric's; an unknown annotation under it is a typo.
const annotationPrefix = "lbipam.fabric.io/"

// ParsePools parses CiliumLoadBalancerIPPool YAML: one or more documents
// separated by "---", each a pool or a "kind: List" of pools (what kubectl get
// -o yaml prints). Fields Fabric does not know are errors, so a typo never
// silently widens a pool; Kubernetes' own metadata fields and status are
// accepted and ignored. The pools come back validated and checked against
// each other for overlaps. Every error names the document, the line, the
// field path and what to write instead; all errors found are joined.
func ParsePools(data []byte) ([]Pool, error) {
	pools, errs := manifest.Parse(data, "lbipam", Kind, func(r *manifest.Reader, n *yaml.Node, path string) (Pool, bool) {
		return (&parser{r}).pool(n, path)
	})
	if len(errs) == 0 {
		if err := CheckOverlaps(pools); err != nil {
			errs = append(errs, fmt.Errorf("lbipam: %w", err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return pools, nil
}

type parser struct{ *manifest.Reader }

// pool parses one CiliumLoadBalancerIPPool object; prefix is the path of the
// object inside its document.
func (p *parser) pool(n *yaml.Node, prefix string) (Pool, bool) {
	before := len(p.Errs)
	f, ok := p.Object(n, prefix, APIVersionV2, Kind)
	if !ok {
		return Pool{}, false
	}
	version, _ := p.Str(f["apiVersion"], prefix+"apiVersion")
	if version != APIVersionV2 && version != APIVersionV2Alpha {
		p.Errorf(f["apiVersion"], prefix+"apiVersion", "%q is not a CiliumLoadBalancerIPPool version; use %s or %s", version, APIVersionV2, APIVersionV2Alpha)
	}
	if kind, ok := p.Str(f["kind"], prefix+"kind"); ok && kind != Kind {
		p.Errorf(f["kind"], prefix+"kind", "%q is not accepted here; only %s objects (or a List of them) describe load-balancer pools", kind, Kind)
	}
	if len(p.Errs) > before {
		return Pool{}, false
	}

	var pool Pool
	var meta map[string]*yaml.Node
	pool.Name, meta = p.Metadata(n, f, prefix, "pool")
	ann := p.StringMap(meta["annotations"], prefix+"metadata.annotations")
	for k, v := range ann {
		path := prefix + "metadata.annotations." + k
		switch {
		case k == AnnotationExclude:
			x, err := parseAddrList(v)
			if err != nil {
				p.Errorf(meta["annotations"], path, "%v", err)
			}
			pool.Exclude = x
		case strings.HasPrefix(k, annotationPrefix):
			p.Errorf(meta["annotations"], path, "unknown Fabric annotation; the only pool annotation is %s", AnnotationExclude)
		}
	}

	specFields := []string{"blocks", "serviceSelector", "disabled", "allowFirstLastIPs"}
	if version == APIVersionV2Alpha {
		specFields = append(specFields, "cidrs") // the deprecated name of blocks
	}
	if manifest.IsNull(f["spec"]) {
		p.Errorf(manifest.Deref(n), prefix+"spec", "is missing; add spec.blocks with the pool's addresses")
		return Pool{}, false
	}
	spec := p.Fields(f["spec"], prefix+"spec", specFields, nil)
	blocksKey := "blocks"
	if _, ok := spec["cidrs"]; ok {
		if _, both := spec["blocks"]; both {
			p.Errorf(spec["cidrs"], prefix+"spec.cidrs", "is the deprecated name of spec.blocks and both are set; keep only blocks")
		}
		blocksKey = "cidrs"
	}
	for i, b := range p.List(spec[blocksKey], prefix+"spec."+blocksKey) {
		pool.Blocks = append(pool.Blocks, p.block(b, fmt.Sprintf("%sspec.%s[%d]", prefix, blocksKey, i)))
	}
	if s, ok := spec["serviceSelector"]; ok {
		pool.ServiceSelector = p.selector(s, prefix+"spec.serviceSelector")
	}
	if d, ok := spec["disabled"]; ok {
		if err := manifest.Deref(d).Decode(&pool.Disabled); err != nil || manifest.Deref(d).ShortTag() != "!!bool" {
			p.Errorf(d, prefix+"spec.disabled", "%q is not a boolean; write true or false", manifest.Deref(d).Value)
		}
	}
	if a, ok := spec["allowFirstLastIPs"]; ok {
		switch v, _ := p.Str(a, prefix+"spec.allowFirstLastIPs"); v {
		case "Yes":
		case "No":
			pool.ReserveFirstLastIPs = true
		default:
			p.Errorf(a, prefix+"spec.allowFirstLastIPs", "%q is not accepted; write \"Yes\" (the default: first and last addresses of CIDRs are handed out) or \"No\"", v)
		}
	}
	if len(p.Errs) > before {
		return Pool{}, false
	}
	if err := pool.Validate(); err != nil {
		p.Errorf(manifest.Deref(n), strings.TrimSuffix(prefix, "."), "%v", err)
		return Pool{}, false
	}
	return pool, true
}

func (p *parser) block(n *yaml.Node, path string) Block {
	f := p.Fields(n, path, []string{"cidr", "start", "stop"}, nil)
	var b Block
	if v, ok := f["cidr"]; ok {
		if s, ok := p.Str(v, path+".cidr"); ok {
			c, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				p.Errorf(v, path+".cidr", "%q is not a CIDR; write address/length, e.g. 10.0.10.0/24 or 2001:db8::/64", s)
			}
			b.CIDR = c
		}
	}
	for _, k := range []string{"start", "stop"} {
		v, ok := f[k]
		if !ok {
			continue
		}
		s, ok := p.Str(v, path+"."+k)
		if !ok {
			continue
		}
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			p.Errorf(v, path+"."+k, "%q is not an IP address; write one address, e.g. 10.0.10.100", s)
		}
		if k == "start" {
			b.Start = a
		} else {
			b.Stop = a
		}
	}
	return b
}

func (p *parser) selector(n *yaml.Node, path string) Selector {
	f := p.Fields(n, path, []string{"matchLabels", "matchExpressions"}, nil)
	s := Selector{MatchLabels: p.StringMap(f["matchLabels"], path+".matchLabels")}
	for i, e := range p.List(f["matchExpressions"], path+".matchExpressions") {
		ep := fmt.Sprintf("%s.matchExpressions[%d]", path, i)
		ef := p.Fields(e, ep, []string{"key", "operator", "values"}, nil)
		var r Requirement
		if v, ok := ef["key"]; ok {
			r.Key, _ = p.Str(v, ep+".key")
		}
		if v, ok := ef["operator"]; ok {
			op, _ := p.Str(v, ep+".operator")
			r.Operator = Operator(op)
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

// parseAddrList parses "a,b-c,d/n" into blocks.
func parseAddrList(s string) ([]Block, error) {
	var out []Block
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("%q has an empty entry; separate addresses with single commas", s)
		}
		if strings.Contains(item, "/") {
			c, err := netip.ParsePrefix(item)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR; write address/length, e.g. 10.0.0.64/30", item)
			}
			out = append(out, Block{CIDR: c})
			continue
		}
		from, to, isRange := strings.Cut(item, "-")
		a, err := netip.ParseAddr(strings.TrimSpace(from))
		if err != nil {
			return nil, fmt.Errorf("%q is not an address, CIDR or first-last range; write e.g. 10.0.0.5 or 10.0.0.10-10.0.0.12", item)
		}
		b := Block{Start: a}
		if isRange {
			z, err := netip.ParseAddr(strings.TrimSpace(to))
			if err != nil {
				return nil, fmt.Errorf("%q: %q is not an address; write the range as first-last, e.g. 10.0.0.10-10.0.0.12", item, to)
			}
			b.Stop = z
		}
		out = append(out, b)
	}
	return out, nil
}
