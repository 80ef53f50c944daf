package cli

import (
	"github.com/spf13/cobra"

	"github.com/fabric-net/fabric/fabric/cni"
)

// newCNICmd is `fabric cni`: the CNI plugin, for runtimes that cannot run
// the "fabric-cni" link. It is hidden because a person never runs it; its
// input is the CNI_* environment and the network config on stdin, so flag
// parsing is off and arguments are ignored.
func newCNICmd() *cobra.Command {
	return &cobra.Command{
		Use:                "cni",
		Short:              "Run the CNI plugin (as a container runtime does)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// cni.Main has printed the spec's error JSON already.
			if code := cni.Main(); code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
}
