package agent

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"

	"time"

	"github.com/fabric-net/fabric/bpf"
	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/store"
	"github.com/fabric-net/fabric/gossip"
)

// httpError carries the status code an API error maps to.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) error {
	return &httpError{http.StatusConflict, fmt.Sprintf(format, args...)}
}

// apiServer serves the local API on a unix socket, readable by root only.
type apiServer struct {
	a   *Agent
	srv *http.Server
	ln  net.Listener
	log *slog.Logger
}

func newAPIServer(a *Agent, socket string) (*apiServer, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	// A socket left by a killed agent would make Listen fail; nothing else
	// may own this path, so removing it is safe.
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	s := &apiServer{a: a, ln: ln, log: a.log.With("subsys", "api")}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.handle(s.status))
	mux.HandleFunc("GET /v1/endpoints", s.handle(s.listEndpoints))
	mux.HandleFunc("POST /v1/endpoints", s.handle(s.createEndpoint))
	mux.HandleFunc("GET /v1/endpoints/{id}", s.handle(s.getEndpoint))
	mux.HandleFunc("DELETE /v1/endpoints/{id}", s.handle(s.deleteEndpoint))
	mux.HandleFunc("PUT /v1/endpoints/{id}/attachment", s.handle(s.attachEndpoint))
	mux.HandleFunc("GET /v1/datapath/ipcache", s.handle(s.datapathIPCache))
	mux.HandleFunc("GET /v1/datapath/identities", s.handle(s.datapathSeen))
	mux.HandleFunc("GET /v1/datapath/drops", s.handle(s.datapathDrops))
	mux.HandleFunc("GET /v1/datapath/services", s.handle(s.datapathServices))
	// Streams: no 15s handler timeout.
	mux.HandleFunc("GET /v1/flows", s.serveFlows)
	mux.HandleFunc("GET /v1/policies", s.handle(s.listPolicies))
	mux.HandleFunc("POST /v1/policies", s.handle(s.applyPolicies))
	mux.HandleFunc("DELETE /v1/policies/{kind}/{ns}/{name}", s.handle(s.deletePolicy))
	mux.HandleFunc("POST /v1/policy/trace", s.handle(s.tracePolicy))
	mux.HandleFunc("GET /v1/services", s.handle(s.listServices))
	mux.HandleFunc("POST /v1/services", s.handle(s.applyServices))
	mux.HandleFunc("DELETE /v1/services/{ns}/{name}", s.handle(s.deleteService))
	mux.HandleFunc("GET /v1/lbipam/pools", s.handle(s.listLBPools))
	mux.HandleFunc("GET /v1/l2/policies", s.handle(s.listL2Policies))
	mux.HandleFunc("POST /v1/l2/policies", s.handle(s.applyL2Policies))
	mux.HandleFunc("DELETE /v1/l2/policies/{name}", s.handle(s.deleteL2Policy))
	mux.HandleFunc("GET /v1/l2/status", s.handle(s.l2Status))
	mux.HandleFunc("GET /v1/bgp", s.handle(s.bgpStatus))
	mux.HandleFunc("POST /v1/lbipam/pools", s.handle(s.applyLBPools))
	mux.HandleFunc("DELETE /v1/lbipam/pools/{name}", s.handle(s.deleteLBPool))
	mux.HandleFunc("GET /v1/kv", s.handle(s.getKV))
	mux.HandleFunc("POST /v1/kv", s.handle(s.putKV))
	mux.HandleFunc("GET /v1/gossip/keys", s.handle(s.keyring))
	mux.HandleFunc("POST /v1/gossip/keys", s.handle(s.changeKeyring))
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("local API stopped", "err", err)
		}
	}()
	return s, nil
}

// Close stops serving; it may be called more than once.
func (s *apiServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	_ = os.Remove(s.ln.Addr().String())
}

type handlerFunc func(r *http.Request) (any, error)

func (s *apiServer) handle(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		out, err := h(r.WithContext(ctx))
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			code := http.StatusInternalServerError
			var he *httpError
			switch {
			case errors.As(err, &he):
				code = he.code
			case errors.Is(err, store.ErrNoLeader), errors.Is(err, store.ErrNoQuorum), errors.Is(err, store.ErrNoServers), errors.Is(err, store.ErrNoAnswer):
				code = http.StatusServiceUnavailable
			}
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(api.Error{Error: err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(out)
	}
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("request body: %v", err)
	}
	return nil
}

func (s *apiServer) createEndpoint(r *http.Request) (any, error) {
	var req api.EndpointRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return s.a.createEndpoint(r.Context(), req)
}

func (s *apiServer) getEndpoint(r *http.Request) (any, error) {
	return s.a.getEndpoint(r.Context(), r.PathValue("id"))
}

func (s *apiServer) attachEndpoint(r *http.Request) (any, error) {
	var att api.Attachment
	if err := decode(r, &att); err != nil {
		return nil, err
	}
	return s.a.attachEndpoint(r.Context(), r.PathValue("id"), att)
}

func (s *apiServer) deleteEndpoint(r *http.Request) (any, error) {
	return struct{}{}, s.a.deleteEndpoint(r.Context(), r.PathValue("id"))
}

func (s *apiServer) listEndpoints(r *http.Request) (any, error) {
	return s.a.listEndpoints(r.Context(), r.URL.Query().Get("all") != "")
}

func (s *apiServer) listPolicies(r *http.Request) (any, error) { return s.a.listPolicies(r.Context()) }

func (s *apiServer) applyPolicies(r *http.Request) (any, error) {
	var yaml string
	if err := decode(r, &yaml); err != nil {
		return nil, err
	}
	return s.a.applyPolicies(r.Context(), []byte(yaml))
}

func (s *apiServer) deletePolicy(r *http.Request) (any, error) {
	ns := r.PathValue("ns")
	if ns == "_" {
		ns = ""
	}
	return struct{}{}, s.a.deletePolicy(r.Context(), r.PathValue("kind"), ns, r.PathValue("name"))
}

func (s *apiServer) listServices(r *http.Request) (any, error) { return s.a.listServices(r.Context()) }

func (s *apiServer) applyServices(r *http.Request) (any, error) {
	var yaml string
	if err := decode(r, &yaml); err != nil {
		return nil, err
	}
	return s.a.applyServices(r.Context(), []byte(yaml))
}

func (s *apiServer) deleteService(r *http.Request) (any, error) {
	return struct{}{}, s.a.deleteService(r.Context(), r.PathValue("ns"), r.PathValue("name"))
}

func (s *apiServer) listLBPools(r *http.Request) (any, error) { return s.a.listLBPools(r.Context()) }

func (s *apiServer) applyLBPools(r *http.Request) (any, error) {
	var yaml string
	if err := decode(r, &yaml); err != nil {
		return nil, err
	}
	return s.a.applyLBPools(r.Context(), []byte(yaml))
}

func (s *apiServer) deleteLBPool(r *http.Request) (any, error) {
	return struct{}{}, s.a.deleteLBPool(r.Context(), r.PathValue("name"))
}

func (s *apiServer) listL2Policies(r *http.Request) (any, error) {
	return s.a.listL2Policies(r.Context())
}

func (s *apiServer) applyL2Policies(r *http.Request) (any, error) {
	var yaml string
	if err := decode(r, &yaml); err != nil {
		return nil, err
	}
	return s.a.applyL2Policies(r.Context(), []byte(yaml))
}

func (s *apiServer) deleteL2Policy(r *http.Request) (any, error) {
	return struct{}{}, s.a.deleteL2Policy(r.Context(), r.PathValue("name"))
}

func (s *apiServer) bgpStatus(r *http.Request) (any, error) {
	if s.a.bgp == nil {
		return api.BGPStatus{}, nil
	}
	return s.a.bgp.status(), nil
}

func (s *apiServer) l2Status(r *http.Request) (any, error) {
	if s.a.l2 == nil {
		return api.L2Status{}, nil
	}
	return s.a.l2.status(), nil
}

func (s *apiServer) tracePolicy(r *http.Request) (any, error) {
	var req api.TraceRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return s.a.tracePolicy(r.Context(), req)
}

var errNoDatapath = &httpError{http.StatusNotFound, "this node runs no datapath (datapathMode none)"}

func (s *apiServer) datapathIPCache(*http.Request) (any, error) {
	if s.a.dp == nil {
		return nil, errNoDatapath
	}
	return s.a.dp.ipcache()
}

func (s *apiServer) datapathDrops(*http.Request) (any, error) {
	if s.a.dp == nil {
		return nil, errNoDatapath
	}
	return s.a.dp.dp.Drops()
}

func (s *apiServer) datapathServices(*http.Request) (any, error) {
	if s.a.dp == nil {
		return nil, errNoDatapath
	}
	fes, err := s.a.dp.dp.Services()
	if err != nil {
		return nil, err
	}
	out := make([]api.DatapathService, 0, len(fes))
	for _, f := range fes {
		ds := api.DatapathService{Frontend: f.Frontend.String(), Proto: protoName(f.Proto), External: f.External, TableSize: len(f.Maglev)}
		if f.AffinityTimeout > 0 {
			ds.Affinity = "ClientIP " + f.AffinityTimeout.String()
		}
		for _, b := range f.Backends {
			ds.Backends = append(ds.Backends, b.Addr.String())
		}
		out = append(out, ds)
	}
	return out, nil
}

func protoName(p uint8) string {
	switch p {
	case bpf.ProtoTCP:
		return "TCP"
	case bpf.ProtoUDP:
		return "UDP"
	}
	return fmt.Sprint(p)
}

func (s *apiServer) datapathSeen(*http.Request) (any, error) {
	if s.a.dp == nil {
		return nil, errNoDatapath
	}
	return s.a.dp.seen()
}

func (s *apiServer) getKV(r *http.Request) (any, error) {
	q := r.URL.Query()
	if q.Has("prefix") {
		kvs, _, err := s.a.store.List(r.Context(), q.Get("prefix"))
		if err != nil {
			return nil, err
		}
		out := make([]api.KV, 0, len(kvs))
		for _, kv := range kvs {
			out = append(out, api.KV{Key: kv.Key, Value: string(kv.Value), ModRevision: kv.ModRevision})
		}
		return out, nil
	}
	key := q.Get("key")
	if key == "" {
		return nil, badRequest("key: missing: give ?key=K or ?prefix=P")
	}
	kv, ok, err := s.a.store.Get(r.Context(), key)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &httpError{http.StatusNotFound, fmt.Sprintf("key %q not found", key)}
	}
	return api.KV{Key: kv.Key, Value: string(kv.Value), ModRevision: kv.ModRevision}, nil
}

func (s *apiServer) putKV(r *http.Request) (any, error) {
	var req api.PutRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.Key == "" {
		return nil, badRequest("key: empty: give the key to write")
	}
	t := store.Txn{Ops: []store.Op{{Type: store.OpPut, Key: req.Key, Value: []byte(req.Value)}}}
	if req.IfModRevision != nil {
		t.Compares = []store.Compare{{Key: req.Key, ModRevision: *req.IfModRevision}}
	}
	res, err := s.a.store.Txn(r.Context(), t)
	if err != nil {
		return nil, err
	}
	return api.PutResult{Succeeded: res.Succeeded, Revision: res.Revision}, nil
}

// keyID names a gossip key without revealing it.
func keyID(k []byte) string {
	sum := sha256.Sum256(k)
	return hex.EncodeToString(sum[:4])
}

func (s *apiServer) keyring(*http.Request) (any, error) {
	primary, all := s.a.pool.Keys()
	kr := api.Keyring{Primary: keyID(primary)}
	for _, k := range all {
		kr.Keys = append(kr.Keys, keyID(k))
	}
	sort.Strings(kr.Keys)
	return kr, nil
}

func (s *apiServer) changeKeyring(r *http.Request) (any, error) {
	var req api.KeyringRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	k, err := gossip.ParseKey(req.Key)
	if err != nil {
		return nil, badRequest("key: %v", err)
	}
	switch req.Op {
	case "install":
		err = s.a.pool.InstallKey(k)
	case "use":
		err = s.a.pool.UseKey(k)
	case "remove":
		err = s.a.pool.RemoveKey(k)
	default:
		return nil, badRequest("op: %q is unknown: use install, use or remove", req.Op)
	}
	if err != nil {
		return nil, badRequest("%s key %s: %v", req.Op, keyID(k), err)
	}
	s.log.Info("gossip keyring changed", "op", req.Op, "key_id", keyID(k))
	return s.keyring(r)
}

func (s *apiServer) status(r *http.Request) (any, error) {
	a := s.a
	st := api.Status{Health: api.HealthStatus{OK: true, Checks: map[string]string{}}}
	check := func(name, problem string) {
		if problem == "" {
			st.Health.Checks[name] = "ok"
			return
		}
		st.Health.Checks[name] = problem
		st.Health.OK = false
	}

	local := a.pool.Local()
	primary, _ := a.pool.Keys()
	st.Node = api.NodeInfo{Name: a.cfg.NodeName, Cluster: a.cfg.ClusterName, ClusterID: a.cfg.ClusterID,
		Underlay: a.cfg.Underlay, Roles: local.Meta.Roles, Version: Version, StartedAt: a.started,
		GossipAddr: local.Addr.String(), GossipKeyID: keyID(primary)}
	if cidrs, err := a.podCIDRs(); err == nil {
		for _, c := range cidrs {
			st.Node.PodCIDRs = append(st.Node.PodCIDRs, c.String())
		}
		check("ipam", "")
	} else {
		check("ipam", err.Error())
	}

	alive, members := 0, a.pool.Members()
	for _, m := range members {
		am := api.Member{Name: m.Meta.Name, Addr: m.Addr.String(), State: m.State.String(), Since: m.Since,
			Roles: m.Meta.Roles, Health: m.Meta.Health}
		for _, c := range m.Meta.PodCIDRs {
			am.PodCIDRs = append(am.PodCIDRs, c.String())
		}
		if m.State == gossip.StateAlive {
			alive++
		}
		st.Members = append(st.Members, am)
	}
	if alive == 0 {
		check("gossip", "no alive member, not even this node")
	} else {
		check("gossip", "")
	}

	ss := a.store.Status()
	st.Store = api.StoreStatus{Role: ss.Role, Leader: ss.Leader, Term: ss.Term, CommitIndex: ss.CommitIndex,
		AppliedIndex: ss.AppliedIndex, Revision: ss.Revision, LastContact: ss.LastContact}
	for _, sv := range ss.Servers {
		st.Store.Servers = append(st.Store.Servers, api.StoreServer{ID: sv.ID, Addr: sv.Addr, Voter: sv.Voter, Alive: sv.Alive})
	}
	if ss.Leader == "" {
		check("store", "no store leader known: the servers are electing or this node cannot reach a majority of them")
	} else {
		check("store", "")
	}

	if a.dp != nil {
		st.Datapath = a.dp.status()
		check("datapath", st.Datapath.Error)
	} else {
		st.Datapath = api.DatapathStatus{Mode: "none"}
	}
	if a.bgp != nil {
		b := a.bgp.status()
		st.BGP = &b
		why := b.Error
		if why == "" && b.Established < len(b.Peers) {
			why = fmt.Sprintf("%d of %d BGP sessions established", b.Established, len(b.Peers))
		}
		check("bgp", why)
	}

	// The store reads are best effort: status must answer even when the
	// store cannot, and say why.
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if kvs, _, err := a.store.List(ctx, "nodes/"); err == nil {
		for _, kv := range kvs {
			var rec nodeRecord
			if json.Unmarshal(kv.Value, &rec) == nil {
				st.NodeCIDRs = append(st.NodeCIDRs, api.NodeCIDRs{Node: rec.Name, CIDRs: rec.PodCIDRs})
			}
		}
		if n, err := a.ids.Count(ctx); err == nil {
			st.Identities = n
		}
		if eps, _, err := a.store.List(ctx, "endpoints/"); err == nil {
			st.Endpoints = len(eps)
		}
	} else {
		st.Store.Error = err.Error()
	}
	return st, nil
}

// NewKey returns a fresh random gossip key, base64-encoded.
func NewKey() (string, error) {
	k := make([]byte, 32)
	if _, err := io.ReadFull(crand.Reader, k); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(k), nil
}
