// Package frrtest starts FRR routers and network namespaces for tests and
// removes them when the test ends, also when it fails.
package frrtest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fabric-net/fabric/bgp/frr"
)

// Start runs FRR with conf as bgpd's configuration in netns and stops it at
// the end of the test. It skips the test when not root or when FRR is not
// installed.
func Start(t testing.TB, netns, conf string) *frr.Router {
	t.Helper()
	RequireRoot(t)
	if _, err := os.Stat(filepath.Join(frr.Daemons, "bgpd")); err != nil {
		t.Skip("FRR is not installed (bash .ci/deps.sh installs Debian's frr)")
	}
	// Not t.TempDir: its parents are 0700 and FRR's daemons run as user frr.
	dir, err := os.MkdirTemp("", "fabric-frr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := frr.Start(dir, netns, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("stop frr: %v", err)
		}
	})
	return r
}

// RequireRoot skips the test when it cannot create network namespaces.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces and run FRR")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
}

// Suffix returns a short random string for names unique to one run.
func Suffix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// NetNS creates a network namespace named prefix-<random> with its
// loopback up, and deletes it (and so its links) at the end of the test.
func NetNS(t testing.TB, prefix string) string {
	t.Helper()
	RequireRoot(t)
	name := prefix + "-" + Suffix()
	IP(t, "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	IP(t, "-n", name, "link", "set", "lo", "up")
	return name
}

// Veth links two namespaces with a veth pair created directly inside them
// (never in the machine's own namespace), brings both ends up and assigns
// the given addresses (CIDR form; IPv6 without duplicate detection so they
// are usable at once). Names must be at most 15 bytes.
func Veth(t testing.TB, nsA, ifA string, addrsA []string, nsB, ifB string, addrsB []string) {
	t.Helper()
	IP(t, "link", "add", ifA, "netns", nsA, "type", "veth", "peer", "name", ifB, "netns", nsB)
	for _, side := range []struct {
		ns, dev string
		addrs   []string
	}{{nsA, ifA, addrsA}, {nsB, ifB, addrsB}} {
		for _, a := range side.addrs {
			args := []string{"-n", side.ns, "addr", "add", a, "dev", side.dev}
			if strings.Contains(a, ":") {
				args = append(args, "nodad")
			}
			IP(t, args...)
		}
		IP(t, "-n", side.ns, "link", "set", side.dev, "up")
	}
}

// IP runs ip with args and fails the test on error.
func IP(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}
