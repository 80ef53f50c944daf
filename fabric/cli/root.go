// Package cli is the fabric command line: the agent, the commands that talk
// to a running agent over its local API, and the lab. It parses and prints;
// the work happens in the packages it calls.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/fabric-net/fabric/fabric/agent"
	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/config"
)

// Main runs the command line and returns the process exit code.
func Main(args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	return 0
}

// exitError ends the process with a code and nothing more printed, for
// commands whose output already says what failed.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "fabric",
		Short:         "Fabric: a multi-cluster network fabric",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       agent.Version,
	}
	root.PersistentFlags().String("socket", "", "agent API socket (default $FABRIC_SOCKET or "+api.DefaultSocket+")")
	root.AddCommand(newAgentCmd(), newStatusCmd(), newKeygenCmd(), newKVCmd(), newKeyringCmd(),
		newEndpointCmd(), newLabCmd(), newCNICmd(), newDatapathCmd(), newPolicyCmd(), newServiceCmd(), newLBPoolCmd(), newL2Cmd(), newBGPCmd(), newObserveCmd())
	return root
}

func clientFor(cmd *cobra.Command) *api.Client {
	sock, _ := cmd.Flags().GetString("socket")
	if sock == "" {
		sock = api.SocketFromEnv()
	}
	return api.NewClient(sock)
}

// printJSONLine writes v as one line of JSON, for streams.
func printJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newAgentCmd() *cobra.Command {
	cfg := config.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent",
		Long: "Run the node agent. Configuration comes from a YAML file (--config), FABRIC_* environment\n" +
			"variables (FABRIC_ plus the flag name, e.g. FABRIC_CLUSTER_ID) and flags, in rising precedence.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			final, err := config.Load(cmd.Flags(), nil)
			if err != nil {
				return err
			}
			if err := final.Validate(); err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			log := agent.NewLogger(os.Stderr, final.LogLevel, final.LogFormat)
			a, err := agent.New(final, log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			select {
			case err := <-done:
				return err
			case <-ctx.Done():
			}
			// A second signal, or a shutdown that takes too long, ends the
			// process anyway: an operator's kill must always work.
			select {
			case err := <-done:
				log.Info("agent stopped")
				return err
			case <-time.After(final.ShutdownWait):
				return fmt.Errorf("shutdown took longer than %s", final.ShutdownWait)
			}
		},
	}
	config.Register(cmd.Flags(), &cfg)
	return cmd
}

func newKeygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new random gossip encryption key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := agent.NewKey()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), k)
			return nil
		},
	}
}
