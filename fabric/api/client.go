package api

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
	"os"
	"strconv"
)

// DefaultSocket is where the agent listens unless configured otherwise;
// FABRIC_SOCKET overrides it for the CLI.
const DefaultSocket = "/run/fabric/fabric.sock"

// SocketFromEnv returns FABRIC_SOCKET or the default.
func SocketFromEnv() string {
	if s := os.Getenv("FABRIC_SOCKET"); s != "" {
		return s
	}
	return DefaultSocket
}

// Client talks to one agent over its unix socket. It is safe for concurrent
// use.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the agent listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns: 4,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Status returns the agent's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// CreateEndpoint allocates addresses and an identity for a workload; asking
// again with the same ID returns the same endpoint.
func (c *Client) CreateEndpoint(ctx context.Context, req EndpointRequest) (Endpoint, error) {
	var ep Endpoint
	return ep, c.do(ctx, http.MethodPost, "/v1/endpoints", req, &ep)
}

// AttachEndpoint tells the agent that the endpoint's interface exists, so
// the datapath starts serving it. Attaching again with the same values is
// harmless.
func (c *Client) AttachEndpoint(ctx context.Context, id string, att Attachment) (Endpoint, error) {
	var ep Endpoint
	return ep, c.do(ctx, http.MethodPut, "/v1/endpoints/"+url.PathEscape(id)+"/attachment", att, &ep)
}

// Endpoint returns one endpoint of this node; the error wraps ErrNotFound
// when the agent does not know it.
func (c *Client) Endpoint(ctx context.Context, id string) (Endpoint, error) {
	var ep Endpoint
	return ep, c.do(ctx, http.MethodGet, "/v1/endpoints/"+url.PathEscape(id), nil, &ep)
}

// DeleteEndpoint releases a workload's addresses; deleting an unknown
// endpoint succeeds.
func (c *Client) DeleteEndpoint(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/endpoints/"+url.PathEscape(id), nil, nil)
}

// Endpoints lists endpoints: this node's, or the whole cluster's with all.
func (c *Client) Endpoints(ctx context.Context, all bool) ([]Endpoint, error) {
	var eps []Endpoint
	p := "/v1/endpoints"
	if all {
		p += "?all=1"
	}
	return eps, c.do(ctx, http.MethodGet, p, nil, &eps)
}

// IPCache reads the node's datapath IP cache from the kernel.
func (c *Client) IPCache(ctx context.Context) ([]IPCacheEntry, error) {
	var out []IPCacheEntry
	return out, c.do(ctx, http.MethodGet, "/v1/datapath/ipcache", nil, &out)
}

// IdentityFlows returns the datapath's per-identity delivery counters.
func (c *Client) IdentityFlows(ctx context.Context) ([]IdentityFlow, error) {
	var out []IdentityFlow
	return out, c.do(ctx, http.MethodGet, "/v1/datapath/identities", nil, &out)
}

// ApplyPolicies stores every policy of a YAML stream (all or none).
func (c *Client) ApplyPolicies(ctx context.Context, yaml []byte) ([]PolicyInfo, error) {
	var out []PolicyInfo
	return out, c.do(ctx, http.MethodPost, "/v1/policies", string(yaml), &out)
}

// Policies lists the stored policies.
func (c *Client) Policies(ctx context.Context) ([]PolicyInfo, error) {
	var out []PolicyInfo
	return out, c.do(ctx, http.MethodGet, "/v1/policies", nil, &out)
}

// DeletePolicy removes one policy; namespace is empty for clusterwide ones.
func (c *Client) DeletePolicy(ctx context.Context, kind, namespace, name string) error {
	if namespace == "" {
		namespace = "_"
	}
	return c.do(ctx, http.MethodDelete, "/v1/policies/"+url.PathEscape(kind)+"/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), nil, nil)
}

// TracePolicy evaluates the stored policies for one flow.
func (c *Client) TracePolicy(ctx context.Context, req TraceRequest) (TraceResult, error) {
	var out TraceResult
	return out, c.do(ctx, http.MethodPost, "/v1/policy/trace", req, &out)
}

// Drops returns the datapath's drop counters by reason.
func (c *Client) Drops(ctx context.Context) (map[string]uint64, error) {
	var out map[string]uint64
	return out, c.do(ctx, http.MethodGet, "/v1/datapath/drops", nil, &out)
}

// Flows reads the flows the agent remembers that match f, then, with
// follow, new ones as they happen, calling fn for each until ctx ends or fn
// returns an error.
func (c *Client) Flows(ctx context.Context, f FlowFilter, follow bool, fn func(Flow) error) error {
	q := url.Values{}
	for k, v := range map[string]string{"labels": f.Labels, "ip": f.IP, "proto": f.Proto, "verdict": f.Verdict} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Identity != 0 {
		q.Set("identity", strconv.FormatUint(uint64(f.Identity), 10))
	}
	if f.Port != 0 {
		q.Set("port", strconv.FormatUint(uint64(f.Port), 10))
	}
	if follow {
		q.Set("follow", "1")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://fabric/v1/flows?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("agent API at %s: %w (is the agent running? set FABRIC_SOCKET or --socket)", c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e Error
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		return &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var fl Flow
		if err := dec.Decode(&fl); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read flows: %w", err)
		}
		if err := fn(fl); err != nil {
			return err
		}
	}
}

// Get reads one store key.
func (c *Client) Get(ctx context.Context, key string) (KV, error) {
	var kv KV
	return kv, c.do(ctx, http.MethodGet, "/v1/kv?key="+url.QueryEscape(key), nil, &kv)
}

// List reads every store key under prefix.
func (c *Client) List(ctx context.Context, prefix string) ([]KV, error) {
	var kvs []KV
	return kvs, c.do(ctx, http.MethodGet, "/v1/kv?prefix="+url.QueryEscape(prefix), nil, &kvs)
}

// Put writes a store key through the Raft leader.
func (c *Client) Put(ctx context.Context, req PutRequest) (PutResult, error) {
	var r PutResult
	return r, c.do(ctx, http.MethodPost, "/v1/kv", req, &r)
}

// Keyring returns the gossip key IDs of this node.
func (c *Client) Keyring(ctx context.Context) (Keyring, error) {
	var k Keyring
	return k, c.do(ctx, http.MethodGet, "/v1/gossip/keys", nil, &k)
}

// ChangeKeyring installs, selects or removes a gossip key on this node.
func (c *Client) ChangeKeyring(ctx context.Context, req KeyringRequest) (Keyring, error) {
	var k Keyring
	return k, c.do(ctx, http.MethodPost, "/v1/gossip/keys", req, &k)
}

// ErrNotFound is matched (errors.Is) by a 404 answer.
var ErrNotFound = errors.New("not found")

// StatusError is an error answer of the agent, with its HTTP status so that
// callers can tell "try again" (503: no store leader) from "wrong request".
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string { return e.Message }

// Is makes a 404 match ErrNotFound.
func (e *StatusError) Is(target error) bool {
	return target == ErrNotFound && e.Code == http.StatusNotFound
}

// Temporary reports whether the same request may succeed later.
func (e *StatusError) Temporary() bool { return e.Code == http.StatusServiceUnavailable }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://fabric"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("agent API at %s: %w (is the agent running? set FABRIC_SOCKET or --socket)", c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return &StatusError{Code: resp.StatusCode, Message: e.Error}
		}
		return fmt.Errorf("agent API %s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode response of %s: %w", path, err)
		}
	}
	return nil
}

// ApplyServices stores every service of a YAML stream (all or none) and
// returns them with their cluster IPs and node ports.
func (c *Client) ApplyServices(ctx context.Context, yaml []byte) ([]ServiceInfo, error) {
	var out []ServiceInfo
	return out, c.do(ctx, http.MethodPost, "/v1/services", string(yaml), &out)
}

// Services lists the stored services with the backends the node uses.
func (c *Client) Services(ctx context.Context) ([]ServiceInfo, error) {
	var out []ServiceInfo
	return out, c.do(ctx, http.MethodGet, "/v1/services", nil, &out)
}

// DeleteService removes one service and frees its addresses and ports.
func (c *Client) DeleteService(ctx context.Context, namespace, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/services/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), nil, nil)
}

// ApplyLBPools stores the load-balancer IP pools of a YAML stream
// (CiliumLoadBalancerIPPool), replacing pools of the same name.
func (c *Client) ApplyLBPools(ctx context.Context, yaml []byte) ([]LBPoolInfo, error) {
	var out []LBPoolInfo
	return out, c.do(ctx, http.MethodPost, "/v1/lbipam/pools", string(yaml), &out)
}

// LBPools lists the load-balancer IP pools with their use.
func (c *Client) LBPools(ctx context.Context) ([]LBPoolInfo, error) {
	var out []LBPoolInfo
	return out, c.do(ctx, http.MethodGet, "/v1/lbipam/pools", nil, &out)
}

// DeleteLBPool removes one pool; addresses it gave keep their services.
func (c *Client) DeleteLBPool(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/lbipam/pools/"+url.PathEscape(name), nil, nil)
}

// ApplyL2Policies stores the CiliumL2AnnouncementPolicy documents of a YAML
// stream.
func (c *Client) ApplyL2Policies(ctx context.Context, yaml []byte) ([]L2PolicyInfo, error) {
	var out []L2PolicyInfo
	return out, c.do(ctx, http.MethodPost, "/v1/l2/policies", string(yaml), &out)
}

// L2Policies lists the stored L2 announcement policies.
func (c *Client) L2Policies(ctx context.Context) ([]L2PolicyInfo, error) {
	var out []L2PolicyInfo
	return out, c.do(ctx, http.MethodGet, "/v1/l2/policies", nil, &out)
}

// DeleteL2Policy removes one L2 announcement policy.
func (c *Client) DeleteL2Policy(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/l2/policies/"+url.PathEscape(name), nil, nil)
}

// L2Status tells what the node answers ARP/NDP for.
func (c *Client) L2Status(ctx context.Context) (L2Status, error) {
	var out L2Status
	return out, c.do(ctx, http.MethodGet, "/v1/l2/status", nil, &out)
}

// BGP reports the node's BGP speaker (its zero value when BGP is off).
func (c *Client) BGP(ctx context.Context) (BGPStatus, error) {
	var out BGPStatus
	return out, c.do(ctx, http.MethodGet, "/v1/bgp", nil, &out)
}

// DatapathServices reads the service frontends the node's kernel holds.
func (c *Client) DatapathServices(ctx context.Context) ([]DatapathService, error) {
	var out []DatapathService
	return out, c.do(ctx, http.MethodGet, "/v1/datapath/services", nil, &out)
}
