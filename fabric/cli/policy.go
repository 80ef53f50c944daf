package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/policy"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Apply, list, delete and trace network policies",
		Long: "Network policies are written as Cilium's CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy\n" +
			"(cilium.io/v2) or Kubernetes NetworkPolicy (networking.k8s.io/v1) YAML, and enforced on identities.",
	}
	cmd.AddCommand(newPolicyApplyCmd(), newPolicyGetCmd(), newPolicyDeleteCmd(), newPolicyTraceCmd())
	return cmd
}

func readInput(path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("-f: give a YAML file, or - for standard input")
	}
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

// newApplyCmd is the `apply -f FILE` of one kind of object: it reads the
// file (or standard input), hands it to apply with a deadline, and apply
// stores it through the agent and says what it did.
func newApplyCmd(short, what string, apply func(ctx context.Context, cmd *cobra.Command, data []byte) error) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use: "apply -f FILE", Short: short, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := readInput(file)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			return apply(ctx, cmd, data)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML file with one or more "+what+" (- for stdin)")
	return cmd
}

// newDeleteByNameCmd is the `delete NAME` of one kind of object named
// what ("pool"): del (a Client method) removes it through the agent.
func newDeleteByNameCmd(short, what string, del func(c *api.Client, ctx context.Context, name string) error) *cobra.Command {
	return &cobra.Command{
		Use: "delete NAME", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			if err := del(clientFor(cmd), ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s deleted\n", what, args[0])
			return nil
		},
	}
}

func newPolicyApplyCmd() *cobra.Command {
	return newApplyCmd("Store the policies of a YAML file (all of them or none)", "policies",
		func(ctx context.Context, cmd *cobra.Command, data []byte) error {
			infos, err := clientFor(cmd).ApplyPolicies(ctx, data)
			if err != nil {
				return err
			}
			for _, p := range infos {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s applied (%d rules)\n", p.Kind, qualified(p.Namespace, p.Name), p.Rules)
				for _, w := range p.Warnings {
					fmt.Fprintf(cmd.ErrOrStderr(), "  warning: %s\n", w)
				}
			}
			return nil
		})
}

func qualified(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

func newPolicyGetCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use: "get", Short: "List the stored policies", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			infos, err := clientFor(cmd).Policies(ctx)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				return printJSON(cmd.OutOrStdout(), infos)
			case "yaml":
				for i, p := range infos {
					if i > 0 {
						fmt.Fprintln(cmd.OutOrStdout(), "---")
					}
					fmt.Fprint(cmd.OutOrStdout(), p.YAML)
				}
				return nil
			case "table":
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KIND\tNAME\tRULES\tWARNINGS")
				for _, p := range infos {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", p.Kind, qualified(p.Namespace, p.Name), p.Rules, len(p.Warnings))
				}
				return tw.Flush()
			}
			return fmt.Errorf("-o %q is unknown: use table, yaml or json", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table, yaml or json")
	return cmd
}

func newPolicyDeleteCmd() *cobra.Command {
	var file, namespace string
	cmd := &cobra.Command{
		Use:   "delete (KIND NAME | -f FILE)",
		Short: "Delete a policy by kind and name, or every policy of a YAML file",
		RunE: func(cmd *cobra.Command, args []string) error {
			type ref struct{ kind, ns, name string }
			var refs []ref
			switch {
			case file != "" && len(args) == 0:
				data, err := readInput(file)
				if err != nil {
					return err
				}
				pols, err := policy.Parse(data)
				if err != nil {
					return err
				}
				for _, p := range pols {
					refs = append(refs, ref{p.Kind, p.Namespace, p.Name})
				}
			case file == "" && len(args) == 2:
				refs = append(refs, ref{args[0], namespace, args[1]})
			default:
				return fmt.Errorf("give KIND NAME (e.g. CiliumNetworkPolicy rule1 -n default) or -f FILE")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			for _, r := range refs {
				if err := clientFor(cmd).DeletePolicy(ctx, r.kind, r.ns, r.name); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s deleted\n", r.kind, qualified(r.ns, r.name))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML file whose policies to delete")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of a namespaced policy (ignored for clusterwide ones)")
	return cmd
}

func newPolicyTraceCmd() *cobra.Command {
	var (
		req    api.TraceRequest
		output string
	)
	cmd := &cobra.Command{
		Use:   "trace",
		Short: "Tell whether traffic between two label sets (or endpoints) is allowed, and by which rule",
		Example: "  fabric policy trace --from org=empire,class=tiefighter --to org=empire,class=deathstar --dport 80\n" +
			"  fabric policy trace --from-endpoint c1-n1-w1:eth0 --to-endpoint c1-n2-w1:eth0 --dport 7777 --proto udp",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			res, err := clientFor(cmd).TracePolicy(ctx, req)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), res)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Verdict: %s\n", strings.ToUpper(res.Verdict))
			fmt.Fprintf(out, "  egress of the source:       %s\n", describeDirection(res.Egress))
			fmt.Fprintf(out, "  ingress of the destination: %s\n", describeDirection(res.Ingress))
			if res.DecidingRule != "" {
				fmt.Fprintf(out, "Deciding rule: %s\n", res.DecidingRule)
			}
			fmt.Fprintf(out, "Reason: %s\n", res.Reason)
			if res.Verdict != "allow" {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.From.Labels, "from", "", "source labels, k=v,k2=v2")
	f.StringVar(&req.From.Endpoint, "from-endpoint", "", "source endpoint ID (or node/ID)")
	f.Uint32Var(&req.From.Identity, "from-identity", 0, "source identity")
	f.StringVar(&req.To.Labels, "to", "", "destination labels, k=v,k2=v2")
	f.StringVar(&req.To.Endpoint, "to-endpoint", "", "destination endpoint ID (or node/ID)")
	f.Uint32Var(&req.To.Identity, "to-identity", 0, "destination identity")
	f.Uint16Var(&req.Port, "dport", 0, "destination port (the ICMP type for icmp)")
	f.StringVar(&req.Proto, "proto", "tcp", "tcp, udp, sctp, icmp, icmpv6 or any")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func describeDirection(d api.DirectionTrace) string {
	s := d.Verdict
	if !d.Enforced {
		s += " (not enforced)"
	}
	if d.Rule != "" {
		s += " by " + d.Rule
	}
	if d.Reason != "" {
		s += ": " + d.Reason
	}
	return s
}
