package lab

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// The check: `fabric lab check`. Base checks ask every agent for its view of
// its cluster; the connectivity matrix sends ICMP, TCP and UDP, IPv4 and
// IPv6, from every workload to every other workload of its cluster, from
// inside the source workload's namespace, so the packets take the real
// datapath. Traffic between clusters is not expected yet (there is no mesh)
// and is skipped.

// Probe settings of the check.
const (
	probeTimeout  = time.Second
	checkParallel = 8 // probe processes at a time
)

// CheckReport is the outcome of Check.
type CheckReport struct {
	Lab    string        `json:"lab"`
	Base   []CheckResult `json:"base"`
	Probes []ProbeResult `json:"probes"`
	// Notes say what was skipped and why.
	Notes  []string `json:"notes,omitempty"`
	Passed int      `json:"passed"`
	Failed int      `json:"failed"`
}

// OK reports whether every check and probe passed.
func (r CheckReport) OK() bool { return r.Failed == 0 }

// CheckResult is one base check of one cluster.
type CheckResult struct {
	Cluster string `json:"cluster"`
	Check   string `json:"check"`
	OK      bool   `json:"ok"`
	Detail  string `json:"detail,omitempty"`
}

// ProbeResult is one cell of the connectivity matrix.
type ProbeResult struct {
	Cluster     string     `json:"cluster"`
	Source      string     `json:"source"`
	Destination string     `json:"destination"`
	Address     netip.Addr `json:"address"`
	Proto       string     `json:"proto"`  // icmp, tcp, udp
	Family      string     `json:"family"` // ipv4, ipv6
	OK          bool       `json:"ok"`
	// Latency is the round trip time of a passing probe, in nanoseconds.
	Latency time.Duration `json:"latencyNs,omitempty"`
	Error   string        `json:"error,omitempty"`
}

// ProbeOutcome is one line of `fabric lab probe -o json`: the result of
// one probe to one address.
type ProbeOutcome struct {
	Proto   string        `json:"proto"`
	Addr    string        `json:"addr"`
	OK      bool          `json:"ok"`
	Latency time.Duration `json:"latencyNs,omitempty"`
	Error   string        `json:"error,omitempty"`
}

// ProbeTarget is one probe for ProbeAll.
type ProbeTarget struct{ Proto, Addr string }

// ProbeAll runs every probe at once, each with timeout, and returns the
// outcomes in the order of targets.
func ProbeAll(ctx context.Context, targets []ProbeTarget, timeout time.Duration) []ProbeOutcome {
	out := make([]ProbeOutcome, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			rtt, err := Probe(ctx, t.Proto, t.Addr, timeout)
			out[i] = ProbeOutcome{Proto: t.Proto, Addr: t.Addr, OK: err == nil, Latency: rtt}
			if err != nil {
				out[i].Error = err.Error()
			}
		})
	}
	wg.Wait()
	return out
}

// Check runs the base checks and the connectivity matrix. Failures are in
// the report; the error says only that the check could not run.
func (l *Lab) Check(ctx context.Context) (CheckReport, error) {
	spec := l.Spec()
	r := CheckReport{Lab: spec.Name}
	if spec.NoAgents {
		return r, fmt.Errorf("lab %s has no agents to check", spec.Name)
	}
	statuses := l.Status(ctx)
	workloads := l.Workloads()
	for c := 1; c <= spec.Clusters; c++ {
		var sts []NodeStatus
		for _, s := range statuses {
			if s.Cluster == clusterName(c) {
				sts = append(sts, s)
			}
		}
		var ws []Workload
		for _, w := range workloads {
			if w.Cluster == clusterName(c) {
				ws = append(ws, w)
			}
		}
		r.Base = append(r.Base, baseChecks(clusterName(c), spec.Nodes, sts, ws)...)
	}

	switch {
	case len(workloads) == 0:
		r.Notes = append(r.Notes, "no workloads: connectivity matrix skipped (make some with `fabric lab up --workloads N` or `fabric lab workload add`)")
	default:
		_, err := exec.LookPath("ping")
		havePing := err == nil
		if !havePing {
			r.Notes = append(r.Notes, "ping not found (install iputils-ping): ICMP skipped, TCP and UDP only")
		}
		r.Probes = l.probeMatrix(ctx, workloads, havePing)
		if spec.Clusters > 1 {
			r.Notes = append(r.Notes, "cross-cluster workload traffic is not checked: clusters are not meshed yet")
		}
	}
	r.count()
	return r, nil
}

func (r *CheckReport) count() {
	r.Passed, r.Failed = 0, 0
	for _, b := range r.Base {
		if b.OK {
			r.Passed++
		} else {
			r.Failed++
		}
	}
	for _, p := range r.Probes {
		if p.OK {
			r.Passed++
		} else {
			r.Failed++
		}
	}
}

// baseChecks checks one cluster from the statuses of its nodes (size of
// them) and its workloads.
func baseChecks(cluster string, size int, sts []NodeStatus, ws []Workload) []CheckResult {
	res := func(check string, bad []string, okDetail string) CheckResult {
		r := CheckResult{Cluster: cluster, Check: check, OK: len(bad) == 0, Detail: okDetail}
		if len(bad) > 0 {
			r.Detail = strings.Join(bad, "; ")
		}
		return r
	}
	var out []CheckResult

	var bad []string
	for _, s := range sts {
		switch {
		case s.Error != "":
			bad = append(bad, s.Node+": "+s.Error)
		case s.Members["alive"] != size:
			bad = append(bad, fmt.Sprintf("%s sees %s, want %d alive", s.Node, cmp.Or(s.MemberSummary(), "no members"), size))
		}
	}
	out = append(out, res("members alive", bad, fmt.Sprintf("every node sees %d alive", size)))

	// Every node that answers names the same leader.
	bad = nil
	leaders := map[string][]string{}
	for _, s := range sts {
		if s.Error == "" {
			leaders[s.Leader] = append(leaders[s.Leader], s.Node)
		}
	}
	if nodes, ok := leaders[""]; ok {
		bad = append(bad, "no leader on "+strings.Join(nodes, ", "))
		delete(leaders, "")
	}
	names := slices.Sorted(maps.Keys(leaders))
	if len(names) > 1 {
		for _, l := range names {
			bad = append(bad, fmt.Sprintf("%s on %s", l, strings.Join(leaders[l], ", ")))
		}
	}
	if len(names) == 0 && len(bad) == 0 {
		bad = append(bad, "no node answered")
	}
	leader := strings.Join(names, ", ")
	out = append(out, res("one store leader", bad, leader))

	bad = nil
	owner := map[string]string{}
	var dup []string
	for _, s := range sts {
		if s.Error != "" {
			continue
		}
		if len(s.PodCIDRs) == 0 {
			bad = append(bad, s.Node+" has none")
		}
		for _, p := range s.PodCIDRs {
			if o, ok := owner[p]; ok {
				dup = append(dup, fmt.Sprintf("%s on %s and %s", p, o, s.Node))
			}
			owner[p] = s.Node
		}
	}
	out = append(out, res("pod CIDRs", bad, fmt.Sprintf("%d allocated", len(owner))))
	out = append(out, res("pod CIDRs unique", dup, ""))

	if len(ws) > 0 {
		most := 0
		for _, s := range sts {
			most = max(most, s.Identities)
		}
		bad = nil
		if most == 0 {
			bad = append(bad, fmt.Sprintf("no identities with %d workload(s)", len(ws)))
		}
		out = append(out, res("identities", bad, fmt.Sprintf("%d", most)))

		bad = nil
		for _, w := range ws {
			switch {
			case len(w.IPs) == 0:
				bad = append(bad, w.Name+" has no address")
			case w.ProbePID == 0:
				bad = append(bad, w.Name+"'s probe server is not running")
			}
		}
		out = append(out, res("workloads attached", bad, fmt.Sprintf("%d with addresses and probe servers", len(ws))))
	}
	return out
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "ipv4"
	}
	return "ipv6"
}

// matrixCells lists the probes from every workload to every other workload
// of the same cluster, for every address family both have.
func matrixCells(ws []Workload, protos []string) []ProbeResult {
	var cells []ProbeResult
	for _, src := range ws {
		for _, dst := range ws {
			if src.Name == dst.Name || src.Cluster != dst.Cluster {
				continue
			}
			for _, a := range dst.IPs {
				if !slices.ContainsFunc(src.IPs, func(s netip.Addr) bool { return s.Is4() == a.Is4() }) {
					continue
				}
				for _, p := range protos {
					cells = append(cells, ProbeResult{Cluster: src.Cluster, Source: src.Name, Destination: dst.Name,
						Address: a, Proto: p, Family: family(a)})
				}
			}
		}
	}
	return cells
}

// probeMatrix fills in every cell: one `ping` per ICMP cell, one `fabric
// lab probe` per source for all its TCP and UDP cells, checkParallel
// processes at a time.
func (l *Lab) probeMatrix(ctx context.Context, ws []Workload, havePing bool) []ProbeResult {
	protos := []string{"tcp", "udp"}
	if havePing {
		protos = []string{"icmp", "tcp", "udp"}
	}
	cells := matrixCells(ws, protos)
	binary := l.Spec().Binary

	var jobs []func()
	bySource := map[string][]int{}
	for i := range cells {
		c := &cells[i]
		if c.Proto == "icmp" {
			jobs = append(jobs, func() { l.pingCell(ctx, c) })
			continue
		}
		bySource[c.Source] = append(bySource[c.Source], i)
	}
	for src, idx := range bySource {
		jobs = append(jobs, func() { l.probeCells(ctx, binary, src, cells, idx) })
	}
	sem := make(chan struct{}, checkParallel)
	var wg sync.WaitGroup
	for _, job := range jobs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			job()
		})
	}
	wg.Wait()
	return cells
}

var pingTimeRE = regexp.MustCompile(`time[=<]([0-9.]+) ms`)

// pingCell pings once, and once more if that got no reply: the first
// packet to a new neighbour may wait on address resolution longer than
// the timeout; a datapath that does not work fails both.
func (l *Lab) pingCell(ctx context.Context, c *ProbeResult) {
	out, err := l.Exec(ctx, c.Source, "ping", "-n", "-c1", "-W1", c.Address.String())
	if err != nil {
		out, err = l.Exec(ctx, c.Source, "ping", "-n", "-c1", "-W1", c.Address.String())
	}
	if err != nil {
		c.Error = "no reply"
		if !strings.Contains(string(out), "0 received") {
			c.Error = lastLines(strings.TrimSpace(string(out)), 1)
		}
		return
	}
	c.OK = true
	if m := pingTimeRE.FindStringSubmatch(string(out)); m != nil {
		if ms, err := strconv.ParseFloat(m[1], 64); err == nil {
			c.Latency = time.Duration(ms * float64(time.Millisecond))
		}
	}
}

// probeCells runs one `fabric lab probe` inside src for the cells idx.
func (l *Lab) probeCells(ctx context.Context, binary, src string, cells []ProbeResult, idx []int) {
	args := []string{binary, "lab", "probe", "-o", "json", "--timeout", probeTimeout.String()}
	for _, i := range idx {
		args = append(args, "--"+cells[i].Proto, netip.AddrPortFrom(cells[i].Address, ProbePort).String())
	}
	cmd, err := l.Command(ctx, src, args...)
	var out []byte
	if err == nil {
		// The probe exits 1 when a probe fails; its lines say which.
		out, err = cmd.Output()
	}
	outcomes, perr := parseProbeOutput(out)
	if perr != nil || len(outcomes) != len(idx) {
		why := cmp.Or(perr, err, errors.New("wrong number of results"))
		for _, i := range idx {
			cells[i].Error = fmt.Sprintf("probe on %s: %v", src, why)
		}
		return
	}
	// The probe groups its flags by protocol, so its lines come in another
	// order than the cells: match them by protocol and address.
	byTarget := make(map[string]ProbeOutcome, len(outcomes))
	for _, o := range outcomes {
		byTarget[o.Proto+" "+o.Addr] = o
	}
	for _, i := range idx {
		o, ok := byTarget[cells[i].Proto+" "+netip.AddrPortFrom(cells[i].Address, ProbePort).String()]
		if !ok {
			cells[i].Error = fmt.Sprintf("probe on %s: no result for this target", src)
			continue
		}
		cells[i].OK, cells[i].Latency, cells[i].Error = o.OK, o.Latency, o.Error
	}
}

func parseProbeOutput(out []byte) ([]ProbeOutcome, error) {
	var res []ProbeOutcome
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var o ProbeOutcome
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			return nil, fmt.Errorf("read probe output: %w", err)
		}
		res = append(res, o)
	}
	return res, nil
}

// WriteText prints the report as tables and ends with "N passed, M failed".
func (r CheckReport) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tCHECK\tRESULT\tDETAIL")
	for _, b := range r.Base {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.Cluster, b.Check, passFail(b.OK), b.Detail)
	}
	if len(r.Probes) > 0 {
		fmt.Fprintln(tw, "\nSOURCE\tDESTINATION\tADDRESS\tPROTO\tFAMILY\tRESULT\tLATENCY")
		for _, p := range r.Probes {
			result, latency := passFail(p.OK), "-"
			if p.OK && p.Latency > 0 {
				latency = p.Latency.Round(time.Microsecond).String()
			}
			if !p.OK && p.Error != "" {
				result += ": " + p.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Source, p.Destination, p.Address, p.Proto, p.Family, result, latency)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	_, err := fmt.Fprintf(w, "%d passed, %d failed\n", r.Passed, r.Failed)
	return err
}

func passFail(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}
