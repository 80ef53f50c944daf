package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The store RPC is HTTPS with mutual TLS (see tls.go) and JSON bodies under
// /v1/store/. Errors carry a stable code so that the caller maps them back to
// the package's sentinel errors.

const (
	rpcPrefix = "/v1/store/"
	// maxRequestBody leaves room for a maximal transaction in JSON, whose
	// base64 values are a third larger than the bytes.
	maxRequestBody = 2*MaxTxnSize + 1<<20
	// headerForwarded marks a request a server forwarded to the leader; the
	// receiver must not forward it again.
	headerForwarded = "Fabric-Store-Forwarded"
	// headerLeader names the leader the answering server knows, so clients
	// go straight to it next time.
	headerLeader = "Fabric-Store-Leader"
	// watchProgress is how often an idle watch stream carries the revision
	// it reached; clients treat three missed intervals as a dead server.
	watchProgress = 2 * time.Second
	watchIdle     = 3 * watchProgress
)

type getRequest struct {
	Key string `json:"key"`
}

type getResponse struct {
	KV    KeyValue `json:"kv"`
	Found bool     `json:"found"`
}

type listRequest struct {
	Prefix string `json:"prefix"`
}

type listResponse struct {
	KVs      []KeyValue `json:"kvs"`
	Revision int64      `json:"revision"`
}

type wireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type errorBody struct {
	Error wireError `json:"error"`
}

// watchMessage is one line of a watch stream.
type watchMessage struct {
	Events   []Event    `json:"events,omitempty"`
	Revision int64      `json:"revision"`
	Error    *wireError `json:"error,omitempty"`
}

var errorCodes = []struct {
	code   string
	status int
	err    error
}{
	{"compacted", http.StatusGone, ErrCompacted},
	{"no_leader", http.StatusServiceUnavailable, ErrNoLeader},
	{"no_quorum", http.StatusServiceUnavailable, ErrNoQuorum},
	{"no_servers", http.StatusServiceUnavailable, ErrNoServers},
	{"closed", http.StatusServiceUnavailable, ErrClosed},
	{"invalid", http.StatusBadRequest, ErrInvalidTxn},
}

func toWire(err error) (wireError, int) {
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return wireError{Code: c.code, Message: err.Error()}, c.status
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return wireError{Code: "timeout", Message: err.Error()}, http.StatusGatewayTimeout
	}
	return wireError{Code: "internal", Message: err.Error()}, http.StatusInternalServerError
}

// remoteError is an error a server answered with. It unwraps to the
// sentinel its code names, so errors.Is works across the RPC.
type remoteError struct {
	addr     string
	code     string
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return fmt.Sprintf("store server %s: %s", e.addr, e.msg) }
func (e *remoteError) Unwrap() error { return e.sentinel }

func fromWire(addr string, w wireError) error {
	e := &remoteError{addr: addr, code: w.Code, msg: w.Message}
	for _, c := range errorCodes {
		if c.code == w.Code {
			e.sentinel = c.err
		}
	}
	return e
}

func (s *Store) rpcHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+rpcPrefix+"get", s.handleGet)
	mux.HandleFunc("POST "+rpcPrefix+"list", s.handleList)
	mux.HandleFunc("POST "+rpcPrefix+"txn", s.handleTxn)
	mux.HandleFunc("GET "+rpcPrefix+"watch", s.handleWatch)
	mux.HandleFunc("GET "+rpcPrefix+"status", s.handleStatus)
	return mux
}

func (s *Store) writeJSON(w http.ResponseWriter, status int, v any) {
	if s.raft != nil {
		if _, id := s.raft.LeaderWithID(); id != "" {
			w.Header().Set(headerLeader, string(id))
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Store) writeErr(w http.ResponseWriter, err error) {
	we, status := toWire(err)
	s.writeJSON(w, status, errorBody{Error: we})
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		return fmt.Errorf("%w: decode request body: %v", ErrInvalidTxn, err)
	}
	return nil
}

func (s *Store) handleGet(w http.ResponseWriter, r *http.Request) {
	var req getRequest
	if err := readJSON(w, r, &req); err != nil {
		s.writeErr(w, err)
		return
	}
	kv, found, err := s.get(r.Context(), req.Key, r.Header.Get(headerForwarded) != "")
	if err != nil {
		s.writeErr(w, err)
		return
	}
	s.writeJSON(w, http.StatusOK, getResponse{KV: kv, Found: found})
}

func (s *Store) handleList(w http.ResponseWriter, r *http.Request) {
	var req listRequest
	if err := readJSON(w, r, &req); err != nil {
		s.writeErr(w, err)
		return
	}
	kvs, rev, err := s.list(r.Context(), req.Prefix, r.Header.Get(headerForwarded) != "")
	if err != nil {
		s.writeErr(w, err)
		return
	}
	s.writeJSON(w, http.StatusOK, listResponse{KVs: kvs, Revision: rev})
}

func (s *Store) handleTxn(w http.ResponseWriter, r *http.Request) {
	var t Txn
	if err := readJSON(w, r, &t); err != nil {
		s.writeErr(w, err)
		return
	}
	res, err := s.txn(r.Context(), t, r.Header.Get(headerForwarded) != "")
	if err != nil {
		s.writeErr(w, err)
		return
	}
	s.writeJSON(w, http.StatusOK, res)
}

func (s *Store) handleStatus(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, s.Status())
}

// handleWatch streams newline-delimited watchMessages. The first message
// carries no events and the revision the watch starts after, so a client
// that asked for "from now" learns where to resume.
func (s *Store) handleWatch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, err := strconv.ParseInt(q.Get("from"), 10, 64)
	if err != nil || from < 0 {
		s.writeErr(w, fmt.Errorf("%w: watch: bad from revision %q", ErrInvalidTxn, q.Get("from")))
		return
	}
	if from == 0 {
		from = s.fsm.Revision() + 1
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		s.writeErr(w, errors.New("watch: response writer cannot stream"))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	if enc.Encode(watchMessage{Revision: from - 1}) != nil {
		return
	}
	flusher.Flush()
	for resp := range s.fsm.watch(r.Context(), q.Get("prefix"), from, watchProgress) {
		msg := watchMessage{Events: resp.Events, Revision: resp.Revision}
		if resp.Err != nil {
			we, _ := toWire(resp.Err)
			msg.Error = &we
		}
		if enc.Encode(msg) != nil {
			return
		}
		flusher.Flush()
	}
}

// rpcClient makes the mutual-TLS calls of followers and clients.
type rpcClient struct {
	http *http.Client
	tr   *http.Transport
}

func newRPCClient(id *tlsIdentity) *rpcClient {
	tr := &http.Transport{
		TLSClientConfig:     id.clientConfig(),
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
		TLSHandshakeTimeout: 3 * time.Second,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     time.Minute,
	}
	return &rpcClient{http: &http.Client{Transport: tr}, tr: tr}
}

func (c *rpcClient) close() { c.tr.CloseIdleConnections() }

// call posts req to method on addr and decodes the answer into resp.
func (s *Store) call(ctx context.Context, addr, method string, forwarded bool, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: encode request: %w", method, err)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+rpcPrefix+method, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s via %s: %w", method, addr, err)
	}
	hr.Header.Set("Content-Type", "application/json")
	if forwarded {
		hr.Header.Set(headerForwarded, s.cfg.NodeID)
	}
	res, err := s.rpc.http.Do(hr)
	if err != nil {
		var ne net.Error
		if ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
			return fmt.Errorf("%s via %s: %v: %w", method, addr, err, ErrNoAnswer)
		}
		return tlsHint(fmt.Errorf("%s via %s: %w", method, addr, err))
	}
	defer res.Body.Close()
	s.setLeaderHint(res.Header.Get(headerLeader))
	if res.StatusCode != http.StatusOK {
		var eb errorBody
		if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&eb); err != nil || eb.Error.Code == "" {
			return fmt.Errorf("%s via %s: http status %s", method, addr, res.Status)
		}
		return fromWire(addr, eb.Error)
	}
	if err := json.NewDecoder(res.Body).Decode(resp); err != nil {
		return fmt.Errorf("%s via %s: decode response: %w", method, addr, err)
	}
	return nil
}

// clientWatch streams a watch from the servers. When a stream breaks it
// resumes on another server from the last revision it delivered + 1, so the
// caller sees every event exactly once; only a compacted start ends it.
func (s *Store) clientWatch(ctx context.Context, prefix string, fromRevision int64) <-chan WatchResponse {
	out := make(chan WatchResponse, 1)
	go func() {
		defer close(out)
		next := fromRevision
		attempt := 0
		for ctx.Err() == nil {
			addrs := s.serverAddrs()
			if len(addrs) == 0 {
				if !sleepCtx(ctx, 4*retryPause) {
					return
				}
				continue
			}
			addr := addrs[attempt%len(addrs)]
			attempt++
			before := next
			err := s.watchStream(ctx, addr, prefix, &next, out)
			if next != before {
				attempt = 1 // made progress: the next failure starts a fresh backoff
			}
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrCompacted) || errors.Is(err, ErrInvalidTxn) {
				select {
				case out <- WatchResponse{Revision: next - 1, Err: err}:
				case <-ctx.Done():
				}
				return
			}
			if errors.Is(err, ErrAuth) {
				s.log.Warn("watch stream rejected; trying another server", "server", addr, "err", err)
			} else {
				s.log.Debug("watch stream ended; resuming", "server", addr, "from", next, "err", err)
			}
			// Back off while every server fails, up to a second per try.
			pause := min(time.Duration(attempt)*2*retryPause, time.Second)
			if !sleepCtx(ctx, pause) {
				return
			}
		}
	}()
	return out
}

// watchStream runs one watch request against addr until it fails, moving
// *next past every revision it has delivered.
func (s *Store) watchStream(ctx context.Context, addr, prefix string, next *int64, out chan<- WatchResponse) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	q := url.Values{"prefix": {prefix}, "from": {strconv.FormatInt(*next, 10)}}
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, "https://"+addr+rpcPrefix+"watch?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	res, err := s.rpc.http.Do(req)
	if err != nil {
		return tlsHint(fmt.Errorf("watch via %s: %w", addr, err))
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		var eb errorBody
		if json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&eb) != nil || eb.Error.Code == "" {
			return fmt.Errorf("watch via %s: http status %s", addr, res.Status)
		}
		return fromWire(addr, eb.Error)
	}
	// A server that vanished without closing the connection shows up as
	// silence: progress messages stop.
	idle := time.AfterFunc(watchIdle, cancel)
	defer idle.Stop()
	dec := json.NewDecoder(res.Body)
	for {
		var msg watchMessage
		if err := dec.Decode(&msg); err != nil {
			return fmt.Errorf("watch via %s: %w", addr, err)
		}
		idle.Reset(watchIdle)
		if msg.Error != nil {
			return fromWire(addr, *msg.Error)
		}
		if len(msg.Events) > 0 {
			// A slow consumer is not a dead server: no idle clock while
			// waiting for it.
			idle.Stop()
			select {
			case out <- WatchResponse{Events: msg.Events, Revision: msg.Revision}:
			case <-ctx.Done():
				return ctx.Err()
			}
			idle.Reset(watchIdle)
		}
		if msg.Revision >= *next {
			*next = msg.Revision + 1
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
