package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Entities are the Cilium entity names fromEntities/toEntities accept.
var Entities = []string{"all", "cluster", "health", "host", "ingress", "init",
	"kube-apiserver", "remote-node", "unmanaged", "world", "world-ipv4", "world-ipv6"}

// unsupported are Cilium rule fields Fabric knows but cannot enforce yet.
// Ignoring them would widen the rule (its ports would open to every peer),
// so they are errors that say what to write instead.
var unsupported = map[string]string{
	"fromRequires": "it is deprecated in Cilium: use deny rules or a narrower fromEndpoints",
	"toRequires":   "it is deprecated in Cilium: use deny rules or a narrower toEndpoints",
	"fromGroups":   "cloud provider groups are not available: use fromCIDRSet",
	"toGroups":     "cloud provider groups are not available: use toCIDRSet",
	"fromNodes":    "node selection is not available: use fromEntities [host, remote-node]",
	"toNodes":      "node selection is not available: use toEntities [host, remote-node]",
	"toServices":   "service peers are not resolved yet: use toEndpoints with the backends' labels",
	"toFQDNs":      "DNS-based peers are not resolved yet: use toCIDRSet with the addresses",
}

func (w *walker) ciliumPolicy(v val, kind string) (Policy, error) {
	f, err := w.fields(v, "apiVersion", "kind", "metadata", "spec", "specs", "status")
	if err != nil {
		return Policy{}, err
	}
	p := Policy{Kind: kind}
	if err := w.metadata(at(f, v, "metadata"), kind == KindCiliumNetworkPolicy, &p); err != nil {
		return Policy{}, err
	}
	var specs []val
	var prefixes []string // the rule path prefix of each spec, for origins
	if s, ok := f["spec"]; ok {
		specs, prefixes = append(specs, s), append(prefixes, "")
	}
	if s, ok := f["specs"]; ok {
		items, err := w.list(s)
		if err != nil {
			return Policy{}, err
		}
		for i, it := range items {
			specs, prefixes = append(specs, it), append(prefixes, fmt.Sprintf("specs[%d].", i))
		}
	}
	if len(specs) == 0 {
		return Policy{}, w.errf(val{v.n, v.field("spec")}, "missing: a %s needs spec (or specs) with an endpointSelector and rules", kind)
	}
	for i, s := range specs {
		if err := w.ciliumSpec(s, prefixes[i], &p); err != nil {
			return Policy{}, err
		}
	}
	return p, nil
}

func (w *walker) ciliumSpec(v val, prefix string, p *Policy) error {
	f, err := w.fields(v, "endpointSelector", "nodeSelector", "ingress", "ingressDeny",
		"egress", "egressDeny", "labels", "description", "enableDefaultDeny")
	if err != nil {
		return err
	}
	if ns, ok := f["nodeSelector"]; ok {
		return w.errf(ns, "host policies are not supported yet: select workloads with endpointSelector")
	}
	esV, ok := f["endpointSelector"]
	if !ok {
		return w.errf(val{v.n, v.field("endpointSelector")}, "missing: select the endpoints the rules apply to, or write {} for all")
	}
	sel, err := w.selector(esV, nil)
	if err != nil {
		return err
	}
	if p.Namespace != "" {
		// The subject of a namespaced policy is always in its namespace,
		// whatever the selector says.
		sel = sel.with(Requirement{Key: NamespaceLabel, Op: OpIn, Values: []string{p.Namespace}})
	}
	if lv, ok := f["labels"]; ok {
		items, err := w.list(lv)
		if err != nil {
			return err
		}
		for _, it := range items {
			if _, err := w.fields(it, "key", "value", "source"); err != nil {
				return err
			}
		}
	}
	if d, ok := f["description"]; ok {
		if _, err := w.str(d); err != nil {
			return err
		}
	}
	noDefaultDeny := map[Direction]bool{}
	if dd, ok := f["enableDefaultDeny"]; ok {
		ddf, err := w.fields(dd, "ingress", "egress")
		if err != nil {
			return err
		}
		for name, dir := range map[string]Direction{"ingress": Ingress, "egress": Egress} {
			if bv, ok := ddf[name]; ok {
				on, err := w.boolean(bv)
				if err != nil {
					return err
				}
				noDefaultDeny[dir] = !on
			}
		}
	}
	for _, sec := range []struct {
		name string
		dir  Direction
		deny bool
	}{{"ingress", Ingress, false}, {"ingressDeny", Ingress, true}, {"egress", Egress, false}, {"egressDeny", Egress, true}} {
		items, err := w.list(f[sec.name])
		if err != nil {
			return err
		}
		for i, it := range items {
			r, err := w.ciliumRule(it, sec.dir, sec.deny, p)
			if err != nil {
				return err
			}
			r.Selector = sel
			r.NoDefaultDeny = noDefaultDeny[sec.dir]
			r.Origin = origin(p, fmt.Sprintf("%s%s[%d]", prefix, sec.name, i))
			if r.HasL7 {
				p.Warnings = append(p.Warnings, r.Origin+": "+L7Warning)
			}
			p.Rules = append(p.Rules, r)
		}
	}
	return nil
}

func (w *walker) ciliumRule(v val, dir Direction, deny bool, p *Policy) (Rule, error) {
	from := "from"
	if dir == Egress {
		from = "to"
	}
	peerFields := []string{from + "Endpoints", from + "Entities", from + "CIDR", from + "CIDRSet"}
	allowed := append(slices.Clone(peerFields), "toPorts", "icmps", "authentication", from+"Requires", from+"Groups", from+"Nodes")
	if dir == Egress {
		allowed = append(allowed, "toServices", "toFQDNs")
	}
	f, err := w.fields(v, allowed...)
	if err != nil {
		return Rule{}, err
	}
	r := Rule{Direction: dir, Deny: deny}
	for name, why := range unsupported {
		if fv, ok := f[name]; ok {
			return Rule{}, w.errf(fv, "not supported yet: %s", why)
		}
	}
	if av, ok := f["authentication"]; ok {
		af, err := w.fields(av, "mode")
		if err != nil {
			return Rule{}, err
		}
		mode, err := w.str(af["mode"])
		if err != nil {
			return Rule{}, err
		}
		if mode != "disabled" {
			return Rule{}, w.errf(val{av.n, av.field("mode")}, "%q: mutual authentication is not supported yet: remove authentication or set mode: disabled", mode)
		}
	}
	if ev, ok := f[from+"Endpoints"]; ok {
		items, err := w.list(ev)
		if err != nil {
			return Rule{}, err
		}
		for _, it := range items {
			s, err := w.selector(it, nil)
			if err != nil {
				return Rule{}, err
			}
			r.Peers = append(r.Peers, Peer{Kind: PeerSelector, Selector: namespaced(s, p.Namespace)})
		}
	}
	if ev, ok := f[from+"Entities"]; ok {
		names, items, err := w.strs(ev)
		if err != nil {
			return Rule{}, err
		}
		for i, n := range names {
			if !slices.Contains(Entities, n) {
				return Rule{}, w.errf(items[i], "%q is not an entity: use one of %s", n, strings.Join(Entities, ", "))
			}
			r.Peers = append(r.Peers, Peer{Kind: PeerEntity, Entity: n})
		}
	}
	if cv, ok := f[from+"CIDR"]; ok {
		items, err := w.list(cv)
		if err != nil {
			return Rule{}, err
		}
		for _, it := range items {
			peer, err := w.cidrPeer(it, nil)
			if err != nil {
				return Rule{}, err
			}
			r.Peers = append(r.Peers, peer)
		}
	}
	if cv, ok := f[from+"CIDRSet"]; ok {
		items, err := w.list(cv)
		if err != nil {
			return Rule{}, err
		}
		for _, it := range items {
			cf, err := w.fields(it, "cidr", "except", "cidrGroupRef", "cidrGroupSelector")
			if err != nil {
				return Rule{}, err
			}
			for _, g := range []string{"cidrGroupRef", "cidrGroupSelector"} {
				if gv, ok := cf[g]; ok {
					return Rule{}, w.errf(gv, "CIDR groups are not supported yet: write the cidr and except here")
				}
			}
			c, ok := cf["cidr"]
			if !ok {
				return Rule{}, w.errf(val{it.n, it.field("cidr")}, "missing: give the CIDR, e.g. 10.0.0.0/8")
			}
			var except *val
			if e, ok := cf["except"]; ok {
				except = &e
			}
			peer, err := w.cidrPeer(c, except)
			if err != nil {
				return Rule{}, err
			}
			r.Peers = append(r.Peers, peer)
		}
	}
	if tv, ok := f["toPorts"]; ok {
		if err := w.ciliumPorts(tv, deny, &r); err != nil {
			return Rule{}, err
		}
	}
	if iv, ok := f["icmps"]; ok {
		if err := w.icmps(iv, &r); err != nil {
			return Rule{}, err
		}
	}
	// A rule that names ports but no peer covers those ports from (or to)
	// every peer, as in Cilium. A rule naming neither covers nothing.
	if len(r.Peers) == 0 && (len(r.Ports) > 0 || len(r.ICMP) > 0) {
		r.Peers = []Peer{{Kind: PeerAll}}
	}
	return r, nil
}

// l7Kinds are the toPorts fields that need an L7 proxy. They narrow the
// rule, so they are kept and warned about, never dropped silently.
var l7Kinds = []string{"rules", "terminatingTLS", "originatingTLS", "serverNames", "listener"}

func (w *walker) ciliumPorts(v val, deny bool, r *Rule) error {
	items, err := w.list(v)
	if err != nil {
		return err
	}
	for _, it := range items {
		f, err := w.fields(it, append([]string{"ports"}, l7Kinds...)...)
		if err != nil {
			return err
		}
		if deny {
			for _, k := range l7Kinds {
				if lv, ok := f[k]; ok {
					return w.errf(lv, "deny rules cannot carry L7 rules: move the L7 part to an allow rule")
				}
			}
		}
		ports, err := w.list(f["ports"])
		if err != nil {
			return err
		}
		if len(ports) == 0 {
			return w.errf(val{it.n, it.field("ports")}, "missing: list the ports, e.g. - port: \"80\" protocol: TCP")
		}
		for _, pv := range ports {
			pf, err := w.fields(pv, "port", "endPort", "protocol")
			if err != nil {
				return err
			}
			pr, err := w.portRange(pv, pf, "ANY")
			if err != nil {
				return err
			}
			r.Ports = append(r.Ports, pr)
		}
		for _, k := range l7Kinds {
			lv, ok := f[k]
			if !ok {
				continue
			}
			if k == "rules" {
				rf, err := w.fields(lv, "http", "kafka", "dns", "l7proto", "l7")
				if err != nil {
					return err
				}
				for _, rk := range []string{"http", "kafka", "dns", "l7proto", "l7"} {
					if sv, ok := rf[rk]; ok {
						if err := w.addL7(r, rk, sv); err != nil {
							return err
						}
					}
				}
				continue
			}
			if err := w.addL7(r, k, lv); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *walker) addL7(r *Rule, kind string, v val) error {
	var spec any
	if err := v.n.Decode(&spec); err != nil {
		return w.errf(v, "cannot read L7 section: %v", err)
	}
	r.HasL7 = true
	r.L7 = append(r.L7, L7Rule{Kind: kind, Spec: spec})
	return nil
}

// icmpNames are the type names Cilium accepts besides numbers.
var icmpNames = map[uint8]map[string]uint8{
	4: {"EchoReply": 0, "DestinationUnreachable": 3, "Redirect": 5, "EchoRequest": 8,
		"RouterAdvertisement": 9, "RouterSelection": 10, "TimeExceeded": 11, "ParameterProblem": 12,
		"Timestamp": 13, "TimestampReply": 14},
	6: {"DestinationUnreachable": 1, "PacketTooBig": 2, "TimeExceeded": 3, "ParameterProblem": 4,
		"EchoRequest": 128, "EchoReply": 129, "MulticastListenerQuery": 130, "MulticastListenerReport": 131,
		"MulticastListenerDone": 132, "RouterSolicitation": 133, "RouterAdvertisement": 134,
		"NeighborSolicitation": 135, "NeighborAdvertisement": 136, "RedirectMessage": 137},
}

func (w *walker) icmps(v val, r *Rule) error {
	items, err := w.list(v)
	if err != nil {
		return err
	}
	for _, it := range items {
		f, err := w.fields(it, "fields")
		if err != nil {
			return err
		}
		fields, err := w.list(f["fields"])
		if err != nil {
			return err
		}
		if len(fields) == 0 {
			return w.errf(val{it.n, it.field("fields")}, "missing: list ICMP types, e.g. - type: 8")
		}
		for _, fv := range fields {
			ff, err := w.fields(fv, "type", "family")
			if err != nil {
				return err
			}
			fam := uint8(4)
			if famV, ok := ff["family"]; ok {
				s, err := w.str(famV)
				if err != nil {
					return err
				}
				switch s {
				case "IPv4":
				case "IPv6":
					fam = 6
				default:
					return w.errf(famV, "%q is not a family: use IPv4 or IPv6", s)
				}
			}
			tv, ok := ff["type"]
			if !ok {
				return w.errf(val{fv.n, fv.field("type")}, "missing: give the ICMP type, e.g. 8 (echo request)")
			}
			s, err := w.str(tv)
			if err != nil {
				return err
			}
			t, err := strconv.ParseUint(s, 10, 8)
			if err != nil {
				named, ok := icmpNames[fam][s]
				if !ok {
					return w.errf(tv, "%q is not an ICMP type for IPv%d: use 0-255 or a name such as EchoRequest", s, fam)
				}
				t = uint64(named)
			}
			r.ICMP = append(r.ICMP, ICMPType{Family: fam, Type: uint8(t)})
		}
	}
	return nil
}
