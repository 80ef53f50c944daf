package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fabric-net/fabric/fabric/api"
)

func newL2Cmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "l2",
		Short: "L2 announcements: which node answers ARP/NDP for load-balancer IPs",
		Long: "Policies are written as Cilium's CiliumL2AnnouncementPolicy YAML (cilium.io/v2alpha1). For every\n" +
			"load-balancer or external IP a policy selects, exactly one alive, eligible node answers ARP and NDP,\n" +
			"chosen by hashing over the members gossip reports; agents need l2Announcements: true.",
	}
	apply := newApplyCmd("Store the L2 announcement policies of a YAML file", "policies",
		func(ctx context.Context, cmd *cobra.Command, data []byte) error {
			infos, err := clientFor(cmd).ApplyL2Policies(ctx, data)
			if err != nil {
				return err
			}
			for _, p := range infos {
				fmt.Fprintf(cmd.OutOrStdout(), "L2 announcement policy %s applied\n", p.Name)
			}
			return nil
		})
	get := &cobra.Command{
		Use: "get", Short: "List the L2 announcement policies", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			infos, err := clientFor(cmd).L2Policies(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tINTERFACES\tLB-IPS\tEXTERNAL-IPS")
			for _, p := range infos {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%v\n", p.Name, strings.Join(p.Interfaces, ","), p.LoadBalancerIPs, p.ExternalIPs)
			}
			return tw.Flush()
		},
	}
	del := newDeleteByNameCmd("Delete an L2 announcement policy", "L2 announcement policy", (*api.Client).DeleteL2Policy)
	var output string
	status := &cobra.Command{
		Use: "status", Short: "The addresses this node answers ARP/NDP for", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			st, err := clientFor(cmd).L2Status(ctx)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), st)
			}
			if !st.Enabled {
				fmt.Fprintln(cmd.OutOrStdout(), "L2 announcements are off on this node (agent option l2Announcements)")
				return nil
			}
			for _, o := range st.Owned {
				fmt.Fprintf(cmd.OutOrStdout(), "%s on %s\n", o.IP, strings.Join(o.Interfaces, ","))
			}
			if len(st.LinksDown) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "links down: %s\n", strings.Join(st.LinksDown, ","))
			}
			if st.Error != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "error: %s\n", st.Error)
			}
			return nil
		},
	}
	status.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	cmd.AddCommand(apply, get, del, status)
	return cmd
}
