// Package labtest starts labs from tests: it builds the fabric binary once
// per test process, skips when the machine cannot run a lab, and always
// removes the lab when the test ends, printing the agents' logs first when
// the test failed.
package labtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/fabric-net/fabric/fabric/lab"
)

const binaryPkg = "github.com/fabric-net/fabric/fabric/cmd/fabric"

var build struct {
	once sync.Once
	path string
	err  error
}

// BinaryEnv names a prebuilt fabric binary for Binary to return instead of
// building one, e.g. to run the lab tests against a wrapper or a release.
const BinaryEnv = "FABRIC_LABTEST_BINARY"

// Binary returns the path of a fabric binary built from this checkout, once
// per test process (or $FABRIC_LABTEST_BINARY when set).
func Binary(tb testing.TB) string {
	tb.Helper()
	build.once.Do(func() {
		if p := os.Getenv(BinaryEnv); p != "" {
			build.path = p
			return
		}
		root, err := ModuleRoot()
		if err != nil {
			build.err = err
			return
		}
		dir, err := os.MkdirTemp("", "fabric-labtest-")
		if err != nil {
			build.err = fmt.Errorf("make build dir: %w", err)
			return
		}
		path := filepath.Join(dir, "fabric")
		cmd := exec.Command("go", "build", "-o", path, binaryPkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build %s: %w\n%s", binaryPkg, err, out)
			return
		}
		build.path = path
	})
	if build.err != nil {
		tb.Fatalf("build fabric: %v", build.err)
	}
	return build.path
}

// ModuleRoot finds the module root by walking up from the working directory
// to the first go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Available says why this machine cannot run a lab, or nil if it can.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("not running as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return lab.ErrNoIproute2
	}
	return nil
}

// SkipUnlessAvailable skips the test when the machine cannot run a lab.
func SkipUnlessAvailable(tb testing.TB) {
	tb.Helper()
	if err := Available(); err != nil {
		tb.Skipf("needs root and iproute2: %v", err)
	}
}

// Name returns a fresh short lab name ("t" and 6 hex digits).
func Name() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

// New builds a lab for the test and removes it when the test ends, whatever
// the outcome. spec.Name is replaced by a unique name and, unless the lab
// has no agents or spec.Binary is set, the agents run a binary built from
// this checkout. It skips when not root or without iproute2.
func New(tb testing.TB, spec lab.Spec) *lab.Lab {
	tb.Helper()
	SkipUnlessAvailable(tb)
	spec.Name = Name()
	if !spec.NoAgents && spec.Binary == "" {
		spec.Binary = Binary(tb)
	}
	spec = spec.WithDefaults()
	// Registered before Up so even a half-built lab goes away; Remove
	// works from the state file and a namespace sweep, not from l.
	tb.Cleanup(func() {
		if tb.Failed() {
			DumpLogs(tb, spec.Name, spec.Dir)
		}
		if err := lab.Remove(spec.Name, spec.Dir, logWriter{tb}); err != nil {
			tb.Errorf("remove lab %s: %v", spec.Name, err)
		}
	})
	l, err := lab.Up(context.Background(), spec, logWriter{tb})
	if err != nil {
		tb.Fatalf("lab up: %v", err)
	}
	return l
}

// DumpLogs logs the tail of every agent.log of the lab.
func DumpLogs(tb testing.TB, name, dir string) {
	tb.Helper()
	l, err := lab.Load(name, dir)
	if err != nil {
		tb.Logf("lab %s: no logs: %v", name, err)
		return
	}
	if l.Spec().NoAgents {
		return
	}
	for _, n := range l.Nodes() {
		tb.Logf("lab %s: last lines of %s/agent.log:\n%s", name, n.Dir, l.LogTail(n.Name, 50))
	}
}

// logWriter sends the lab's progress lines to the test log.
type logWriter struct{ tb testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(string(trimNewline(p)))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	if n := len(p); n > 0 && p[n-1] == '\n' {
		return p[:n-1]
	}
	return p
}

// SkipUnlessCNI skips the test when binary has no CNI plugin subcommand
// (`fabric cni --help` fails), so workload tests wait for the plugin
// rather than fail. It does not skip when the plugin exists but does not
// work: that is a failure for the test to report.
func SkipUnlessCNI(tb testing.TB, binary string) {
	tb.Helper()
	if !lab.HasCNI(binary) {
		tb.Skipf("%s has no `cni` subcommand yet (`fabric cni --help` fails): workloads need the CNI plugin", binary)
	}
}
