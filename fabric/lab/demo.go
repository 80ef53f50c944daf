package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"
)

// The demo: `fabric lab demo`. In cluster c1 it rebuilds the demo of
// Cilium's documentation (a deathstar service of the empire, a tiefighter
// allowed to land, an xwing that is not) and shows it from outside the
// cluster: the deathstar's load-balancer address is reached by the host
// behind the router through BGP (in a --bgp lab) and by the client on the
// segment through L2 announcements. It applies what it needs through the
// agents' API, as a user would, and leaves it in place to look at.

// DemoStep is one thing the demo shows.
type DemoStep struct {
	Step   string `json:"step"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// DemoReport is the outcome of Demo.
type DemoReport struct {
	Lab   string     `json:"lab"`
	Steps []DemoStep `json:"steps"`
}

// OK reports whether every step passed.
func (r DemoReport) OK() bool {
	for _, s := range r.Steps {
		if !s.OK {
			return false
		}
	}
	return true
}

// WriteText prints the report, one step per line.
func (r DemoReport) WriteText(w io.Writer) error {
	for _, s := range r.Steps {
		if _, err := fmt.Fprintf(w, "%-4s %s", passFail(s.OK), s.Step); err != nil {
			return err
		}
		if s.Detail != "" {
			fmt.Fprintf(w, ": %s", s.Detail)
		}
		fmt.Fprintln(w)
	}
	return nil
}

const demoNS = ",k8s:io.kubernetes.pod.namespace=default"

func demoPools(bgp bool) string {
	y := `apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: demo-segment}
spec:
  blocks: [{start: 10.99.1.200, stop: 10.99.1.209}]
  serviceSelector: {matchLabels: {announce: l2}}
`
	if bgp {
		y += `---
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: demo-routed}
spec:
  blocks: [{cidr: 10.97.0.0/28}]
  serviceSelector: {matchLabels: {announce: bgp}}
`
	}
	return y
}

// The L2 policy answers only from rack 1, the client's segment.
const demoL2Policy = `apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: demo}
spec:
  serviceSelector: {matchLabels: {announce: l2}}
  nodeSelector: {matchLabels: {rack: r1}}
  interfaces: ["^eth0$"]
  loadBalancerIPs: true
`

func demoService(name, announce string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %s
  namespace: default
  labels: {announce: %s}
spec:
  type: LoadBalancer
  selector: {org: empire, class: deathstar}
  ports: [{port: 80, protocol: TCP, targetPort: %d}]
`, name, announce, ProbePort)
}

// The policy of Cilium's demo, on the backend's port, plus the outside
// world for the load-balancer checks. Outside traffic that another node
// forwards to the deathstar is translated to that node's address, so in
// native mode it arrives as remote-node (as in Cilium with SNAT); the
// overlays carry it as world.
var demoPolicy = fmt.Sprintf(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: rule1, namespace: default}
spec:
  description: L3-L4 policy to restrict deathstar access to empire ships only
  endpointSelector: {matchLabels: {org: empire, class: deathstar}}
  ingress:
  - fromEndpoints: [{matchLabels: {org: empire}}]
    toPorts: [{ports: [{port: "%d", protocol: TCP}]}]
  - fromEntities: [world, remote-node]
    toPorts: [{ports: [{port: "%d", protocol: TCP}]}]
`, ProbePort, ProbePort)

// Demo runs the demo in cluster c1 and reports each step.
func (l *Lab) Demo(ctx context.Context) (DemoReport, error) {
	l.mu.Lock()
	st := l.st
	l.mu.Unlock()
	rep := DemoReport{Lab: st.Name}
	if st.NoAgents || st.Mode == "none" || st.Mode == "" {
		return rep, errors.New("the demo needs agents with a datapath: bring the lab up with --mode vxlan, geneve or native")
	}
	step := func(name string, ok bool, format string, args ...any) {
		rep.Steps = append(rep.Steps, DemoStep{Step: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	nodes := 0
	for _, n := range st.NodeList {
		if n.Cluster == 1 {
			nodes++
		}
	}
	first, last := nodeName(1, 1), nodeName(1, nodes)
	ships := []struct{ name, node, labels string }{
		{"deathstar", last, "org=empire,class=deathstar"},
		{"tiefighter", first, "org=empire,class=tiefighter"},
		{"xwing", first, "org=alliance,class=xwing"},
	}
	addrs := map[string]netip.Addr{}
	for _, s := range ships {
		w, ok := l.Workload(s.name)
		if !ok {
			var err error
			if w, err = l.AddWorkload(ctx, s.node, s.name, s.labels+demoNS); err != nil {
				return rep, fmt.Errorf("demo workload %s: %w", s.name, err)
			}
		}
		for _, ip := range w.IPs {
			if ip.Is4() {
				addrs[s.name] = ip
			}
		}
	}
	c := l.Client(first)
	if _, err := c.ApplyLBPools(ctx, []byte(demoPools(st.BGP))); err != nil {
		return rep, fmt.Errorf("demo pools: %w", err)
	}
	if _, err := c.ApplyL2Policies(ctx, []byte(demoL2Policy)); err != nil {
		return rep, fmt.Errorf("demo L2 policy: %w", err)
	}
	announce := map[string]string{"deathstar": "l2"}
	if st.BGP {
		announce = map[string]string{"deathstar": "bgp", "deathstar-l2": "l2"}
	}
	lbIPs := map[string]netip.Addr{}
	var cip netip.Addr
	for name, how := range announce {
		infos, err := c.ApplyServices(ctx, []byte(demoService(name, how)))
		if err != nil {
			return rep, fmt.Errorf("demo service %s: %w", name, err)
		}
		if name == "deathstar" {
			cip = netip.MustParseAddr(infos[0].ClusterIP)
		}
		if len(infos[0].LoadBalancerIPs) > 0 {
			lbIPs[name] = netip.MustParseAddr(infos[0].LoadBalancerIPs[0])
		}
		step("service default/"+name+" applied", len(infos[0].LoadBalancerIPs) > 0, "cluster IP %s, load-balancer IP %v, announced by %s %s",
			infos[0].ClusterIP, infos[0].LoadBalancerIPs, how, strings.Join(infos[0].Conditions, "; "))
	}
	if _, err := c.ApplyPolicies(ctx, []byte(demoPolicy)); err != nil {
		return rep, fmt.Errorf("demo policy: %w", err)
	}
	step("policy default/rule1 applied", true, "only org=empire (and the world, for the outside checks, with the nodes that forward it) may reach the deathstar on %d/TCP", ProbePort)

	deathstar := netip.AddrPortFrom(cip, 80)
	want := func(name, from string, to netip.AddrPort, allowed bool) {
		// Policy and services reach every node within a moment; give
		// them a few seconds before calling it.
		deadline := time.Now().Add(8 * time.Second)
		for {
			got, detail := l.demoProbe(ctx, from, to)
			if got == allowed || time.Now().After(deadline) {
				verdict := "dropped"
				if got {
					verdict = "answered by " + detail
				}
				step(name, got == allowed, "%s → %s: %s", from, to, verdict)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	want("tiefighter lands (org=empire → deathstar service)", "tiefighter", deathstar, true)
	want("xwing is turned away (org=alliance → deathstar service, policy drop)", "xwing", deathstar, false)
	if ip, ok := lbIPs["deathstar"]; ok && st.BGP {
		want("the outside host reaches the deathstar's LB IP through the router (BGP, ECMP)", ExtMember, netip.AddrPortFrom(ip, 80), true)
	}
	l2name := "deathstar"
	if st.BGP {
		l2name = "deathstar-l2"
	}
	if ip, ok := lbIPs[l2name]; ok {
		want("the segment's client reaches the LB IP its node answers ARP for (L2 announcement)", ClientMember(1), netip.AddrPortFrom(ip, 80), true)
	}
	return rep, nil
}

// demoProbe asks, from inside member, which address answers at to.
func (l *Lab) demoProbe(ctx context.Context, member string, to netip.AddrPort) (bool, string) {
	out, _ := l.Exec(ctx, member, l.st.Binary, "lab", "probe", "-o", "json", "--timeout", "700ms", "--who", "1", "--tcp", to.String())
	var r WhoResult
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &r); err != nil {
		return false, err.Error()
	}
	return r.Error == "", r.Server
}
