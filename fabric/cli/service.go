package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/service"
)

func newServiceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Apply, list and delete services",
		Long: "Services are written as Kubernetes Service YAML (apiVersion v1, kind Service): ClusterIP, NodePort or\n" +
			"LoadBalancer, with a label selector that picks the backends among the cluster's endpoints.\n" +
			"Cluster IPs and node ports are allocated through the store; the datapath balances with Maglev.",
	}
	cmd.AddCommand(newServiceApplyCmd(), newServiceGetCmd(), newServiceDeleteCmd())
	return cmd
}

func newServiceApplyCmd() *cobra.Command {
	return newApplyCmd("Store the services of a YAML file (all of them or none)", "services",
		func(ctx context.Context, cmd *cobra.Command, data []byte) error {
			infos, err := clientFor(cmd).ApplyServices(ctx, data)
			if err != nil {
				return err
			}
			for _, s := range infos {
				fmt.Fprintf(cmd.OutOrStdout(), "service %s/%s applied: %s %s %s", s.Namespace, s.Name, s.Type, s.ClusterIP, portsString(s.Ports))
				if len(s.LoadBalancerIPs) > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), " load-balancer %s", strings.Join(s.LoadBalancerIPs, ","))
				}
				fmt.Fprintln(cmd.OutOrStdout())
				for _, c := range s.Conditions {
					fmt.Fprintf(cmd.ErrOrStderr(), "  %s\n", c)
				}
			}
			return nil
		})
}

func portsString(ps []api.ServicePort) string {
	var parts []string
	for _, p := range ps {
		s := strconv.Itoa(int(p.Port))
		if p.NodePort != 0 {
			s += ":" + strconv.Itoa(int(p.NodePort))
		}
		parts = append(parts, s+"/"+p.Protocol)
	}
	return strings.Join(parts, ",")
}

func newServiceGetCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use: "get [NAMESPACE/NAME]", Short: "List the services, with the backends this node uses", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			infos, err := clientFor(cmd).Services(ctx)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				var one []api.ServiceInfo
				for _, s := range infos {
					if s.Namespace+"/"+s.Name == args[0] || (!strings.Contains(args[0], "/") && s.Name == args[0]) {
						one = append(one, s)
					}
				}
				if len(one) == 0 {
					return fmt.Errorf("no service %s: see fabric service get", args[0])
				}
				infos = one
			}
			switch output {
			case "json":
				return printJSON(cmd.OutOrStdout(), infos)
			case "wide", "table":
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprint(tw, "NAME\tTYPE\tCLUSTER-IP\tEXTERNAL-IP\tPORT(S)\tBACKENDS")
				if output == "wide" {
					fmt.Fprint(tw, "\tSELECTOR\tAFFINITY")
				}
				fmt.Fprintln(tw)
				for _, s := range infos {
					ext := strings.Join(append(append([]string{}, s.LoadBalancerIPs...), s.ExternalIPs...), ",")
					if ext == "" && s.Type == "LoadBalancer" {
						ext = "<pending>"
					} else if ext == "" {
						ext = "<none>"
					}
					var bs []string
					for _, b := range s.Backends {
						bs = append(bs, b.Addr)
					}
					backends := strings.Join(bs, ",")
					if backends == "" {
						backends = "<none>"
					}
					fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%s\t%s", s.Namespace, s.Name, s.Type, s.ClusterIP, ext, portsString(s.Ports), backends)
					if output == "wide" {
						fmt.Fprintf(tw, "\t%s\t%s", s.Selector, s.Affinity)
					}
					fmt.Fprintln(tw)
				}
				return tw.Flush()
			}
			return fmt.Errorf("-o %q is unknown: use table, wide or json", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table, wide or json")
	return cmd
}

func newServiceDeleteCmd() *cobra.Command {
	var file, namespace string
	cmd := &cobra.Command{
		Use:   "delete (NAME | -f FILE)",
		Short: "Delete a service by name, or every service of a YAML file",
		RunE: func(cmd *cobra.Command, args []string) error {
			type ref struct{ ns, name string }
			var refs []ref
			switch {
			case file != "" && len(args) == 0:
				data, err := readInput(file)
				if err != nil {
					return err
				}
				svcs, err := service.Parse(data)
				if err != nil {
					return err
				}
				for _, s := range svcs {
					refs = append(refs, ref{s.Namespace, s.Name})
				}
			case file == "" && len(args) == 1:
				ns, name, ok := strings.Cut(args[0], "/")
				if !ok {
					ns, name = namespace, args[0]
				}
				refs = append(refs, ref{ns, name})
			default:
				return fmt.Errorf("give NAME (with -n NAMESPACE, or as NAMESPACE/NAME) or -f FILE")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			for _, r := range refs {
				if err := clientFor(cmd).DeleteService(ctx, r.ns, r.name); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "service %s/%s deleted\n", r.ns, r.name)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML file whose services to delete (- for stdin)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "the service's namespace")
	return cmd
}
