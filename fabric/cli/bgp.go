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

func newBGPCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bgp",
		Short: "The node's BGP sessions and routes",
		Long: "The agent runs a BGP speaker when its configuration has bgp.localASN and bgp.peers: it announces\n" +
			"the node's pod CIDRs and the load-balancer IPs it serves, and learns routes to other nodes' pods.",
	}
	var output string
	get := func(cmd *cobra.Command) (api.BGPStatus, error) {
		ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
		defer cancel()
		st, err := clientFor(cmd).BGP(ctx)
		if err == nil && st.LocalASN == 0 && len(st.Peers) == 0 {
			err = fmt.Errorf("this node runs no BGP speaker: set bgp.localASN and bgp.peers in its configuration")
		}
		return st, err
	}
	peers := &cobra.Command{
		Use: "peers", Short: "The BGP sessions and their state", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := get(cmd)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), st.Peers)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PEER\tASN\tSTATE\tUPTIME\tRECEIVED\tACCEPTED\tADVERTISED")
			for _, p := range st.Peers {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\n", p.Address, p.ASN, p.State, p.Uptime, p.Received, p.Accepted, p.Advertised)
			}
			return tw.Flush()
		},
	}
	routes := &cobra.Command{
		Use: "routes", Short: "The prefixes announced and the routes learned", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := get(cmd)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), struct {
					Advertised []string       `json:"advertised"`
					Learned    []api.BGPRoute `json:"learned"`
				}{st.Advertised, st.Learned})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DIRECTION\tPREFIX\tNEXT HOP\tAS PATH\tPEER")
			for _, p := range st.Advertised {
				fmt.Fprintf(tw, "announced\t%s\t(self)\t\t\n", p)
			}
			for _, r := range st.Learned {
				path := strings.Trim(fmt.Sprint(r.ASPath), "[]")
				fmt.Fprintf(tw, "learned\t%s\t%s\t%s\t%s\n", r.Prefix, r.NextHop, path, r.Peer)
			}
			return tw.Flush()
		},
	}
	for _, c := range []*cobra.Command{peers, routes} {
		c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	}
	cmd.AddCommand(peers, routes)
	return cmd
}
