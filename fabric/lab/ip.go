package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// ErrNoIproute2 means the `ip` command is missing; the lab drives all
// networking through it.
var ErrNoIproute2 = errors.New("iproute2 `ip` command not found: install iproute2")

// run runs a command and folds its stderr into the error, so a failure says
// which command failed and what it printed.
func run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// ipIn runs `ip -n ns ARGS`. Every link, address and route command of the lab
// goes through here, so none can touch the machine's own namespace.
func ipIn(ns string, args ...string) error {
	if ns == "" {
		// A bug, not a user error: without -n the command would change
		// the host's network.
		panic("lab: ip command without a namespace")
	}
	_, err := run("ip", append([]string{"-n", ns}, args...)...)
	return err
}

// sysctlIn sets a sysctl inside ns; net.* sysctls are per namespace.
func sysctlIn(ns, key, value string) error {
	if ns == "" {
		panic("lab: sysctl without a namespace")
	}
	_, err := run("ip", "netns", "exec", ns, "sysctl", "-q", "-w", key+"="+value)
	return err
}

func addNetns(ns string) error {
	_, err := run("ip", "netns", "add", ns)
	return err
}

func delNetns(ns string) error {
	_, err := run("ip", "netns", "delete", ns)
	return err
}

// listNetns returns the names of all named network namespaces.
func listNetns() ([]string, error) {
	out, err := run("ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		// Lines read "name" or "name (id: 3)".
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}
