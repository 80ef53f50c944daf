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

func newLBPoolCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lb-pool",
		Short: "Apply, list and delete load-balancer IP pools",
		Long: "Load-balancer IP pools are written as Cilium's CiliumLoadBalancerIPPool YAML (cilium.io/v2alpha1).\n" +
			"Services of type LoadBalancer get their addresses from the pools that select them; an address is\n" +
			"never given to two services (but those sharing a key), and a requested one is honoured when free.",
	}
	apply := newApplyCmd("Store the pools of a YAML file, replacing pools of the same name", "pools",
		func(ctx context.Context, cmd *cobra.Command, data []byte) error {
			infos, err := clientFor(cmd).ApplyLBPools(ctx, data)
			if err != nil {
				return err
			}
			for _, p := range infos {
				fmt.Fprintf(cmd.OutOrStdout(), "pool %s applied: %s\n", p.Name, strings.Join(p.Blocks, ","))
			}
			return nil
		})
	var output string
	get := &cobra.Command{
		Use: "get", Short: "List the pools with their used and free addresses", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			infos, err := clientFor(cmd).LBPools(ctx)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), infos)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tBLOCKS\tUSED\tFREE\tSTATE")
			for _, p := range infos {
				state := "enabled"
				switch {
				case p.Gone:
					state = "removed (addresses still assigned)"
				case p.Disabled:
					state = "disabled"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", p.Name, strings.Join(p.Blocks, ","), p.Used, p.Free, state)
			}
			return tw.Flush()
		},
	}
	get.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	del := newDeleteByNameCmd("Delete a pool (its addresses stay with their services)", "pool", (*api.Client).DeleteLBPool)
	cmd.AddCommand(apply, get, del)
	return cmd
}
