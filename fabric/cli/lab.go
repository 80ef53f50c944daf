package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fabric-net/fabric/fabric/lab"
)

func newLabCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a small fabric world on this machine, in network namespaces",
		Long: "The lab builds clusters of nodes as network namespaces on this machine (like kind does for\n" +
			"Kubernetes), runs a real agent in each node, and removes all of it again. It needs root and\n" +
			"iproute2, and never changes the machine's own network namespace.",
	}
	cmd.AddCommand(newLabUpCmd(), newLabDownCmd(), newLabRestartCmd(), newLabStatusCmd(), newLabListCmd(), newLabExecCmd(),
		newLabWorkloadCmd(), newLabCheckCmd(), newLabDemoCmd(), newLabProbeServeCmd(), newLabProbeCmd())
	return cmd
}

// labFlags are the flags every lab command that names a lab takes.
type labFlags struct {
	name, dir string
}

func (f *labFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.name, "name", "", "lab name: 1-12 lowercase letters, digits or '-' (required)")
	cmd.Flags().StringVar(&f.dir, "dir", lab.DefaultDir, "directory holding the labs' state, configs and logs")
	_ = cmd.MarkFlagRequired("name")
}

func (f *labFlags) load() (*lab.Lab, error) {
	l, err := lab.Load(f.name, f.dir)
	if lab.IsNotExist(err) {
		return nil, fmt.Errorf("no lab %q: start one with `fabric lab up --name %s` (see `fabric lab list`)", f.name, f.name)
	}
	return l, err
}

func newLabUpCmd() *cobra.Command {
	var (
		f    labFlags
		spec lab.Spec
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Build a lab and wait until every agent is ready",
		Long: "Build a lab, start an agent in every node, wait until every agent is ready, then attach\n" +
			"--workloads workloads to every node through the CNI plugin (`fabric cni`). Workload i of node\n" +
			"c<c>-n<k> is called c<c>-n<k>-w<i>, lives in namespace fl-<lab>-c<c>n<k>w<i> and has the labels\n" +
			"app=w<i>,node=c<c>-n<k>. With --mode none the agents run no datapath and there are no workloads.",
		Example: "  fabric lab up --name dev\n" +
			"  fabric lab up --name mc --clusters 2 --nodes 3 --mode geneve\n" +
			"  fabric lab up --name cp --mode none",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec.Name, spec.Dir = f.name, f.dir
			// Workloads need a datapath and agents; only an explicit
			// --workloads makes that an error.
			if !cmd.Flags().Changed("workloads") && (spec.Mode == "none" || spec.NoAgents) {
				spec.Workloads = 0
			}
			// Ctrl-C stops the wait, not the lab: it stays for `down`.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			l, err := lab.Up(ctx, spec, cmd.ErrOrStderr())
			if err != nil {
				if l != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "%v\n\nthe lab is left up for inspection (`fabric lab status --name %s`, logs in %s/%s/*/agent.log);\nremove it with: fabric lab down --name %s\n",
						err, f.name, f.dir, f.name, f.name)
					return &exitError{code: 1}
				}
				return err
			}
			labPrintSummary(cmd.OutOrStdout(), l, l.Status(cmd.Context()))
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().IntVar(&spec.Clusters, "clusters", 1, "number of clusters")
	cmd.Flags().IntVar(&spec.Nodes, "nodes", 3, "nodes per cluster")
	cmd.Flags().IntVar(&spec.Servers, "servers", 0, "Raft servers per cluster, odd (default min(3, nodes))")
	cmd.Flags().StringVar(&spec.Binary, "binary", "", "fabric binary the agents run (default this one)")
	cmd.Flags().DurationVar(&spec.Timeout, "timeout", 90*time.Second, "how long to wait for the agents to be ready")
	cmd.Flags().BoolVar(&spec.NoAgents, "no-agents", false, "build only the namespaces and links")
	cmd.Flags().StringVar(&spec.Mode, "mode", "vxlan", "datapath mode of the agents: "+strings.Join(lab.Modes, ", ")+" (none: control plane only)")
	cmd.Flags().IntVar(&spec.Workloads, "workloads", 2, "workloads per node, attached through the CNI plugin")
	cmd.Flags().IntVar(&spec.Racks, "racks", 1, "segments (subnets) per cluster behind the router; node k is in rack (k-1)%racks+1")
	cmd.Flags().BoolVar(&spec.BGP, "bgp", false, "run FRR as the router and a BGP speaker in every agent")
	return cmd
}

// labPrintSummary prints each cluster's nodes after `up`.
func labPrintSummary(w io.Writer, l *lab.Lab, sts []lab.NodeStatus) {
	spec := l.Spec()
	fmt.Fprintf(w, "lab %s is up: %d cluster(s) of %d node(s), router in namespace fl-%s-rt\n", l.Name(), spec.Clusters, spec.Nodes, l.Name())
	cluster := ""
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range sts {
		if s.Cluster != cluster {
			cluster = s.Cluster
			fmt.Fprintf(tw, "\ncluster %s\n  NODE\tUNDERLAY\tROLE\tSTORE\tLEADER\n", cluster)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", s.Node, s.Underlay, labRole(s.Server), labOr(s.StoreRole, "-"), labOr(s.Leader, "-"))
	}
	tw.Flush()
	if ws := l.Workloads(); len(ws) > 0 {
		fmt.Fprintln(w)
		labPrintWorkloads(w, ws)
		fmt.Fprintf(w, "\ncheck connectivity with `fabric lab check --name %s`;", l.Name())
	}
	fmt.Fprintf(w, "\nrun commands in a node or workload with `fabric lab exec --name %s c1-n1 -- fabric status`;\nremove the lab with `fabric lab down --name %s`\n", l.Name(), l.Name())
}

func labPrintWorkloads(w io.Writer, ws []lab.Workload) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKLOAD\tNODE\tNAMESPACE\tIPS\tLABELS\tPROBE")
	for _, wl := range ws {
		var ips []string
		for _, a := range wl.IPs {
			ips = append(ips, a.String())
		}
		probe := "down"
		if wl.ProbePID != 0 {
			probe = fmt.Sprint(wl.ProbePID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", wl.Name, wl.Node, wl.Namespace, labOr(strings.Join(ips, ","), "-"), labOr(wl.Labels, "-"), probe)
	}
	tw.Flush()
}

func labRole(server bool) string {
	if server {
		return "server"
	}
	return "client"
}

func labOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func newLabDownCmd() *cobra.Command {
	var f labFlags
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop a lab's agents and remove its namespaces and files",
		Long: "Stop a lab's agents and remove its namespaces and files. It works from the lab's state file\n" +
			"and a sweep for leftover namespaces, so it also cleans up after a crashed `up`; running it\n" +
			"twice is harmless.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Remove(f.name, f.dir, cmd.ErrOrStderr())
		},
	}
	f.register(cmd)
	return cmd
}

func newLabRestartCmd() *cobra.Command {
	var (
		f    labFlags
		kill bool
	)
	cmd := &cobra.Command{
		Use:   "restart NODE",
		Short: "Restart a node's agent (--kill: with SIGKILL, as a crash would)",
		Long: "Restart a node's agent. With --kill the agent gets SIGKILL, as in a crash; workloads keep\n" +
			"their traffic flowing meanwhile through the datapath's pinned programs and maps.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := f.load()
			if err != nil {
				return err
			}
			sig := syscall.SIGTERM
			if kill {
				sig = syscall.SIGKILL
			}
			if l.Running(args[0]) {
				if err := l.Kill(args[0], sig); err != nil {
					return err
				}
				// SIGTERM: wait for the clean shutdown to finish.
				for deadline := time.Now().Add(10 * time.Second); l.Running(args[0]); {
					if time.Now().After(deadline) {
						return fmt.Errorf("agent of %s did not stop within 10s", args[0])
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			if err := l.Start(args[0]); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 60*time.Second)
			defer cancel()
			if err := l.WaitReady(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "agent of %s restarted (pid %d)\n", args[0], l.PID(args[0]))
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&kill, "kill", false, "stop the agent with SIGKILL instead of SIGTERM")
	return cmd
}

func newLabStatusCmd() *cobra.Command {
	var (
		f      labFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each node of a lab (its agent, the members it sees, the store) and its workloads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := f.load()
			if err != nil {
				return err
			}
			sts, ws := l.Status(cmd.Context()), l.Workloads()
			switch output {
			case "json":
				return printJSON(cmd.OutOrStdout(), struct {
					Nodes     []lab.NodeStatus `json:"nodes"`
					Workloads []lab.Workload   `json:"workloads"`
				}{sts, ws})
			case "table", "":
			default:
				return fmt.Errorf("-o %q is unknown: use table or json", output)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tNAMESPACE\tUNDERLAY\tROLE\tPID\tMEMBERS\tSTORE\tLEADER\tERROR")
			for _, s := range sts {
				pid := "down"
				if s.Running {
					pid = fmt.Sprint(s.PID)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Node, s.Namespace, s.Underlay, labRole(s.Server), pid,
					labOr(s.MemberSummary(), "-"), labOr(s.StoreRole, "-"), labOr(s.Leader, "-"), s.Error)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(ws) > 0 {
				fmt.Fprintln(cmd.OutOrStdout())
				labPrintWorkloads(cmd.OutOrStdout(), ws)
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newLabListCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the labs on this machine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			names, err := lab.List(dir)
			if err != nil {
				return err
			}
			if len(names) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "no labs in %s\n", dir)
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCLUSTERS\tNODES\tAGENTS RUNNING")
			for _, name := range names {
				l, err := lab.Load(name, dir)
				if err != nil {
					fmt.Fprintf(tw, "%s\t?\t?\t%v\n", name, err)
					continue
				}
				spec, nodes, running := l.Spec(), l.Nodes(), 0
				for _, n := range nodes {
					if l.Running(n.Name) {
						running++
					}
				}
				agents := fmt.Sprintf("%d/%d", running, len(nodes))
				if spec.NoAgents {
					agents = "none"
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", name, spec.Clusters, spec.Nodes, agents)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&dir, "dir", lab.DefaultDir, "directory holding the labs' state, configs and logs")
	return cmd
}

func newLabExecCmd() *cobra.Command {
	var f labFlags
	cmd := &cobra.Command{
		Use:   "exec --name NAME MEMBER [--] COMMAND [ARG...]",
		Short: "Run a command inside a lab node, workload or the router",
		Long: "Run a command inside the network namespace of a lab member: a node (c1-n1), a workload\n" +
			"(c1-n1-w1), the router (router) or a cluster's switch (c1-sw). Standard input and output pass\n" +
			"through, the exit code is the command's, and in a node FABRIC_SOCKET points at its agent.",
		Example: "  fabric lab exec --name dev c1-n1 -- fabric status\n" +
			"  fabric lab exec --name dev c1-n1-w1 -- ping -c1 10.201.2.2\n" +
			"  fabric lab exec --name dev router -- ip route",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			// With flag parsing stopped at MEMBER, a `--` after it is
			// still in args.
			if args[1] == "--" {
				args = append(args[:1], args[2:]...)
			}
			if len(args) < 2 {
				return errors.New("no command: use `fabric lab exec --name NAME MEMBER -- COMMAND [ARG...]`")
			}
			l, err := f.load()
			if err != nil {
				return err
			}
			// Without a context: the command must not be killed when ours
			// is interrupted; it gets the terminal's signals itself.
			c, err := l.Command(context.Background(), args[0], args[1:]...)
			if err != nil {
				return err
			}
			c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
			// Ctrl-C reaches the command through the terminal; we only
			// wait for it to end.
			signal.Ignore(os.Interrupt, syscall.SIGQUIT)
			defer signal.Reset(os.Interrupt, syscall.SIGQUIT)
			err = c.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code := ee.ExitCode()
				if code < 0 {
					code = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
				}
				return &exitError{code: code}
			}
			if err != nil {
				return fmt.Errorf("exec %s on %s: %w", strings.Join(args[1:], " "), args[0], err)
			}
			return nil
		},
	}
	f.register(cmd)
	// Flags after MEMBER belong to the command, so `--` is optional.
	cmd.Flags().SetInterspersed(false)
	return cmd
}

func newLabWorkloadCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workload",
		Short: "Add, remove and list a lab's workloads",
		Long: "A workload is a network namespace attached to a node by the CNI plugin (`fabric cni`, run\n" +
			"inside the node's namespace and talking to its agent), with a probe server inside it that\n" +
			"`fabric lab check` sends traffic to.",
	}
	cmd.AddCommand(newLabWorkloadAddCmd(), newLabWorkloadDelCmd(), newLabWorkloadListCmd())
	return cmd
}

func newLabWorkloadAddCmd() *cobra.Command {
	var (
		f            labFlags
		node, labels string
	)
	cmd := &cobra.Command{
		Use:   "add --name NAME --node NODE [--labels k=v,...] [WORKLOAD]",
		Short: "Attach a new workload to a node through the CNI plugin",
		Long: "Attach a new workload to a node through the CNI plugin. Without WORKLOAD it is called\n" +
			"c<c>-n<k>-w<i> after the first free index on the node; its labels are exactly --labels.",
		Example: "  fabric lab workload add --name dev --node c1-n2 --labels app=web web-1",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := f.load()
			if err != nil {
				return err
			}
			l.SetLog(cmd.ErrOrStderr())
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			w, err := l.AddWorkload(cmd.Context(), node, name, labels)
			if err != nil {
				return err
			}
			labPrintWorkloads(cmd.OutOrStdout(), []lab.Workload{w})
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&node, "node", "", "node to attach the workload to, e.g. c1-n2 (required)")
	cmd.Flags().StringVar(&labels, "labels", "", "the workload's labels: k=v,k2=v2")
	_ = cmd.MarkFlagRequired("node")
	return cmd
}

func newLabWorkloadDelCmd() *cobra.Command {
	var f labFlags
	cmd := &cobra.Command{
		Use:     "del --name NAME WORKLOAD",
		Short:   "Detach a workload (CNI DEL) and delete its namespace",
		Example: "  fabric lab workload del --name dev web-1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := f.load()
			if err != nil {
				return err
			}
			return l.DelWorkload(cmd.Context(), args[0])
		},
	}
	f.register(cmd)
	return cmd
}

func newLabWorkloadListCmd() *cobra.Command {
	var (
		f      labFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "list --name NAME",
		Short: "List a lab's workloads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := f.load()
			if err != nil {
				return err
			}
			switch output {
			case "json":
				return printJSON(cmd.OutOrStdout(), l.Workloads())
			case "table", "":
				labPrintWorkloads(cmd.OutOrStdout(), l.Workloads())
				return nil
			}
			return fmt.Errorf("-o %q is unknown: use table or json", output)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newLabCheckCmd() *cobra.Command {
	var (
		f      labFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "check --name NAME",
		Short: "Check a lab: its clusters, and traffic between its workloads",
		Long: "Check a lab. Per cluster: every node sees every member alive, all agree on one store\n" +
			"leader, every node has pod CIDRs and no two share one, and with workloads there are\n" +
			"identities. Then, from inside every workload, ICMP (ping), TCP and UDP to every other workload\n" +
			"of the same cluster, over IPv4 and IPv6. Traffic between clusters is not checked yet (no mesh).\n" +
			"The exit status is 1 when anything failed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "json" && output != "table" && output != "" {
				return fmt.Errorf("-o %q is unknown: use table or json", output)
			}
			l, err := f.load()
			if err != nil {
				return err
			}
			r, err := l.Check(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				err = printJSON(cmd.OutOrStdout(), r)
			} else {
				err = r.WriteText(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			if !r.OK() {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// newLabProbeServeCmd is the probe server the lab runs in every workload.
func newLabProbeServeCmd() *cobra.Command {
	var (
		tcp, udp  int
		readyFile string
	)
	cmd := &cobra.Command{
		Use:    "probe-serve --tcp PORT --udp PORT [--ready-file PATH]",
		Short:  "Echo probes on TCP and UDP (run by the lab inside each workload)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return lab.ServeProbe(ctx, tcp, udp, readyFile)
		},
	}
	cmd.Flags().IntVar(&tcp, "tcp", lab.ProbePort, "TCP port (0: none)")
	cmd.Flags().IntVar(&udp, "udp", lab.ProbePort, "UDP port (0: none)")
	cmd.Flags().StringVar(&readyFile, "ready-file", "", "file to create once listening")
	return cmd
}

// newLabProbeCmd sends probes to probe servers; the check runs it inside
// the source workload.
func newLabProbeCmd() *cobra.Command {
	var (
		tcp, udp  []string
		timeout   time.Duration
		output    string
		who       int
		hold      time.Duration
		every     time.Duration
		streamFor time.Duration
	)
	cmd := &cobra.Command{
		Use:   "probe (--tcp ADDR:PORT | --udp ADDR:PORT)... [--timeout 1s] [-o json]",
		Short: "Send a nonce to probe servers and wait for it to come back",
		Long: "Send a nonce to each probe server and wait for it to come back; all at once. Prints one\n" +
			"line per probe (JSON lines with -o json); the exit status is 1 when any probe failed.",
		Example: "  fabric lab exec --name dev c1-n1-w1 -- fabric lab probe --tcp 10.201.2.2:7777 --udp [fd00:201::2]:7777",
		Hidden:  true,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if every > 0 {
				if len(udp) != 1 || len(tcp) != 0 {
					return errors.New("--every: give exactly one --udp ADDR:PORT")
				}
				res, err := lab.ProbeStream(cmd.Context(), udp[0], every, streamFor)
				if err != nil {
					return err
				}
				if output == "json" {
					return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "sent %d, answered %d, longest gap %s\n", res.Sent, res.Received, res.MaxGap.Round(time.Millisecond))
				return nil
			}
			if who > 0 {
				if len(tcp) != 1 || len(udp) != 0 {
					return errors.New("--who: give exactly one --tcp ADDR:PORT")
				}
				res := lab.ProbeWho(cmd.Context(), tcp[0], who, hold, timeout)
				failed := false
				for _, r := range res {
					failed = failed || r.Error != ""
					if output == "json" {
						if err := json.NewEncoder(cmd.OutOrStdout()).Encode(r); err != nil {
							return err
						}
						continue
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s\n", labOr(r.Server, "-"), labOr(r.Again, "-"), r.Error)
				}
				if failed {
					return &exitError{code: 1}
				}
				return nil
			}
			var targets []lab.ProbeTarget
			for _, a := range tcp {
				targets = append(targets, lab.ProbeTarget{Proto: "tcp", Addr: a})
			}
			for _, a := range udp {
				targets = append(targets, lab.ProbeTarget{Proto: "udp", Addr: a})
			}
			if len(targets) == 0 {
				return errors.New("nothing to probe: give --tcp ADDR:PORT or --udp ADDR:PORT")
			}
			failed := false
			for _, o := range lab.ProbeAll(cmd.Context(), targets, timeout) {
				failed = failed || !o.OK
				if output == "json" {
					if err := json.NewEncoder(cmd.OutOrStdout()).Encode(o); err != nil {
						return err
					}
					continue
				}
				if o.OK {
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s ok %s\n", o.Proto, o.Addr, o.Latency.Round(time.Microsecond))
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s FAIL %s\n", o.Proto, o.Addr, o.Error)
				}
			}
			if failed {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&tcp, "tcp", nil, "TCP probe server ADDR:PORT (repeatable)")
	cmd.Flags().StringArrayVar(&udp, "udp", nil, "UDP probe server ADDR:PORT (repeatable)")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Second, "how long to wait for each echo")
	cmd.Flags().IntVar(&who, "who", 0, "open this many TCP connections and report which server address answered each")
	cmd.Flags().DurationVar(&hold, "hold", 0, "with --who: keep each connection this long and ask again")
	cmd.Flags().DurationVar(&every, "every", 0, "send a UDP probe this often and report the longest time without an answer")
	cmd.Flags().DurationVar(&streamFor, "for", 5*time.Second, "with --every: how long to keep sending")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json (one object per line)")
	return cmd
}

func newLabDemoCmd() *cobra.Command {
	var (
		f      labFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "demo --name NAME",
		Short: "Show a service, a policy and load-balancer IPs at work in cluster c1",
		Long: "Rebuild Cilium's deathstar demo in cluster c1 through the agents' API: a deathstar service of\n" +
			"type LoadBalancer, an L3/L4 policy that lets the tiefighter (org=empire) land and turns the xwing\n" +
			"(org=alliance) away, and the deathstar's load-balancer IP reached from outside the cluster: by the\n" +
			"host behind the router over BGP (labs made with --bgp) and by the segment's client over L2\n" +
			"announcements. What it applies stays in place; the exit status is 1 when a step failed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := f.load()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Minute)
			defer cancel()
			rep, err := l.Demo(ctx)
			if output == "json" {
				if jerr := printJSON(cmd.OutOrStdout(), rep); jerr != nil {
					return jerr
				}
			} else if werr := rep.WriteText(cmd.OutOrStdout()); werr != nil {
				return werr
			}
			if err != nil {
				return err
			}
			if !rep.OK() {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}
