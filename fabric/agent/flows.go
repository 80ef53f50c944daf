package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fabric-net/fabric/bpf"
	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/identity"
)

// flowMemory is how many recent flows a node keeps for `fabric observe`
// without --follow.
const flowMemory = 4096

// flowHub keeps the node's recent flows and hands new ones to followers.
// A follower that falls behind loses flows rather than slowing the reader.
type flowHub struct {
	mu   sync.Mutex
	ring []api.Flow
	next int
	full bool
	subs map[chan api.Flow]struct{}
}

func newFlowHub() *flowHub {
	return &flowHub{ring: make([]api.Flow, flowMemory), subs: map[chan api.Flow]struct{}{}}
}

func (h *flowHub) publish(f api.Flow) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ring[h.next] = f
	h.next = (h.next + 1) % len(h.ring)
	h.full = h.full || h.next == 0
	for ch := range h.subs {
		select {
		case ch <- f:
		default:
		}
	}
}

// snapshot returns the remembered flows, oldest first, and, when follow is
// set, a channel of the flows after them (cancel releases it).
func (h *flowHub) snapshot(follow bool) ([]api.Flow, chan api.Flow, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var past []api.Flow
	if h.full {
		past = append(past, h.ring[h.next:]...)
	}
	past = append(past, h.ring[:h.next]...)
	if !follow {
		return past, nil, func() {}
	}
	ch := make(chan api.Flow, 1024)
	h.subs[ch] = struct{}{}
	return past, ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

// flowSource is what the flow loop needs from the datapath.
type flowSource interface {
	Flows(ctx context.Context) (<-chan bpf.Flow, error)
}

// flowLoop reads the datapath's flow events, names their identities and
// endpoints, and publishes them.
func (r *dpReconciler) flowLoop(ctx context.Context) {
	src, ok := r.dp.(flowSource)
	if !ok {
		return
	}
	for ctx.Err() == nil {
		flows, err := src.Flows(ctx)
		if err != nil {
			r.a.log.Warn("read datapath flows", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		var names flowNames
		for f := range flows {
			r.flows.publish(r.describe(f, &names))
		}
	}
}

var protoNames = map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}

// describe turns a datapath event into what operators read: labels for
// identities, endpoint IDs for this node's interfaces.
func (r *dpReconciler) describe(f bpf.Flow, names *flowNames) api.Flow {
	names.refresh(r)
	idents, byIfindex, byIP := names.idents, names.byIfindex, names.byIP
	peer := func(ap netip.AddrPort, id uint32) api.FlowPeer {
		p := api.FlowPeer{IP: ap.Addr().String(), Port: ap.Port(), Identity: id, Endpoint: byIP[ap.Addr()]}
		if l, ok := idents[id]; ok {
			p.Labels = l.String()
		} else if name, ok := reservedName(id); ok {
			p.Labels = "reserved:" + name
		}
		return p
	}
	out := api.Flow{Time: f.Time, Node: r.a.cfg.NodeName, Event: string(f.Event), Verdict: "forwarded",
		Reason: f.Reason, Direction: f.Direction.String(), Proto: protoNames[f.Proto],
		Source: peer(f.Src, f.SrcIdentity), Dest: peer(f.Dst, f.DstIdentity)}
	if out.Proto == "" {
		out.Proto = strconv.Itoa(int(f.Proto))
	}
	if f.Service.IsValid() {
		out.Service = f.Service.String()
	}
	if f.Dropped {
		out.Verdict = "dropped"
	}
	// The endpoint the event happened at is known by its interface even
	// when its address is not the one in the packet (spoofing drops).
	if ep := byIfindex[f.IfIndex]; ep != "" {
		if f.Direction == bpf.Egress && out.Source.Endpoint == "" {
			out.Source.Endpoint = ep
		} else if f.Direction == bpf.Ingress && out.Dest.Endpoint == "" {
			out.Dest.Endpoint = ep
		}
	}
	return out
}

func reservedName(id uint32) (string, bool) {
	for name, rid := range identity.Reserved() {
		if uint32(rid) == id {
			return name, true
		}
	}
	return "", false
}

// flowNames are the lookups describe needs, rebuilt only when the
// identities or endpoints changed, not for every event: a burst of drops
// must not parse every identity and endpoint once per packet.
type flowNames struct {
	idRev, epRev int64
	built        bool
	idents       identitySet
	byIfindex    map[int]string
	byIP         map[netip.Addr]string
}

func (n *flowNames) refresh(r *dpReconciler) {
	idRev, epRev := r.idents.Revision(), r.eps.Revision()
	if n.built && idRev == n.idRev && epRev == n.epRev {
		return
	}
	ids, _ := r.idents.Snapshot()
	n.idents = identitiesFrom(ids)
	n.byIfindex, n.byIP = r.localEndpoints()
	n.idRev, n.epRev, n.built = idRev, epRev, true
}

// localEndpoints maps this node's attached endpoints by host ifindex and IP.
func (r *dpReconciler) localEndpoints() (map[int]string, map[netip.Addr]string) {
	eps, _ := r.eps.Snapshot()
	byIfindex, byIP := map[int]string{}, map[netip.Addr]string{}
	prefix := endpointPrefix(r.a.cfg.NodeName)
	for key, raw := range eps {
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		var ep api.Endpoint
		if json.Unmarshal(raw, &ep) != nil {
			continue
		}
		if ep.Attachment != nil {
			byIfindex[ep.Attachment.HostIfIndex] = ep.ID
		}
		for _, s := range ep.IPs {
			if ip, err := netip.ParseAddr(s); err == nil {
				byIP[ip] = ep.ID
			}
		}
	}
	return byIfindex, byIP
}

// flowMatcher is a parsed api.FlowFilter.
type flowMatcher struct {
	f      api.FlowFilter
	labels identity.Labels
}

func newFlowMatcher(q map[string][]string) (flowMatcher, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	m := flowMatcher{f: api.FlowFilter{Labels: get("labels"), IP: get("ip"), Proto: strings.ToLower(get("proto")), Verdict: get("verdict")}}
	if s := get("identity"); s != "" {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return m, badRequest("identity: %q is not a number", s)
		}
		m.f.Identity = uint32(n)
	}
	if s := get("port"); s != "" {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return m, badRequest("port: %q is not a port: use 1-65535", s)
		}
		m.f.Port = uint16(n)
	}
	if m.f.IP != "" {
		if _, err := netip.ParseAddr(m.f.IP); err != nil {
			return m, badRequest("ip: %q is not an IP address", m.f.IP)
		}
	}
	switch m.f.Verdict {
	case "", "forwarded", "dropped":
	default:
		return m, badRequest("verdict: %q is unknown: use forwarded or dropped", m.f.Verdict)
	}
	if m.f.Labels != "" {
		l, err := identity.ParseLabels(m.f.Labels)
		if err != nil {
			return m, badRequest("labels: %v", err)
		}
		m.labels = l
	}
	return m, nil
}

func (m flowMatcher) match(f api.Flow) bool {
	if m.f.Verdict != "" && f.Verdict != m.f.Verdict || m.f.Proto != "" && f.Proto != m.f.Proto {
		return false
	}
	end := func(p api.FlowPeer) bool {
		if m.f.IP != "" && p.IP != m.f.IP || m.f.Port != 0 && p.Port != m.f.Port || m.f.Identity != 0 && p.Identity != m.f.Identity {
			return false
		}
		if m.labels.Len() > 0 {
			have, err := identity.ParseLabels(p.Labels)
			if err != nil {
				return false
			}
			hm := have.Map()
			for k, v := range m.labels.Map() {
				if hm[k] != v {
					return false
				}
			}
		}
		return true
	}
	return end(f.Source) || end(f.Dest)
}

// serveFlows streams matching flows as newline-delimited JSON.
func (s *apiServer) serveFlows(w http.ResponseWriter, r *http.Request) {
	writeErr := func(code int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(api.Error{Error: msg})
	}
	if s.a.dp == nil {
		writeErr(http.StatusNotFound, errNoDatapath.Error())
		return
	}
	m, err := newFlowMatcher(r.URL.Query())
	if err != nil {
		writeErr(http.StatusBadRequest, err.Error())
		return
	}
	follow := r.URL.Query().Get("follow") != ""
	past, live, cancel := s.a.dp.flows.snapshot(follow)
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	for _, f := range past {
		if m.match(f) {
			_ = enc.Encode(f)
		}
	}
	if flusher != nil {
		flusher.Flush()
	}
	if !follow {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case f := <-live:
			if !m.match(f) {
				continue
			}
			if err := enc.Encode(f); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}
