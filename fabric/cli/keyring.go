package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/fabric-net/fabric/fabric/api"
)

// newKeyringCmd changes the gossip keyring of one node. A cluster-wide
// rotation is: install the new key on every node, use it on every node,
// remove the old one from every node.
func newKeyringCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keyring",
		Short: "List or change this node's gossip encryption keys",
		Long: "Rotate a cluster's gossip key in three rounds, each on every node:\n" +
			"  fabric keyring install NEW; fabric keyring use NEW; fabric keyring remove OLD",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			kr, err := clientFor(cmd).Keyring(ctx)
			if err != nil {
				return err
			}
			printKeyring(cmd, kr)
			return nil
		},
	}
	for _, op := range []string{"install", "use", "remove"} {
		cmd.AddCommand(&cobra.Command{
			Use:   op + " KEY",
			Short: op + " a gossip key (base64) on this node",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				defer cancel()
				kr, err := clientFor(cmd).ChangeKeyring(ctx, api.KeyringRequest{Op: op, Key: args[0]})
				if err != nil {
					return err
				}
				printKeyring(cmd, kr)
				return nil
			},
		})
	}
	return cmd
}

func printKeyring(cmd *cobra.Command, kr api.Keyring) {
	for _, k := range kr.Keys {
		mark := ""
		if k == kr.Primary {
			mark = " (primary)"
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s%s\n", k, mark)
	}
}
