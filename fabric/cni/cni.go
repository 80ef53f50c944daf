// Package cni is Fabric's CNI plugin (spec 1.0.0 and 1.1.0; 0.3.x and 0.4.0
// results are converted by the CNI library). It owns one workload
// attachment's plumbing: the veth pair between the node's namespace and the
// workload's, the addresses, routes and neighbour entry inside the workload,
// and the calls that tell the local agent about them. It owns neither
// addresses nor identities (the agent allocates both, over its unix-socket
// API) nor forwarding (the datapath serves the host-side veth once the
// agent has been told it exists).
//
// A runtime runs it as the binary "fabric-cni" (a link to "fabric") or as
// "fabric cni", from the node's network namespace, with the spec's CNI_*
// environment and the network config on stdin:
//
//	{"cniVersion":"1.0.0","name":"fabric","type":"fabric-cni",
//	 "socket":"/run/fabric/fabric.sock",
//	 "args":{"cni":{"labels":[{"key":"app","value":"web"}]}}}
//
// "socket" is optional (default /run/fabric/fabric.sock). The endpoint's
// labels, which decide its identity and so the policy it is under, come
// from three sources, merged; a name given twice with different values is
// an error, and at least one label is required:
//
//   - args.cni.labels in the network config (the CNI conventions' key):
//     [{"key":"app","value":"web"}]; a key may carry a source, "k8s:app".
//   - CNI_ARGS FABRIC_LABELS, in the agent's label syntax:
//     CNI_ARGS="FABRIC_LABELS=app=web,tier=front".
//   - CNI_ARGS K8S_POD_NAMESPACE=<ns>, which becomes the label
//     k8s:io.kubernetes.pod.namespace=<ns>. K8S_POD_NAME is not a label:
//     it would give every pod an identity of its own.
//
// Other CNI_ARGS keys are ignored.
//
// IPv4 reaches its gateway through ARP, which the datapath answers on the
// host-side veth; IPv6 gets a permanent neighbour entry for its gateway
// pointing at the host-side veth's MAC, so no NDP is needed, and DAD is off
// on the workload interface so its address works at once.
package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/fabric-net/fabric/fabric/api"
)

// Plugin-specific error codes (the spec leaves 100 and up to plugins).
const (
	// ErrAgent: the agent answered but refused or failed the request, or
	// its answer was unusable.
	ErrAgent uint = 100
	// ErrLink: creating, configuring or removing the interfaces failed.
	ErrLink uint = 101
	// ErrDrift: CHECK found the attachment differing from what ADD made.
	ErrDrift uint = 102
	// errPluginNotAvailable is the spec 1.1.0 STATUS code; the library
	// has no constant for it.
	errPluginNotAvailable uint = 50
)

// versionInfo lists the spec versions the plugin speaks. Results are built
// as 1.1.0 and converted down by the library; 0.1.0 and 0.2.0 are left
// out because their results cannot say which interface is the workload's.
var versionInfo = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

const about = "fabric-cni: Fabric's CNI plugin (run by a container runtime, not by hand)"

// commandTimeout bounds one command: the runtime waits on us, and an
// agent that takes longer than this is better reported than waited for.
const commandTimeout = 60 * time.Second

// Main runs the plugin as a runtime invokes it: CNI_* environment, config
// on stdin, result or error JSON on stdout. It returns the exit code.
func Main() int {
	p := &plugin{stdout: os.Stdout, timeout: commandTimeout}
	if e := skel.PluginMainFuncsWithError(p.funcs(), versionInfo, about); e != nil {
		if err := e.Print(); err != nil {
			fmt.Fprintln(os.Stderr, "fabric-cni: write error JSON:", err)
		}
		return 1
	}
	return 0
}

// plugin carries what the commands share; tests build one with their own
// stdout.
type plugin struct {
	stdout  io.Writer
	timeout time.Duration
}

func (p *plugin) funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.cmdAdd, Del: p.cmdDel, Check: p.cmdCheck, Status: p.cmdStatus}
}

// cmdAdd creates the endpoint in the agent, then the interfaces, then
// tells the agent they exist. Anything it made is removed again when a
// later step fails, so a failed ADD leaves neither an address allocated
// nor a veth behind.
func (p *plugin) cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	cargs, err := parseArgs(args.Args)
	if err != nil {
		return err
	}
	labels, err := endpointLabels(conf, cargs)
	if err != nil {
		return err
	}
	// A bad netns fails here, before the agent allocates anything.
	if err := checkNetns(args.Netns); err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %q: %v", args.Netns, err),
			"the runtime must pass the path of the workload's network namespace, e.g. /run/netns/<name>")
	}
	id := EndpointID(args.ContainerID, args.IfName)
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	client := api.NewClient(conf.Socket)

	ep, err := client.CreateEndpoint(ctx, api.EndpointRequest{
		ID: id, Labels: labels.String(), ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
	})
	if err != nil {
		return agentError(conf.Socket, "create endpoint "+id, err)
	}
	spec, err := specFor(ep, args.Netns, args.IfName)
	if err != nil {
		return p.rollback(client, id, "",
			types.NewError(ErrAgent, fmt.Sprintf("agent's answer for endpoint %s is unusable: %v", id, err),
				"the agent and the plugin disagree on the API; run the same fabric version for both"))
	}
	st, err := setupLink(spec)
	if err != nil {
		return p.rollback(client, id, spec.HostIfName,
			types.NewError(ErrLink, fmt.Sprintf("set up %s in %s for endpoint %s: %v", args.IfName, args.Netns, id, err), ""))
	}
	if _, err := client.AttachEndpoint(ctx, id, api.Attachment{
		HostIfName: spec.HostIfName, HostIfIndex: st.HostIndex, HostMAC: st.HostMAC.String(),
		WorkloadMAC: st.WorkloadMAC.String(), WorkloadIndex: st.WorkloadIndex,
	}); err != nil {
		return p.rollback(client, id, spec.HostIfName, agentError(conf.Socket, "attach endpoint "+id, err))
	}

	res, err := buildResult(spec, st).GetAsVersion(conf.CNIVersion)
	if err != nil {
		return p.rollback(client, id, spec.HostIfName,
			types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("convert result to %s: %v", conf.CNIVersion, err), ""))
	}
	return res.PrintTo(p.stdout)
}

// rollback undoes a partial ADD and returns cause with what the undo
// could not do appended, so the operator knows what is left over.
func (p *plugin) rollback(client *api.Client, id, hostIf string, cause *types.Error) error {
	var left []string
	if hostIf != "" {
		if err := removeLink(hostIf); err != nil {
			left = append(left, fmt.Sprintf("remove veth %s: %v", hostIf, err))
		}
	}
	// A fresh context: the command's may be what ran out.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := client.DeleteEndpoint(ctx, id); err != nil {
		left = append(left, fmt.Sprintf("release endpoint %s in the agent: %v", id, err))
	}
	if len(left) > 0 {
		extra := "rollback incomplete (" + strings.Join(left, "; ") + "); run DEL for this container to clean up"
		if cause.Details != "" {
			extra = cause.Details + "; " + extra
		}
		cause.Details = extra
	}
	return cause
}

// cmdDel removes the host veth (its peer goes with it) and releases the
// endpoint. Each step treats "already gone" as done, so DEL can be
// repeated, and it needs neither the workload's netns nor the ADD result.
func (p *plugin) cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	id := EndpointID(args.ContainerID, args.IfName)
	if err := removeLink(HostIfName(id)); err != nil {
		return types.NewError(ErrLink, fmt.Sprintf("remove veth %s of endpoint %s: %v", HostIfName(id), id, err), "")
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	if err := api.NewClient(conf.Socket).DeleteEndpoint(ctx, id); err != nil {
		return agentError(conf.Socket, "delete endpoint "+id, err)
	}
	return nil
}

// cmdCheck compares the attachment with what the agent holds and what ADD
// returned, and names every difference.
func (p *plugin) cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	id := EndpointID(args.ContainerID, args.IfName)
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	ep, err := api.NewClient(conf.Socket).Endpoint(ctx, id)
	if errors.Is(err, api.ErrNotFound) {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("the fabric agent does not know endpoint %s", id),
			"the attachment was released or never made; recreate the container (DEL, then ADD)")
	}
	if err != nil {
		return agentError(conf.Socket, "read endpoint "+id, err)
	}
	spec, err := specFor(ep, args.Netns, args.IfName)
	if err != nil {
		return types.NewError(ErrAgent, fmt.Sprintf("agent's record of endpoint %s is unusable: %v", id, err), "")
	}

	var drift []string
	if conf.RawPrevResult != nil {
		d, err := prevResultDrift(conf, spec)
		if err != nil {
			return err
		}
		drift = append(drift, d...)
	}
	if ep.Attachment == nil {
		drift = append(drift, fmt.Sprintf("the agent has no attachment for endpoint %s, so the datapath does not serve it", id))
	} else if ep.Attachment.HostIfName != spec.HostIfName {
		drift = append(drift, fmt.Sprintf("the agent has host interface %s for endpoint %s, want %s", ep.Attachment.HostIfName, id, spec.HostIfName))
	}
	d, err := checkLink(spec, ep.Attachment)
	if err != nil {
		return types.NewError(ErrLink, fmt.Sprintf("inspect %s in %s: %v", args.IfName, args.Netns, err), "")
	}
	drift = append(drift, d...)
	if len(drift) > 0 {
		return types.NewError(ErrDrift, strings.Join(drift, "; "),
			fmt.Sprintf("endpoint %s differs from what ADD set up; recreate the container (DEL, then ADD) to repair it", id))
	}
	return nil
}

// prevResultDrift compares the addresses ADD returned with the agent's.
func prevResultDrift(conf *netConf, spec linkSpec) ([]string, error) {
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("config: \"prevResult\": %v", err), "")
	}
	prev, err := types100.GetResult(conf.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("config: \"prevResult\": %v", err), "")
	}
	have := map[netip.Prefix]bool{}
	for _, ipc := range prev.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			ones, _ := ipc.Address.Mask.Size()
			have[netip.PrefixFrom(a.Unmap(), ones)] = true
		}
	}
	var drift []string
	for _, a := range spec.Addrs {
		if !have[a.Prefix] {
			drift = append(drift, fmt.Sprintf("address %s is the agent's but not in the ADD result", a.Prefix))
		}
		delete(have, a.Prefix)
	}
	for p := range have {
		drift = append(drift, fmt.Sprintf("address %s is in the ADD result but the agent no longer has it", p))
	}
	return drift, nil
}

// cmdStatus (spec 1.1.0) says whether ADD can work now: the agent answers
// and the node has a pod CIDR to allocate from.
func (p *plugin) cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	st, err := api.NewClient(conf.Socket).Status(ctx)
	if err != nil {
		e := agentError(conf.Socket, "read status", err)
		return types.NewError(errPluginNotAvailable, "plugin not available: "+e.Msg, e.Details)
	}
	ipam, ok := st.Health.Checks["ipam"]
	if ok && ipam != "ok" || !ok && len(st.Node.PodCIDRs) == 0 {
		if !ok {
			ipam = "the node has no pod CIDR"
		}
		return types.NewError(errPluginNotAvailable, "plugin not available: the node cannot allocate addresses yet: "+ipam,
			"the agent gets a pod CIDR once it has joined the cluster's store; see `fabric status`")
	}
	return nil
}

// agentError turns a client error into a CNI error: an agent that cannot
// be reached is "try again later" (it may be starting), one that answered
// with an error is ErrAgent with its message.
func agentError(socket, what string, err error) *types.Error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
		cause := err
		if op != nil {
			cause = op // the client's own hint names CLI flags, not the config
		}
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("cannot reach the fabric agent at %s: is it running?", socket),
			fmt.Sprintf("%s: %v; start the agent (fabric agent) or set \"socket\" in the network config", what, cause))
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("the fabric agent at %s did not answer in time", socket),
			fmt.Sprintf("%s: %v; check the agent's log and `fabric status`", what, err))
	}
	var se *api.StatusError
	if errors.As(err, &se) && se.Temporary() {
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("the fabric agent cannot %s right now: %v", what, err),
			"the node's store is not reachable or has no leader; see `fabric status` and retry")
	}
	return types.NewError(ErrAgent, fmt.Sprintf("the fabric agent refused to %s: %v", what, err), "")
}

// linkSpec is the attachment as it must be: what setupLink makes and
// checkLink compares against.
type linkSpec struct {
	Netns      string
	IfName     string
	HostIfName string
	MTU        int // 0: leave the kernel's default
	Addrs      []addrSpec
}

// addrSpec is one address of the workload and its family's gateway.
type addrSpec struct {
	Prefix  netip.Prefix // the address as /32 or /128
	Gateway netip.Addr
}

// linkState is what setupLink learned from the kernel.
type linkState struct {
	HostIndex     int
	HostMAC       net.HardwareAddr
	WorkloadIndex int
	WorkloadMAC   net.HardwareAddr
	MTU           int
}

// specFor derives the attachment from the agent's endpoint, refusing an
// answer the plugin cannot plumb (no address, a family without gateway).
func specFor(ep api.Endpoint, netns, ifName string) (linkSpec, error) {
	s := linkSpec{Netns: netns, IfName: ifName, HostIfName: HostIfName(ep.ID), MTU: ep.MTU}
	if ep.MTU != 0 && (ep.MTU < 68 || ep.MTU > 65535) {
		return linkSpec{}, fmt.Errorf("MTU %d is outside 68..65535", ep.MTU)
	}
	if len(ep.IPs) == 0 {
		return linkSpec{}, errors.New("no IP address")
	}
	gws := map[bool]netip.Addr{} // is4 → gateway
	for _, g := range ep.Gateways {
		a, err := parseAddr(g)
		if err != nil {
			return linkSpec{}, fmt.Errorf("gateway: %w", err)
		}
		gws[a.Is4()] = a
	}
	seen := map[bool]bool{}
	for _, ip := range ep.IPs {
		a, err := parseAddr(ip)
		if err != nil {
			return linkSpec{}, fmt.Errorf("IP: %w", err)
		}
		if seen[a.Is4()] {
			return linkSpec{}, fmt.Errorf("two IPs of one family (%v): the plugin plumbs one per family", ep.IPs)
		}
		seen[a.Is4()] = true
		gw, ok := gws[a.Is4()]
		if !ok {
			return linkSpec{}, fmt.Errorf("no gateway for %s (gateways %v)", a, ep.Gateways)
		}
		s.Addrs = append(s.Addrs, addrSpec{Prefix: netip.PrefixFrom(a, a.BitLen()), Gateway: gw})
	}
	return s, nil
}

// parseAddr accepts an address or a prefix (whose address is taken), so
// the plugin does not depend on which form the agent writes.
func parseAddr(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a.Unmap(), nil
}

// buildResult is the ADD result: interface 0 is the host veth, 1 the
// workload's, and every address sits on 1.
func buildResult(s linkSpec, st linkState) *types100.Result {
	res := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: s.HostIfName, Mac: st.HostMAC.String(), Mtu: st.MTU},
			{Name: s.IfName, Mac: st.WorkloadMAC.String(), Mtu: st.MTU, Sandbox: s.Netns},
		},
	}
	for _, a := range s.Addrs {
		res.IPs = append(res.IPs, &types100.IPConfig{
			Interface: types100.Int(1),
			Address:   prefixToIPNet(a.Prefix),
			Gateway:   net.IP(a.Gateway.AsSlice()),
		})
		res.Routes = append(res.Routes, &types.Route{Dst: prefixToIPNet(defaultRoute(a.Prefix.Addr())), GW: net.IP(a.Gateway.AsSlice())})
	}
	return res
}

// defaultRoute is 0.0.0.0/0 or ::/0, the family of a.
func defaultRoute(a netip.Addr) netip.Prefix {
	if a.Is4() {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
}

func prefixToIPNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
