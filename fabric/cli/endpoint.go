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

func newEndpointCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "endpoint", Short: "Allocate, release and list endpoints on this node"}
	var labels, output string
	var all bool
	add := &cobra.Command{
		Use: "add ID", Short: "Allocate addresses and an identity for endpoint ID", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 20*time.Second)
			defer cancel()
			ep, err := clientFor(cmd).CreateEndpoint(ctx, api.EndpointRequest{ID: args[0], Labels: labels})
			if err != nil {
				return err
			}
			return printEndpoints(cmd, []api.Endpoint{ep}, output)
		},
	}
	add.Flags().StringVar(&labels, "labels", "", "labels, k=v,k2=v2")
	add.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	del := &cobra.Command{
		Use: "del ID", Short: "Release endpoint ID (succeeds if unknown)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 20*time.Second)
			defer cancel()
			return clientFor(cmd).DeleteEndpoint(ctx, args[0])
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List endpoints (this node's, or --all)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			eps, err := clientFor(cmd).Endpoints(ctx, all)
			if err != nil {
				return err
			}
			return printEndpoints(cmd, eps, output)
		},
	}
	list.Flags().BoolVar(&all, "all", false, "every node's endpoints")
	list.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.AddCommand(add, del, list)
	return cmd
}

func printEndpoints(cmd *cobra.Command, eps []api.Endpoint, output string) error {
	if output == "json" {
		return printJSON(cmd.OutOrStdout(), eps)
	}
	if output != "table" {
		return fmt.Errorf("-o %q is unknown: use table or json", output)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tNODE\tIPS\tIDENTITY\tLABELS")
	for _, ep := range eps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", ep.ID, ep.Node, strings.Join(ep.IPs, ","), ep.Identity, ep.Labels)
	}
	return tw.Flush()
}
