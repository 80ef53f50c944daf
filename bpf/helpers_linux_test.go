//go:build linux

package bpf

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// runID keeps the namespaces of concurrent test runs apart.
var runID = func() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

// requireRoot skips tests that create namespaces, links and BPF objects.
func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces and loads eBPF programs")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("needs iproute2's ip to build network namespaces")
	}
}

// newPinDir mounts a private bpffs for one test and returns a node folder
// inside it; the mount goes away with the test, and with it every pin.
func newPinDir(tb testing.TB) string {
	tb.Helper()
	requireRoot(tb)
	dir := tb.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		tb.Skipf("cannot mount a bpffs at %s: %v", dir, err)
	}
	tb.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return filepath.Join(dir, "node")
}

// newNetNS creates a named network namespace unique to this run and
// deletes it (with every link inside) when the test ends.
func newNetNS(tb testing.TB, short string) string {
	tb.Helper()
	name := fmt.Sprintf("fbt%s-%s", runID, short)
	mustRun(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	mustRun(tb, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

func mustRun(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ipn runs ip inside namespace ns.
func ipn(tb testing.TB, ns string, args ...string) string {
	tb.Helper()
	return mustRun(tb, "ip", append([]string{"-n", ns}, args...)...)
}

// nsExec runs a command inside namespace ns.
func nsExec(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

// inNS runs fn on an OS thread inside namespace ns. The thread is never
// given back to the scheduler (Go ends it with the goroutine), so no other
// goroutine can end up in the test namespace, nor this one outside.
func inNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// csum is the Internet checksum of b folded into sum.
func csum(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
