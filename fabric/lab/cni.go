package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The lab attaches workloads the way a container runtime does: it runs the
// real plugin (`fabric cni`) inside the node's namespace with the CNI
// environment and a network config on stdin, and reads the result.

// cniTimeout bounds one plugin call.
const cniTimeout = 30 * time.Second

// cniVersion is the CNI spec version the lab speaks.
const cniVersion = "1.0.0"

type cniLabel struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// cniNetConf is the network config the plugin reads on stdin.
type cniNetConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	// Socket is the node agent's local API.
	Socket string `json:"socket"`
	Args   struct {
		CNI struct {
			Labels []cniLabel `json:"labels,omitempty"`
		} `json:"cni"`
	} `json:"args"`
}

// cniResult is the part of a CNI 1.0.0 result the lab reads; an error
// result has Code and Msg instead.
type cniResult struct {
	CNIVersion string `json:"cniVersion"`
	IPs        []struct {
		Address string `json:"address"`
	} `json:"ips"`
	Code    int    `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details"`
}

// cniNetConfFor builds the stdin config for a workload on the node whose
// agent listens on socket.
func cniNetConfFor(socket, labels string) ([]byte, error) {
	c := cniNetConf{CNIVersion: cniVersion, Name: "fabric", Type: "fabric-cni", Socket: socket}
	ls, err := parseLabels(labels)
	if err != nil {
		return nil, err
	}
	c.Args.CNI.Labels = ls
	return json.Marshal(c)
}

// parseLabels splits "k=v,k2=v2" into CNI labels, in order.
func parseLabels(s string) ([]cniLabel, error) {
	var out []cniLabel
	for kv := range strings.SplitSeq(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q is not key=value (e.g. app=web)", kv)
		}
		out = append(out, cniLabel{Key: k, Value: v})
	}
	return out, nil
}

// parseCNIResult reads the plugin's stdout: the workload's addresses on
// success, the plugin's own message on failure.
func parseCNIResult(out []byte) ([]netip.Addr, error) {
	var r cniResult
	if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil {
		return nil, fmt.Errorf("plugin printed no CNI result (%w): %q", err, truncate(string(out), 300))
	}
	if r.Code != 0 || r.Msg != "" {
		msg := fmt.Sprintf("plugin error %d: %s", r.Code, r.Msg)
		if r.Details != "" {
			msg += " (" + r.Details + ")"
		}
		return nil, errors.New(msg)
	}
	var ips []netip.Addr
	for _, ip := range r.IPs {
		p, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			return nil, fmt.Errorf("plugin result: address %q: %w", ip.Address, err)
		}
		ips = append(ips, p.Addr())
	}
	if len(ips) == 0 {
		return nil, errors.New("plugin result has no addresses")
	}
	return ips, nil
}

// cniCall runs the plugin with command (ADD or DEL) for workload w on node
// n and returns its stdout.
func cniCall(ctx context.Context, binary, command string, n *nodeState, w *workloadState) ([]byte, error) {
	conf, err := cniNetConfFor(n.Socket, w.Labels)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.Namespace, binary, "cni")
	cmd.Env = append(withoutCNIEnv(os.Environ()),
		"CNI_COMMAND="+command,
		"CNI_CONTAINERID="+w.Name,
		"CNI_NETNS=/var/run/netns/"+w.Namespace,
		"CNI_IFNAME=eth0",
		"CNI_PATH="+filepath.Dir(binary),
	)
	cmd.Stdin = bytes.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if err != nil {
		// The plugin's error JSON on stdout says more than its exit code.
		if _, perr := parseCNIResult(stdout.Bytes()); perr != nil && stdout.Len() > 0 {
			err = perr
		}
		if s := strings.TrimSpace(stderr.String()); s != "" {
			err = fmt.Errorf("%w; stderr: %s", err, truncate(s, 500))
		}
		return stdout.Bytes(), fmt.Errorf("CNI %s of %s on %s: %w", command, w.Name, n.Name, err)
	}
	return stdout.Bytes(), nil
}

// withoutCNIEnv drops CNI_* variables of our own environment so that only
// the ones the lab sets reach the plugin.
func withoutCNIEnv(env []string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, "CNI_") {
			out = append(out, e)
		}
	}
	return out
}

// HasCNI reports whether binary has the CNI plugin subcommand, by the exit
// status of `binary cni --help`.
func HasCNI(binary string) bool {
	cmd := exec.Command(binary, "cni", "--help")
	cmd.Env = withoutCNIEnv(os.Environ())
	return cmd.Run() == nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
