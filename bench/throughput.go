package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// tputCase is one way two workloads on two nodes reach each other: iperf3
// runs under serverCmd and clientCmd (argv prefixes that enter the right
// namespace), the client sends to dst.
type tputCase struct {
	name                 string
	serverCmd, clientCmd []string
	dst                  string
}

type tputSample struct {
	bps     float64 // received bits/s, as the receiver counted them
	retrans int
}

// iperfPort is iperf3's default; every case has its own namespaces.
const iperfPort = "5201"

// benchThroughput measures single-stream TCP between two workloads: over a
// plain veth, over a kernel static VXLAN pair, and through a Fabric lab in
// each datapath mode, interleaved round by round.
func benchThroughput(ctx context.Context, o options, cl *cleanup, w io.Writer) error {
	for _, tool := range []string{"iperf3", "ip", "timeout"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %s: %w", tool, err)
		}
	}
	plain, err := setupPlainVeth(cl)
	if err != nil {
		return fmt.Errorf("plain veth: %w", err)
	}
	kvx, err := setupKernelVXLAN(cl)
	if err != nil {
		return fmt.Errorf("kernel vxlan: %w", err)
	}
	bin, err := fabricBinary(ctx, o, cl)
	if err != nil {
		return err
	}
	cases := []tputCase{plain, kvx}
	for _, mode := range []string{"vxlan", "geneve", "native"} {
		c, err := labUp(ctx, cl, bin, mode)
		if err != nil {
			return fmt.Errorf("fabric lab, %s mode: %w", mode, err)
		}
		cases = append(cases, c)
	}

	samples := make(map[string][]tputSample)
	for round := range o.dpRounds {
		for _, c := range cases {
			if err := ctx.Err(); err != nil {
				return err
			}
			s, err := iperf(ctx, cl, c, o.iperfTime)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round+1, c.name, err)
			}
			progress("datapath: round %d %-14s %.2f Gbit/s, %d retransmits", round+1, c.name, s.bps/1e9, s.retrans)
			samples[c.name] = append(samples[c.name], s)
		}
	}

	med := func(name string) float64 {
		var bs []float64
		for _, s := range samples[name] {
			bs = append(bs, s.bps)
		}
		return medianFloat(bs)
	}
	fmt.Fprintf(w, "\n## Datapath throughput: single TCP stream, workload to workload across two nodes\n\n")
	fmt.Fprintf(w, "iperf3, one stream, %s per run, %d interleaved rounds (%s, ...); medians of the receiver's rate.\n\n",
		o.iperfTime, o.dpRounds, caseNames(cases))
	fmt.Fprintf(w, "| path | median (Gbit/s) | per round (Gbit/s) | retransmits per run | vs plain veth | vs kernel VXLAN |\n|---|---:|---|---|---:|---:|\n")
	base, kbase := med(plain.name), med(kvx.name)
	for _, c := range cases {
		var per, re []string
		for _, s := range samples[c.name] {
			per = append(per, fmt.Sprintf("%.2f", s.bps/1e9))
			re = append(re, strconv.Itoa(s.retrans))
		}
		m := med(c.name)
		fmt.Fprintf(w, "| %s | %.2f | %s | %s | %s | %s |\n", c.name, m/1e9, strings.Join(per, ", "), strings.Join(re, ", "), ratio(m, base), ratio(m, kbase))
	}
	fmt.Fprintf(w, "\nPaths. *plain veth*: two namespaces on one veth pair (MTU 1500), no routing. "+
		"*kernel VXLAN*: two node namespaces on a veth underlay, each with a static `vxlan id 42 remote <peer> dstport 4789` device (MTU 1450); "+
		"each node routes its workload namespace's /24 (veth, MTU 1450) to the other over the VXLAN device: the same hops as Fabric's overlay without eBPF, and without the lab's switch. "+
		"*fabric*: `fabric lab up --nodes 2 --workloads 1 --mode M` (real agents, CNI plugin and eBPF datapath; nodes on the lab's switch namespace, a bridge), "+
		"iperf3 run through `fabric lab exec` from c1-n1-w1 to c1-n2-w1; the three labs stay up side by side for the whole section, idle while another path is measured.\n\n")
	fmt.Fprintf(w, "Noise: everything shares this machine's %d cores (and whatever else runs on it: other labs, other tenants of the host); "+
		"a single stream is bound by one core's worth of sender, receiver and softirq work, so the numbers say how much CPU each path burns per byte, "+
		"not what a NIC would carry. Rounds are interleaved so drift hits every path alike, and the per-round column shows the spread: "+
		"where it is wide (on a busy 2-core VM a path can vary by 2x between rounds) only large ratios mean anything. "+
		"Retransmits on paths without a wire come from queues overflowing (veth backlog, socket buffers) when the receiver falls behind on CPU.\n", nproc())
	return nil
}

func caseNames(cs []tputCase) string {
	var ns []string
	for _, c := range cs {
		ns = append(ns, c.name)
	}
	return strings.Join(ns, ", ")
}

func nsExecCmd(ns string) []string { return []string{"ip", "netns", "exec", ns} }

// setupPlainVeth is the floor: two namespaces joined by one veth pair.
func setupPlainVeth(cl *cleanup) (tputCase, error) {
	a, err := cl.newNetNS("pa")
	if err != nil {
		return tputCase{}, err
	}
	b, err := cl.newNetNS("pb")
	if err != nil {
		return tputCase{}, err
	}
	err = ipScript(
		[]string{"-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b},
		[]string{"-n", a, "addr", "add", "10.250.0.1/24", "dev", "eth0"},
		[]string{"-n", b, "addr", "add", "10.250.0.2/24", "dev", "eth0"},
		[]string{"-n", a, "link", "set", "eth0", "up"},
		[]string{"-n", b, "link", "set", "eth0", "up"},
	)
	return tputCase{name: "plain veth", serverCmd: nsExecCmd(b), clientCmd: nsExecCmd(a), dst: "10.250.0.2"}, err
}

// setupKernelVXLAN builds what Fabric's overlay does, with the kernel's
// static VXLAN and routes instead of eBPF: workload w1 → node n1 → VXLAN over
// the n1–n2 veth → node n2 → workload w2.
func setupKernelVXLAN(cl *cleanup) (tputCase, error) {
	var ns [4]string // n1, n2, w1, w2
	for i, short := range []string{"kn1", "kn2", "kw1", "kw2"} {
		var err error
		if ns[i], err = cl.newNetNS(short); err != nil {
			return tputCase{}, err
		}
	}
	n1, n2, w1, w2 := ns[0], ns[1], ns[2], ns[3]
	script := [][]string{{"-n", n1, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", n2}}
	for i, n := range []string{n1, n2} {
		self, peer := fmt.Sprintf("10.251.0.%d", i+1), fmt.Sprintf("10.251.0.%d", 2-i)
		wl := []string{w1, w2}[i]
		script = append(script,
			[]string{"-n", n, "addr", "add", self + "/24", "dev", "eth0"},
			[]string{"-n", n, "link", "set", "eth0", "mtu", "1500", "up"},
			[]string{"-n", n, "link", "add", "vx0", "type", "vxlan", "id", "42", "remote", peer, "local", self, "dstport", "4789", "dev", "eth0"},
			[]string{"-n", n, "link", "set", "vx0", "mtu", "1450", "up"},
			[]string{"-n", n, "addr", "add", fmt.Sprintf("10.252.0.%d/24", i+1), "dev", "vx0"},
			[]string{"-n", n, "link", "add", "lxc0", "type", "veth", "peer", "name", "eth0", "netns", wl},
			[]string{"-n", n, "link", "set", "lxc0", "mtu", "1450", "up"},
			[]string{"-n", n, "addr", "add", fmt.Sprintf("10.253.%d.1/24", i+1), "dev", "lxc0"},
			[]string{"-n", n, "route", "add", fmt.Sprintf("10.253.%d.0/24", 2-i), "via", fmt.Sprintf("10.252.0.%d", 2-i), "dev", "vx0"},
			[]string{"-n", wl, "link", "set", "eth0", "mtu", "1450", "up"},
			[]string{"-n", wl, "addr", "add", fmt.Sprintf("10.253.%d.2/24", i+1), "dev", "eth0"},
			[]string{"-n", wl, "route", "add", "default", "via", fmt.Sprintf("10.253.%d.1", i+1)},
			// sysctl inside the node's namespace: forwarding is per netns.
			[]string{"netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		)
	}
	err := ipScript(script...)
	return tputCase{name: "kernel VXLAN", serverCmd: nsExecCmd(w2), clientCmd: nsExecCmd(w1), dst: "10.253.2.2"}, err
}

// fabricBinary builds the fabric binary into a temporary folder, unless
// -fabric-bin names one.
func fabricBinary(ctx context.Context, o options, cl *cleanup) (string, error) {
	if o.fabricBin != "" {
		return o.fabricBin, nil
	}
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if err != nil || root == "." || root == "" {
		return "", fmt.Errorf("find the module root (run from the repository, or pass -fabric-bin): %v", err)
	}
	dir, _, err := cl.tempDir("fabric-bench-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "fabric")
	progress("datapath: building %s", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./fabric/cmd/fabric")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./fabric/cmd/fabric: %w\n%s", err, out)
	}
	return bin, nil
}

// labUp brings up a two-node lab with one workload per node and returns the
// path from the first node's workload to the second's. The lab is removed
// at cleanup, also when up fails half-way.
func labUp(ctx context.Context, cl *cleanup, bin, mode string) (tputCase, error) {
	name := fmt.Sprintf("bd%s-%s", runID, mode[:2]) // at most 12 characters
	cl.add(func() {
		// Not under ctx: the lab must go even when the run was cancelled.
		dctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(dctx, bin, "lab", "down", "--name", name).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: fabric lab down --name %s: %v\n%s", name, err, out)
		}
	})
	progress("datapath: fabric lab up --name %s --mode %s", name, mode)
	uctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	up := exec.CommandContext(uctx, bin, "lab", "up", "--name", name, "--nodes", "2", "--workloads", "1", "--mode", mode)
	if out, err := up.CombinedOutput(); err != nil {
		return tputCase{}, fmt.Errorf("fabric lab up: %w\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin, "lab", "status", "--name", name, "-o", "json").Output()
	if err != nil {
		return tputCase{}, fmt.Errorf("fabric lab status: %w", err)
	}
	var st struct {
		Workloads []struct {
			Name string   `json:"name"`
			Node string   `json:"node"`
			IPs  []string `json:"ips"`
		} `json:"workloads"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return tputCase{}, fmt.Errorf("fabric lab status -o json: %w", err)
	}
	var client, server, dst string
	for _, wl := range st.Workloads {
		switch wl.Node {
		case "c1-n1":
			client = wl.Name
		case "c1-n2":
			server = wl.Name
			for _, ip := range wl.IPs {
				if !strings.Contains(ip, ":") {
					dst = ip
				}
			}
		}
	}
	if client == "" || server == "" || dst == "" {
		return tputCase{}, fmt.Errorf("lab %s lacks a workload on c1-n1 or one with an IPv4 address on c1-n2: %s", name, out)
	}
	via := func(member string) []string { return []string{bin, "lab", "exec", "--name", name, member, "--"} }
	return tputCase{name: "fabric " + mode, serverCmd: via(server), clientCmd: via(client), dst: dst}, nil
}

// iperf runs one iperf3 test of c. Both ends run under coreutils timeout, so
// an iperf3 that outlives its launcher (killed through `fabric lab exec`,
// which does not forward signals) still ends on its own.
func iperf(ctx context.Context, cl *cleanup, c tputCase, d time.Duration) (tputSample, error) {
	secs := int(d.Round(time.Second) / time.Second)
	limit := strconv.Itoa(secs + 20)
	srv := exec.Command(c.serverCmd[0], append(c.serverCmd[1:], "timeout", limit, "iperf3", "-s", "-1", "-p", iperfPort)...)
	var srvOut strings.Builder
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	stop, exited, err := cl.startProcessDone(srv)
	if err != nil {
		return tputSample{}, err
	}
	defer stop()

	// The server needs a moment to listen; a refused connect leaves the
	// one-off server waiting, so retrying is safe. Bounded: 50 × 100ms.
	var res iperfResult
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
		cli := exec.CommandContext(cctx, c.clientCmd[0], append(c.clientCmd[1:], "timeout", limit,
			"iperf3", "-c", c.dst, "-p", iperfPort, "-t", strconv.Itoa(secs), "-J")...)
		out, runErr := cli.Output()
		cancel()
		res = iperfResult{}
		jerr := json.Unmarshal(out, &res)
		if runErr == nil && jerr == nil && res.Error == "" {
			break
		}
		msg := res.Error
		if jerr != nil {
			msg = fmt.Sprintf("%v (output %q)", runErr, out)
		}
		if attempt >= 50 || !strings.Contains(msg, "connect") {
			stop() // waits for the server's exit, and so for its output
			return tputSample{}, fmt.Errorf("iperf3 -c %s: %s (server: %s)", c.dst, msg, strings.TrimSpace(srvOut.String()))
		}
		if err := ctx.Err(); err != nil {
			return tputSample{}, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A one-off server exits after its test; wait for it, so the next
	// round's server finds the port free.
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		return tputSample{}, errors.New("iperf3 server did not exit after its one test")
	}
	if res.End.SumReceived.BitsPerSecond <= 0 {
		return tputSample{}, errors.New("iperf3 reported no received data")
	}
	return tputSample{bps: res.End.SumReceived.BitsPerSecond, retrans: res.End.SumSent.Retransmits}, nil
}

// iperfResult is the part of iperf3 -J's output the benchmark reads.
type iperfResult struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			Retransmits int `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}
