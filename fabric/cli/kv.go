package cli

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fabric-net/fabric/fabric/api"
)

// newKVCmd is for operators and tests: reading and writing store keys by
// hand, through the local agent and the Raft leader.
func newKVCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "kv", Short: "Read and write store keys (for debugging)"}
	get := &cobra.Command{
		Use: "get KEY", Short: "Print one key's value", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			kv, err := clientFor(cmd).Get(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), kv.Value)
			return nil
		},
	}
	list := &cobra.Command{
		Use: "list PREFIX", Short: "List keys under a prefix", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			kvs, err := clientFor(cmd).List(ctx, args[0])
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tREVISION\tVALUE")
			for _, kv := range kvs {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", kv.Key, kv.ModRevision, kv.Value)
			}
			return tw.Flush()
		},
	}
	var ifRev string
	put := &cobra.Command{
		Use: "put KEY VALUE", Short: "Write a key (with --if-revision: compare-and-set)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.PutRequest{Key: args[0], Value: args[1]}
			if ifRev != "" {
				r, err := strconv.ParseInt(ifRev, 10, 64)
				if err != nil || r < 0 {
					return fmt.Errorf("--if-revision %q: give the key's current revision, or 0 for \"must not exist\"", ifRev)
				}
				req.IfModRevision = &r
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			res, err := clientFor(cmd).Put(ctx, req)
			if err != nil {
				return err
			}
			if !res.Succeeded {
				return fmt.Errorf("not written: %s changed since revision %s (store at revision %d)", args[0], ifRev, res.Revision)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revision %d\n", res.Revision)
			return nil
		},
	}
	put.Flags().StringVar(&ifRev, "if-revision", "", "write only if the key's revision is this (0: only if absent)")
	cmd.AddCommand(get, list, put)
	return cmd
}
