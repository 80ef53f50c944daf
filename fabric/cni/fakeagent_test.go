package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/identity"
)

// fakeAgent serves the few agent API calls the plugin makes, on a unix
// socket, so the plugin's tests need no cluster. It is for these tests
// only: the real agent is tested with the real plugin in the lab.
type fakeAgent struct {
	socket string

	mu          sync.Mutex
	eps         map[string]*api.Endpoint
	next        int
	creates     int
	failAttach  bool   // AttachEndpoint answers 500
	ipamProblem string // Status reports this as the "ipam" check
}

const (
	fakeMTU = 1450
	fakeGW4 = "10.200.0.1"
	fakeGW6 = "fd00:200::1"
)

func newFakeAgent(t testing.TB) *fakeAgent {
	t.Helper()
	// os.MkdirTemp, not t.TempDir: a unix socket path must stay under
	// 108 bytes and test names make t.TempDir paths long.
	dir, err := os.MkdirTemp("", "fcni-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a := &fakeAgent{socket: filepath.Join(dir, "agent.sock"), eps: map[string]*api.Endpoint{}}
	ln, err := net.Listen("unix", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: a.mux()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a
}

func (a *fakeAgent) mux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("POST /v1/endpoints", a.handle(func(r *http.Request) (any, int, error) {
		var req api.EndpointRequest
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return nil, http.StatusBadRequest, err
		}
		if !endpointIDRE.MatchString(req.ID) {
			return nil, http.StatusBadRequest, fmt.Errorf("id: %q is not a valid endpoint ID", req.ID)
		}
		ls, err := identity.ParseLabels(req.Labels)
		if err != nil || ls.Len() == 0 {
			return nil, http.StatusBadRequest, fmt.Errorf("labels: %q: %v", req.Labels, err)
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		a.creates++
		if ep, ok := a.eps[req.ID]; ok {
			return ep, 0, nil
		}
		a.next++
		ep := &api.Endpoint{
			ID: req.ID, Node: "node-1", Identity: 4242, Labels: ls.String(),
			IPs:         []string{fmt.Sprintf("10.200.0.%d", a.next+1), fmt.Sprintf("fd00:200::%x", a.next+1)},
			Gateways:    []string{fakeGW4, fakeGW6},
			MTU:         fakeMTU,
			ContainerID: req.ContainerID, Netns: req.Netns, IfName: req.IfName,
		}
		a.eps[req.ID] = ep
		return ep, 0, nil
	}))
	m.HandleFunc("PUT /v1/endpoints/{id}/attachment", a.handle(func(r *http.Request) (any, int, error) {
		var att api.Attachment
		if err := json.NewDecoder(r.Body).Decode(&att); err != nil {
			return nil, http.StatusBadRequest, err
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.failAttach {
			return nil, http.StatusInternalServerError, errors.New("datapath: program endpoint: injected failure")
		}
		ep, ok := a.eps[r.PathValue("id")]
		if !ok {
			return nil, http.StatusNotFound, fmt.Errorf("endpoint %s not found", r.PathValue("id"))
		}
		ep.Attachment = &att
		return ep, 0, nil
	}))
	m.HandleFunc("GET /v1/endpoints/{id}", a.handle(func(r *http.Request) (any, int, error) {
		a.mu.Lock()
		defer a.mu.Unlock()
		ep, ok := a.eps[r.PathValue("id")]
		if !ok {
			return nil, http.StatusNotFound, fmt.Errorf("endpoint %s not found", r.PathValue("id"))
		}
		return ep, 0, nil
	}))
	m.HandleFunc("DELETE /v1/endpoints/{id}", a.handle(func(r *http.Request) (any, int, error) {
		a.mu.Lock()
		defer a.mu.Unlock()
		delete(a.eps, r.PathValue("id"))
		return struct{}{}, 0, nil
	}))
	m.HandleFunc("GET /v1/status", a.handle(func(*http.Request) (any, int, error) {
		a.mu.Lock()
		defer a.mu.Unlock()
		st := api.Status{Health: api.HealthStatus{OK: true, Checks: map[string]string{"ipam": "ok"}}}
		st.Node.PodCIDRs = []string{"10.200.0.0/24"}
		if a.ipamProblem != "" {
			st.Health.OK, st.Health.Checks["ipam"], st.Node.PodCIDRs = false, a.ipamProblem, nil
		}
		return st, 0, nil
	}))
	return m
}

func (a *fakeAgent) handle(h func(*http.Request) (any, int, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		out, code, err := h(r)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(api.Error{Error: err.Error()})
			return
		}
		json.NewEncoder(w).Encode(out)
	}
}

func (a *fakeAgent) endpoint(id string) (api.Endpoint, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ep, ok := a.eps[id]
	if !ok {
		return api.Endpoint{}, false
	}
	return *ep, true
}

func (a *fakeAgent) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.eps)
}

func (a *fakeAgent) createCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.creates
}
