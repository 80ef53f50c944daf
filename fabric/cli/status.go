package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fabric-net/fabric/fabric/api"
)

func newStatusCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this node, its cluster's members, the store and IPAM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			st, err := clientFor(cmd).Status(ctx)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				return printJSON(cmd.OutOrStdout(), st)
			case "table", "":
				printStatus(cmd.OutOrStdout(), st)
				return nil
			default:
				return fmt.Errorf("-o %q is unknown: use table or json", output)
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func printStatus(out io.Writer, st api.Status) {
	n := st.Node
	health := "ok"
	if !st.Health.OK {
		var bad []string
		for name, v := range st.Health.Checks {
			if v != "ok" {
				bad = append(bad, name+": "+v)
			}
		}
		sort.Strings(bad)
		health = "DEGRADED\n  " + strings.Join(bad, "\n  ")
	}
	fmt.Fprintf(out, "Node:       %s (cluster %s, id %d) %s\n", n.Name, n.Cluster, n.ClusterID, strings.Join(n.Roles, ","))
	fmt.Fprintf(out, "Underlay:   %s\n", strings.Join(n.Underlay, ", "))
	fmt.Fprintf(out, "Pod CIDRs:  %s\n", strings.Join(n.PodCIDRs, ", "))
	fmt.Fprintf(out, "Version:    %s, up %s\n", n.Version, time.Since(n.StartedAt).Round(time.Second))
	fmt.Fprintf(out, "Health:     %s\n", health)
	s := st.Store
	fmt.Fprintf(out, "Store:      %s, leader %s, term %d, commit %d, applied %d, revision %d\n",
		s.Role, orNone(s.Leader), s.Term, s.CommitIndex, s.AppliedIndex, s.Revision)
	if s.Error != "" {
		fmt.Fprintf(out, "            %s\n", s.Error)
	}
	fmt.Fprintf(out, "Identities: %d   Endpoints: %d\n", st.Identities, st.Endpoints)
	dp := st.Datapath
	if dp.Mode == "none" || dp.Mode == "" {
		fmt.Fprintf(out, "Datapath:   none (control plane only)\n\n")
	} else {
		fmt.Fprintf(out, "Datapath:   %s, workload MTU %d, %d local endpoints, %d ipcache entries, %d service frontends\n", dp.Mode, dp.MTU, dp.Endpoints, dp.IPCache, dp.Services)
		if dp.Error != "" {
			fmt.Fprintf(out, "            last apply failed: %s\n", dp.Error)
		}
		fmt.Fprintln(out)
	}
	if b := st.BGP; b != nil {
		fmt.Fprintf(out, "BGP:        AS %d, %d/%d sessions established, %d prefixes announced, %d learned\n",
			b.LocalASN, b.Established, len(b.Peers), len(b.Advertised), len(b.Learned))
		for _, p := range b.Peers {
			fmt.Fprintf(out, "            %s AS %d %s\n", p.Address, p.ASN, p.State)
		}
		fmt.Fprintln(out)
	}

	cidrs := map[string]string{}
	for _, nc := range st.NodeCIDRs {
		cidrs[nc.Node] = strings.Join(nc.CIDRs, ",")
	}
	voter := map[string]string{}
	for _, sv := range s.Servers {
		role := "voter"
		if !sv.Voter {
			role = "nonvoter"
		}
		if sv.ID == s.Leader {
			role = "leader"
		}
		voter[sv.ID] = role
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tADDRESS\tSTATE\tSINCE\tSTORE\tPOD CIDRS")
	for _, m := range st.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Addr, m.State,
			time.Since(m.Since).Round(time.Second), orNone(voter[m.Name]), orNone(cidrs[m.Name]))
	}
	tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
