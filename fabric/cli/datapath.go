package cli

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newDatapathCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "datapath", Short: "Inspect this node's eBPF datapath"}
	var output string
	ipcache := &cobra.Command{
		Use: "ipcache", Short: "List the IP cache as the kernel holds it", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			entries, err := clientFor(cmd).IPCache(ctx)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), entries)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PREFIX\tIDENTITY\tNODE")
			for _, e := range entries {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", e.Prefix, e.Identity, orNone(e.Node))
			}
			return tw.Flush()
		},
	}
	ipcache.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	identities := &cobra.Command{
		Use: "identities", Short: "Packets delivered per source and destination identity", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			flows, err := clientFor(cmd).IdentityFlows(ctx)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), flows)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SOURCE\tDESTINATION\tPACKETS")
			for _, f := range flows {
				fmt.Fprintf(tw, "%d\t%d\t%d\n", f.Source, f.Destination, f.Packets)
			}
			return tw.Flush()
		},
	}
	identities.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	drops := &cobra.Command{
		Use: "drops", Short: "Dropped packets by reason", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			d, err := clientFor(cmd).Drops(ctx)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), d)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REASON\tPACKETS")
			for _, reason := range slices.Sorted(maps.Keys(d)) {
				fmt.Fprintf(tw, "%s\t%d\n", reason, d[reason])
			}
			return tw.Flush()
		},
	}
	drops.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	services := &cobra.Command{
		Use: "services", Short: "Service frontends and backends as the kernel holds them", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			fes, err := clientFor(cmd).DatapathServices(ctx)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), fes)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FRONTEND\tPROTO\tSCOPE\tMAGLEV\tAFFINITY\tBACKENDS")
			for _, f := range fes {
				scope := "cluster"
				if f.External {
					scope = "external"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", f.Frontend, f.Proto, scope, f.TableSize, orNone(f.Affinity), orNone(strings.Join(f.Backends, ",")))
			}
			return tw.Flush()
		},
	}
	services.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.AddCommand(ipcache, identities, drops, services)
	return cmd
}
