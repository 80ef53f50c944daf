package cli

import (
	"context"
	"fmt"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fabric-net/fabric/fabric/api"
)

// newObserveCmd shows the node's flows in the manner of `hubble observe`:
// drops always, forwarded connections by their first packet and their end.
func newObserveCmd() *cobra.Command {
	var (
		f      api.FlowFilter
		follow bool
		output string
	)
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "Show this node's flows: drops with their reason, connections as they start and end",
		Example: "  fabric observe --verdict dropped\n" +
			"  fabric observe --follow --labels org=alliance -o json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q is unknown: use table or json", output)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if !follow {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 15*time.Second)
				defer cancel()
			}
			out := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			if output == "table" {
				fmt.Fprintln(tw, "TIME\tNODE\tSOURCE\tDESTINATION\tPROTO\tEVENT\tVERDICT")
			}
			err := clientFor(cmd).Flows(ctx, f, follow, func(fl api.Flow) error {
				if output == "json" {
					return printJSONLine(out, fl)
				}
				verdict := fl.Verdict
				if fl.Reason != "" {
					verdict += " (" + fl.Reason + ")"
				}
				dest := describePeer(fl.Dest)
				if fl.Service != "" {
					dest = "service " + fl.Service + " → " + dest
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", fl.Time.Local().Format("15:04:05.000"), fl.Node,
					describePeer(fl.Source), dest, fl.Proto, fl.Event, verdict)
				if follow {
					return tw.Flush()
				}
				return nil
			})
			if ferr := tw.Flush(); err == nil {
				err = ferr
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&follow, "follow", "f", false, "keep showing new flows")
	fl.StringVar(&f.Labels, "labels", "", "only flows with an end carrying these labels (k=v,k2=v2)")
	fl.Uint32Var(&f.Identity, "identity", 0, "only flows with an end of this identity")
	fl.StringVar(&f.IP, "ip", "", "only flows with an end at this address")
	fl.Uint16Var(&f.Port, "port", 0, "only flows with an end on this port")
	fl.StringVar(&f.Proto, "protocol", "", "tcp, udp, icmp, icmpv6 or sctp")
	fl.StringVar(&f.Verdict, "verdict", "", "forwarded or dropped")
	fl.StringVarP(&output, "output", "o", "table", "table or json (one object per line)")
	return cmd
}

func describePeer(p api.FlowPeer) string {
	s := p.IP
	if p.Port != 0 {
		s = fmt.Sprintf("%s:%d", p.IP, p.Port)
	}
	switch {
	case p.Endpoint != "":
		s += " (" + p.Endpoint + ")"
	case p.Labels != "":
		s += " (" + p.Labels + ")"
	case p.Identity != 0:
		s += fmt.Sprintf(" (identity %d)", p.Identity)
	}
	return s
}
