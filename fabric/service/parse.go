package service

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fabric-net/fabric/fabric/identity"
)

// Parse reads services from YAML shaped like Kubernetes Services (apiVersion
// v1, kind Service), one per document; empty documents are skipped. It
// checks everything that does not depend on the cluster's configuration;
// call Validate with the agent's Config before using a service (node port
// range, Maglev defaults).
//
// Unknown fields are errors, so a typo never silently falls back to a
// default. Each error names the document, the line, the field path and the
// fix, e.g. "document 1 (default/web), line 9: spec.ports[1].port: 0 is not
// a port: use 1-65535"; all problems of a document are reported together.
//
// Not supported yet, each with an error that says so: headless services
// (clusterIP: None), ExternalName, dual-stack cluster IPs, SCTP, and the
// Kubernetes fields listed in unsupportedSpec.
func Parse(data []byte) ([]Service, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var (
		out  []Service
		errs []error
		docs = map[string]int{} // service key → document
	)
	for doc := 1; ; doc++ {
		var root yaml.Node
		if err := dec.Decode(&root); err != nil {
			if !errors.Is(err, io.EOF) {
				// The decoder cannot resume after a syntax error.
				errs = append(errs, fmt.Errorf("document %d: %w", doc, err))
			}
			break
		}
		if len(root.Content) == 0 || isNull(resolve(root.Content[0])) {
			continue
		}
		d := &decoder{lines: map[string]int{}}
		svc := d.service(root.Content[0])
		where := fmt.Sprintf("document %d", doc)
		if svc.Name != "" {
			where = fmt.Sprintf("document %d (%s)", doc, svc.Key())
		}
		if len(d.errs) == 0 {
			// Decoding errors leave zero values behind; checking them would
			// only repeat the problem in other words.
			for _, e := range svc.check(nil) {
				e.line = d.lineOf(e.path)
				d.errs = append(d.errs, e)
			}
		}
		if len(d.errs) == 0 {
			if first, ok := docs[svc.Key()]; ok {
				d.fail(nil, "metadata.name", "service %s is also document %d: give each service once", svc.Key(), first)
			}
		}
		for _, e := range d.errs {
			if e.line > 0 {
				errs = append(errs, fmt.Errorf("%s, line %d: %w", where, e.line, e))
			} else {
				errs = append(errs, fmt.Errorf("%s: %w", where, e))
			}
		}
		if len(d.errs) == 0 {
			docs[svc.Key()] = doc
			out = append(out, svc)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// Fields of a Kubernetes Service that Fabric does not serve yet, and why.
var (
	unsupportedTop = map[string]string{
		"status": "is written by the cluster, not read: drop it; request load-balancer addresses with spec.loadBalancerIP or the " + AnnotationLBIPAMIPs + " annotation",
	}
	unsupportedMetadata = map[string]string{
		"generateName": "is not supported: give metadata.name",
	}
	unsupportedSpec = map[string]string{
		"clusterIPs":                    "is not supported yet: a service has one cluster IP; use spec.clusterIP",
		"ipFamilies":                    "is not supported yet: a service has the family of its cluster IP; drop it",
		"ipFamilyPolicy":                "is not supported yet: a service has the family of its cluster IP; drop it",
		"loadBalancerIPs":               "is not a Service field: use spec.loadBalancerIP for one address, or the " + AnnotationLBIPAMIPs + " annotation for several",
		"loadBalancerSourceRanges":      "is not supported yet: restrict sources with a network policy; drop it",
		"loadBalancerClass":             "is not supported: Fabric serves every LoadBalancer service; drop it",
		"healthCheckNodePort":           "is not supported yet: drop it",
		"allocateLoadBalancerNodePorts": "is not supported yet: drop it",
		"publishNotReadyAddresses":      "is not supported yet: only ready endpoints are backends; drop it",
		"externalName":                  "is not supported: Fabric serves ClusterIP, NodePort and LoadBalancer services, not DNS aliases; drop it",
		"trafficDistribution":           "is not supported yet: drop it",
	}
	unsupportedPort = map[string]string{
		"appProtocol": "is not used by Fabric yet: drop it",
	}
)

// decoder walks one document's node tree, collecting every problem.
type decoder struct {
	errs  []*fieldError
	lines map[string]int // field path → line, for errors found after decoding
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	e := fieldErr(path, format, args...)
	if n != nil {
		e.line = n.Line
	} else {
		e.line = d.lineOf(path)
	}
	d.errs = append(d.errs, e)
}

// lineOf is the line of path, or of its closest parent that was given.
func (d *decoder) lineOf(path string) int {
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

func (d *decoder) service(n *yaml.Node) Service {
	var s Service
	top := d.object(n, "", []string{"apiVersion", "kind", "metadata", "spec"}, unsupportedTop)
	if top == nil {
		return s
	}
	switch v, given := d.optString(top, "apiVersion", "apiVersion"); {
	case !given:
		d.fail(n, "apiVersion", "missing: add apiVersion: v1")
	case v != "v1":
		d.fail(top["apiVersion"], "apiVersion", "%.40q is not supported: use v1", v)
	}
	switch v, given := d.optString(top, "kind", "kind"); {
	case !given:
		d.fail(n, "kind", "missing: add kind: Service")
	case v != "Service":
		// The rest of a document of another kind would only add noise.
		d.fail(top["kind"], "kind", "%.40q is not a Service: give only Service documents (apiVersion: v1, kind: Service)", v)
		return s
	}
	d.metadata(&s, top["metadata"])
	d.spec(&s, top["spec"])
	return s
}

func (d *decoder) metadata(s *Service, n *yaml.Node) {
	if n == nil {
		d.fail(nil, "metadata", "missing: add metadata with a name, e.g. metadata: {name: web, namespace: default}")
		return
	}
	md := d.object(n, "metadata", []string{"name", "namespace", "labels", "annotations"}, unsupportedMetadata)
	s.Name, _ = d.optString(md, "name", "metadata.name")
	s.Namespace, _ = d.optString(md, "namespace", "metadata.namespace")
	if s.Namespace == "" {
		s.Namespace = "default"
	}
	if labels := d.stringMap(md["labels"], "metadata.labels"); labels != nil {
		ls, err := identity.LabelsFromMap(labels)
		if err != nil {
			d.fail(md["labels"], "metadata.labels", "%v", err)
		}
		s.Labels = ls
	}
	s.Annotations = d.stringMap(md["annotations"], "metadata.annotations")
	d.annotations(s)
}

// annotations reads the annotations Fabric understands from s.Annotations.
// Errors take the line of their key.
func (d *decoder) annotations(s *Service) {
	for _, key := range sortedKeys(s.Annotations) {
		value, path := s.Annotations[key], annotationPath(key)
		switch key {
		case AnnotationGlobal:
			switch value {
			case "true":
				s.Global = true
			case "false":
			default:
				d.fail(nil, path, "%.40q is not a boolean: use \"true\" or \"false\"", value)
			}
		case AnnotationMaglevTableSize:
			m, err := strconv.Atoi(value)
			if err != nil {
				d.fail(nil, path, "%.40q is not a table size: use a prime such as %d", value, defaultTableSize)
				continue
			}
			s.MaglevTableSize = m
		case AnnotationLBIPAMIPs:
			for elem := range strings.SplitSeq(value, ",") {
				if elem = strings.TrimSpace(elem); elem == "" {
					continue
				}
				if a, ok := d.addr(nil, path, elem); ok && !slices.Contains(s.LoadBalancerIPs, a) {
					s.LoadBalancerIPs = append(s.LoadBalancerIPs, a)
				}
			}
		default:
			if strings.HasPrefix(key, fabricAnnotationPrefix) {
				d.fail(nil, path, "unknown Fabric annotation: use %s or %s", AnnotationGlobal, AnnotationMaglevTableSize)
			}
		}
	}
}

func (d *decoder) spec(s *Service, n *yaml.Node) {
	known := []string{"type", "clusterIP", "ports", "selector", "sessionAffinity", "sessionAffinityConfig",
		"externalTrafficPolicy", "internalTrafficPolicy", "loadBalancerIP", "externalIPs"}
	spec := d.object(n, "spec", known, unsupportedSpec)

	switch v, _ := d.optString(spec, "type", "spec.type"); v {
	case "", "ClusterIP":
	case "NodePort":
		s.Type = NodePort
	case "LoadBalancer":
		s.Type = LoadBalancer
	case "ExternalName":
		d.fail(spec["type"], "spec.type", "ExternalName is not supported: use ClusterIP, NodePort or LoadBalancer")
	default:
		d.fail(spec["type"], "spec.type", "%.40q is not a type: use ClusterIP, NodePort or LoadBalancer", v)
	}

	switch v, _ := d.optString(spec, "clusterIP", "spec.clusterIP"); v {
	case "":
	case "None":
		d.fail(spec["clusterIP"], "spec.clusterIP", "None (a headless service) is not supported yet: give an address from the service CIDR, or leave it out to have one allocated")
	default:
		s.ClusterIP, _ = d.addr(spec["clusterIP"], "spec.clusterIP", v)
	}

	for i, item := range d.list(spec["ports"], "spec.ports") {
		s.Ports = append(s.Ports, d.port(item, fmt.Sprintf("spec.ports[%d]", i)))
	}

	if sel := d.stringMap(spec["selector"], "spec.selector"); sel != nil {
		ls, err := identity.LabelsFromMap(sel)
		if err != nil {
			d.fail(spec["selector"], "spec.selector", "%v", err)
		}
		s.Selector = ls
	}

	switch v, _ := d.optString(spec, "sessionAffinity", "spec.sessionAffinity"); v {
	case "", "None":
	case "ClientIP":
		s.Affinity = Affinity{ClientIP: true, Timeout: DefaultAffinityTimeout}
	default:
		d.fail(spec["sessionAffinity"], "spec.sessionAffinity", "%.40q is not a session affinity: use None or ClientIP", v)
	}
	if sac := d.object(spec["sessionAffinityConfig"], "spec.sessionAffinityConfig", []string{"clientIP"}, nil); sac != nil {
		cip := d.object(sac["clientIP"], "spec.sessionAffinityConfig.clientIP", []string{"timeoutSeconds"}, nil)
		if n := cip["timeoutSeconds"]; n != nil {
			const path = "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
			if v, ok := d.integer(n, path); ok {
				if v < 1 || v > int64(MaxAffinityTimeout.Seconds()) {
					d.fail(n, path, "%d is out of range: use 1-%d seconds (default %d)", v, int(MaxAffinityTimeout.Seconds()), int(DefaultAffinityTimeout.Seconds()))
				} else {
					s.Affinity.Timeout = time.Duration(v) * time.Second
				}
			}
		}
	}

	s.ExternalPolicy = d.policy(spec, "externalTrafficPolicy")
	s.InternalPolicy = d.policy(spec, "internalTrafficPolicy")

	if v, _ := d.optString(spec, "loadBalancerIP", "spec.loadBalancerIP"); v != "" {
		if a, ok := d.addr(spec["loadBalancerIP"], "spec.loadBalancerIP", v); ok {
			// The annotation's addresses, read before, go after this one.
			s.LoadBalancerIPs = slices.DeleteFunc(s.LoadBalancerIPs, func(b netip.Addr) bool { return b == a })
			s.LoadBalancerIPs = slices.Insert(s.LoadBalancerIPs, 0, a)
		}
	}
	for i, item := range d.list(spec["externalIPs"], "spec.externalIPs") {
		path := fmt.Sprintf("spec.externalIPs[%d]", i)
		if v, ok := d.str(item, path); ok {
			if a, ok := d.addr(item, path, v); ok {
				if slices.Contains(s.ExternalIPs, a) {
					d.fail(item, path, "%s is given twice: give it once", a)
					continue
				}
				s.ExternalIPs = append(s.ExternalIPs, a)
			}
		}
	}
}

func (d *decoder) port(n *yaml.Node, path string) Port {
	var p Port
	f := d.object(n, path, []string{"name", "protocol", "port", "targetPort", "nodePort"}, unsupportedPort)
	if f == nil {
		return p
	}
	p.Name, _ = d.optString(f, "name", path+".name")
	switch v, _ := d.optString(f, "protocol", path+".protocol"); v {
	case "", "TCP":
	case "UDP":
		p.Protocol = UDP
	case "SCTP":
		d.fail(f["protocol"], path+".protocol", "SCTP is not supported: use TCP or UDP")
	default:
		d.fail(f["protocol"], path+".protocol", "%.40q is not a protocol: use TCP or UDP", v)
	}
	if pn := f["port"]; pn == nil || isNull(resolve(pn)) {
		d.fail(n, path+".port", "missing: give the service's port, 1-65535")
	} else if v, ok := d.integer(pn, path+".port"); ok {
		if v < 1 || v > 65535 {
			d.fail(pn, path+".port", "%d is not a port: use 1-65535", v)
		} else {
			p.Port = uint16(v)
		}
	}
	if tn := resolve(f["targetPort"]); tn != nil && !isNull(tn) {
		tpath := path + ".targetPort"
		switch {
		case tn.Kind == yaml.ScalarNode && tn.ShortTag() == "!!str":
			if _, err := strconv.Atoi(tn.Value); err == nil {
				d.fail(tn, tpath, "%q is a quoted number: write it unquoted, targetPort: %s", tn.Value, tn.Value)
			} else {
				p.TargetPortName = tn.Value
			}
		default:
			if v, ok := d.integer(tn, tpath); ok {
				if v < 1 || v > 65535 {
					d.fail(tn, tpath, "%d is not a port: use 1-65535 or a container port name", v)
				} else {
					p.TargetPort = uint16(v)
				}
			}
		}
	}
	if nn := f["nodePort"]; nn != nil && !isNull(resolve(nn)) {
		if v, ok := d.integer(nn, path+".nodePort"); ok {
			if v < 0 || v > 65535 {
				d.fail(nn, path+".nodePort", "%d is not a port: use one in the node port range (default 30000-32767), or leave it out to have one allocated", v)
			} else {
				p.NodePort = uint16(v)
			}
		}
	}
	return p
}

func (d *decoder) policy(spec map[string]*yaml.Node, key string) TrafficPolicy {
	switch v, _ := d.optString(spec, key, "spec."+key); v {
	case "", "Cluster":
		return Cluster
	case "Local":
		return Local
	default:
		d.fail(spec[key], "spec."+key, "%.40q is not a traffic policy: use Cluster or Local", v)
		return Cluster
	}
}

func (d *decoder) addr(n *yaml.Node, path, s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		d.fail(n, path, "%.40q is not an IP address: give one such as 192.0.2.10 or 2001:db8::10", s)
		return netip.Addr{}, false
	}
	if msg := checkUnicast(a); msg != "" {
		d.fail(n, path, "%s %s: give a unicast address such as 192.0.2.10", a, msg)
		return netip.Addr{}, false
	}
	return a, true
}

// Node helpers. Every value goes through resolve, so anchors and aliases
// work; "<<" merge keys do not (they are reported).

func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names a value for an error: "a list", "the number 80".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("the string %.40q", n.Value)
		case "!!null":
			return "empty"
		case "!!int", "!!float":
			return fmt.Sprintf("the number %.40s", n.Value)
		case "!!bool":
			return fmt.Sprintf("the boolean %.40s", n.Value)
		}
		return fmt.Sprintf("%.40q tagged %.40s", n.Value, n.ShortTag())
	}
	return "an alias"
}

// object returns a mapping's fields by key. Keys outside known are reported,
// with the reason from unsupported when it has one. A null value is an empty
// mapping; nil is returned for it and for a value that is not a mapping.
func (d *decoder) object(n *yaml.Node, path string, known []string, unsupported map[string]string) map[string]*yaml.Node {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "is %s, want a mapping of field: value", describe(n))
		return nil
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := resolve(n.Content[i])
		if k == nil || k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			d.fail(k, path, "has a key that is not a field name (merge keys << are not supported): write the fields out")
			continue
		}
		fp := join(path, k.Value)
		d.lines[fp] = k.Line
		switch {
		case out[k.Value] != nil:
			d.fail(k, fp, "given twice: keep one")
		case slices.Contains(known, k.Value):
			out[k.Value] = n.Content[i+1]
		case unsupported[k.Value] != "":
			d.fail(k, fp, "%s", unsupported[k.Value])
		default:
			hint := ""
			for _, f := range known {
				if strings.EqualFold(f, k.Value) {
					hint = fmt.Sprintf(" (did you mean %s?)", f)
				}
			}
			d.fail(k, fp, "unknown field%s: use one of %s", hint, strings.Join(known, ", "))
		}
	}
	return out
}

// stringMap reads a mapping of string to string (labels, annotations,
// selector). nil means absent or wrong.
func (d *decoder) stringMap(n *yaml.Node, path string) map[string]string {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "is %s, want a mapping of key: value", describe(n))
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := resolve(n.Content[i])
		if k == nil || k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			d.fail(k, path, "has a key that is not a string (merge keys << are not supported): write the keys out")
			continue
		}
		fp := fmt.Sprintf("%s[%q]", path, k.Value)
		d.lines[fp] = k.Line
		if _, dup := out[k.Value]; dup {
			d.fail(k, fp, "given twice: keep one")
			continue
		}
		v, ok := d.str(n.Content[i+1], fp)
		if ok {
			out[k.Value] = v
		}
	}
	return out
}

// list reads a sequence; null is an empty one.
func (d *decoder) list(n *yaml.Node, path string) []*yaml.Node {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "is %s, want a list", describe(n))
		return nil
	}
	for i, item := range n.Content {
		d.lines[fmt.Sprintf("%s[%d]", path, i)] = item.Line
	}
	return n.Content
}

// optString reads an optional string field; given is false when it is absent
// or null.
func (d *decoder) optString(fields map[string]*yaml.Node, key, path string) (v string, given bool) {
	n := resolve(fields[key])
	if isNull(n) {
		return "", false
	}
	v, ok := d.str(n, path)
	return v, ok
}

// str reads a string. Like Kubernetes, it does not turn numbers and booleans
// into strings: the fix is to quote them.
func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	n = resolve(n)
	switch {
	case isNull(n):
		return "", true
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str":
		return n.Value, true
	case n.Kind == yaml.ScalarNode:
		d.fail(n, path, "is %s, want a string: quote it, %.40q", describe(n), n.Value)
	default:
		d.fail(n, path, "is %s, want a string", describe(n))
	}
	return "", false
}

// integer reads a whole number. Quoted numbers are strings, as in Kubernetes.
func (d *decoder) integer(n *yaml.Node, path string) (int64, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		var v int64
		if err := n.Decode(&v); err == nil {
			return v, true
		}
		d.fail(n, path, "%.40s is out of range: use 1-65535", n.Value)
		return 0, false
	}
	fix := ""
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
		if _, err := strconv.Atoi(n.Value); err == nil {
			fix = ": write it unquoted"
		}
	}
	d.fail(n, path, "is %s, want a whole number%s", describe(n), fix)
	return 0, false
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
