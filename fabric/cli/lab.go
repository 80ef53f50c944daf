package cli

import (
	"context"
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
	cmd.AddCommand(newLabUpCmd(), newLabDownCmd(), newLabStatusCmd(), newLabListCmd(), newLabExecCmd())
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
		Example: "  fabric lab up --name dev\n" +
			"  fabric lab up --name mc --clusters 2 --nodes 3",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec.Name, spec.Dir = f.name, f.dir
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
	fmt.Fprintf(w, "\nrun commands in a node with `fabric lab exec --name %s c1-n1 -- fabric status`;\nremove the lab with `fabric lab down --name %s`\n", l.Name(), l.Name())
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

func newLabStatusCmd() *cobra.Command {
	var (
		f      labFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each node of a lab: its agent, the members it sees and the store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := f.load()
			if err != nil {
				return err
			}
			sts := l.Status(cmd.Context())
			switch output {
			case "json":
				return printJSON(cmd.OutOrStdout(), sts)
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
			return tw.Flush()
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
		Short: "Run a command inside a lab node (or the router)",
		Long: "Run a command inside the network namespace of a lab member: a node (c1-n1), the router\n" +
			"(router) or a cluster's switch (c1-sw). Standard input and output pass through, the exit\n" +
			"code is the command's, and FABRIC_SOCKET points at the node's agent.",
		Example: "  fabric lab exec --name dev c1-n1 -- fabric status\n" +
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
