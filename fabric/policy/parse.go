package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Parse reads one or more policy documents separated by "---". It returns
// all policies, or nil and every document's first error: a file is applied
// whole or not at all, since half a policy set can open what the other half
// was meant to close. Errors are *ParseError values, joined.
func Parse(data []byte) ([]Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &ParseError{Document: len(docs) + 1, Msg: fmt.Sprintf("not valid YAML: %v", err)}
		}
		docs = append(docs, &n)
	}
	var out []Policy
	var errs []error
	for i, d := range docs {
		w := &walker{}
		if len(docs) > 1 {
			w.doc = i + 1
		}
		root := val{n: d}
		if d.Kind == yaml.DocumentNode {
			if len(d.Content) == 0 {
				continue
			}
			root.n = d.Content[0]
		}
		if isNull(root.n) {
			continue // an empty document, as between two "---"
		}
		ps, err := w.document(root)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, ps...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// objectMeta lists the ObjectMeta fields kubectl writes; only name and
// namespace matter to policy, the others are accepted so that the output of
// `kubectl get -o yaml` parses.
var objectMeta = []string{"name", "namespace", "labels", "annotations", "uid", "resourceVersion",
	"generation", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
	"managedFields", "ownerReferences", "finalizers", "generateName", "selfLink"}

func (w *walker) document(v val) ([]Policy, error) {
	v, err := w.deref(v)
	if err != nil {
		return nil, err
	}
	loose, err := w.fields(v) // peek at the kind; each kind checks its own fields
	if err != nil {
		return nil, err
	}
	api, err := w.str(loose["apiVersion"])
	if err != nil {
		return nil, err
	}
	kind, err := w.str(loose["kind"])
	if err != nil {
		return nil, err
	}
	apiPath, kindPath := val{v.n, v.field("apiVersion")}, val{v.n, v.field("kind")}
	want := map[string]string{
		KindCiliumNetworkPolicy:            "cilium.io/v2",
		KindCiliumClusterwideNetworkPolicy: "cilium.io/v2",
		KindNetworkPolicy:                  "networking.k8s.io/v1",
		"List":                             "v1",
	}
	if kind == "" {
		return nil, w.errf(kindPath, "missing: use CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or NetworkPolicy")
	}
	wantAPI, ok := want[kind]
	if !ok {
		return nil, w.errf(kindPath, "%q is not a policy kind Fabric reads: use CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or NetworkPolicy", kind)
	}
	if api != wantAPI {
		return nil, w.errf(apiPath, "%q does not go with kind %s: use %s", api, kind, wantAPI)
	}
	if kind == "List" {
		f, err := w.fields(v, "apiVersion", "kind", "metadata", "items")
		if err != nil {
			return nil, err
		}
		items, err := w.list(f["items"])
		if err != nil {
			return nil, err
		}
		var out []Policy
		for _, it := range items {
			ps, err := w.document(it)
			if err != nil {
				return nil, err
			}
			out = append(out, ps...)
		}
		return out, nil
	}
	var p Policy
	if kind == KindNetworkPolicy {
		p, err = w.k8sPolicy(v)
	} else {
		p, err = w.ciliumPolicy(v, kind)
	}
	if err != nil {
		return nil, err
	}
	if src, err := yaml.Marshal(v.n); err == nil {
		p.Source = src
	}
	return []Policy{p}, nil
}

// metadata reads name and namespace. Namespaced kinds default to the
// "default" namespace, as kubectl does, with a warning.
func (w *walker) metadata(v val, namespaced bool, p *Policy) error {
	f, err := w.fields(v, objectMeta...)
	if err != nil {
		return err
	}
	if p.Name, err = w.str(f["name"]); err != nil {
		return err
	}
	if p.Name == "" {
		return w.errf(at(f, v, "name"), "missing: every policy needs a name")
	}
	ns, err := w.str(f["namespace"])
	if err != nil {
		return err
	}
	switch {
	case namespaced && ns == "":
		ns = "default"
		p.Warnings = append(p.Warnings, fmt.Sprintf("%s: metadata.namespace not set: using %q, as kubectl would", p.Name, ns))
	case !namespaced && ns != "":
		p.Warnings = append(p.Warnings, fmt.Sprintf("%s: metadata.namespace %q ignored: a clusterwide policy has no namespace", p.Name, ns))
		ns = ""
	}
	p.Namespace = ns
	return nil
}

// origin names a rule for traces and warnings.
func origin(p *Policy, rulePath string) string {
	name := p.Name
	if p.Namespace != "" {
		name = p.Namespace + "/" + p.Name
	}
	if p.Kind == KindNetworkPolicy {
		name += " (NetworkPolicy)"
	}
	return name + ": " + rulePath
}

// namespaced adds the implicit namespace requirement to a peer selector of a
// namespaced policy, unless it already names a namespace or reserved label.
func namespaced(s Selector, ns string) Selector {
	if ns == "" {
		return s
	}
	_, nsKey := splitKey(NamespaceLabel)
	if s.refersTo(nsKey, "reserved") {
		return s
	}
	return s.with(Requirement{Key: NamespaceLabel, Op: OpIn, Values: []string{ns}})
}

// port reads a port number, written as a number or a string.
func (w *walker) port(v val) (uint16, error) {
	s, err := w.str(v)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil {
		return 0, w.errf(v, "%q is not a port number or name: use 1-65535 (named ports are not supported: Fabric endpoints carry no port names)", s)
	}
	return uint16(n), nil
}

// portRange reads port/endPort/protocol, shared by Cilium and Kubernetes.
func (w *walker) portRange(v val, f map[string]val, defaultProto string) (PortRange, error) {
	var pr PortRange
	protoV, ok := f["protocol"]
	proto := defaultProto
	if ok {
		s, err := w.str(protoV)
		if err != nil {
			return pr, err
		}
		proto = strings.ToUpper(s)
	}
	switch proto {
	case "TCP":
		pr.Proto = ProtoTCP
	case "UDP":
		pr.Proto = ProtoUDP
	case "SCTP":
		pr.Proto = ProtoSCTP
	case "ANY":
		pr.Proto = 0
	case "ICMP":
		pr.Proto = ProtoICMP
	case "ICMPV6":
		pr.Proto = ProtoICMPv6
	default:
		return pr, w.errf(protoV, "%q is not a protocol: use TCP, UDP, SCTP or ANY (ICMP types go in icmps)", proto)
	}
	if pv, ok := f["port"]; ok {
		p, err := w.port(pv)
		if err != nil {
			return pr, err
		}
		pr.From, pr.To = p, p
	}
	if ev, ok := f["endPort"]; ok {
		e, err := w.port(ev)
		if err != nil {
			return pr, err
		}
		if pr.From == 0 {
			return pr, w.errf(ev, "endPort %d needs a port to start the range: add port", e)
		}
		if e < pr.From {
			return pr, w.errf(ev, "endPort %d is below port %d: make endPort at least port", e, pr.From)
		}
		pr.To = e
	}
	if (pr.Proto == ProtoICMP || pr.Proto == ProtoICMPv6) && pr.From != 0 {
		return pr, w.errf(v, "protocol %s has no ports: remove the port, and list ICMP types under icmps", proto)
	}
	return pr, nil
}

// cidr reads a prefix or a bare address (a /32 or /128), masked.
func (w *walker) cidr(v val) (netip.Prefix, error) {
	s, err := w.str(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, w.errf(v, "%q is not a CIDR: write an address and prefix length, e.g. 10.0.0.0/8 or 2001:db8::/32", s)
}

// cidrPeer reads a CIDR with exceptions, each inside the CIDR.
func (w *walker) cidrPeer(cidrV val, exceptV *val) (Peer, error) {
	c, err := w.cidr(cidrV)
	if err != nil {
		return Peer{}, err
	}
	peer := Peer{Kind: PeerCIDR, CIDR: c}
	if exceptV == nil {
		return peer, nil
	}
	items, err := w.list(*exceptV)
	if err != nil {
		return Peer{}, err
	}
	for _, it := range items {
		e, err := w.cidr(it)
		if err != nil {
			return Peer{}, err
		}
		if e.Addr().Is4() != c.Addr().Is4() || e.Bits() < c.Bits() || !c.Contains(e.Addr()) {
			return Peer{}, w.errf(it, "%s is not inside %s: an exception must carve out part of the CIDR", e, c)
		}
		peer.Except = append(peer.Except, e)
	}
	return peer, nil
}
