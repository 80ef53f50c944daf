package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// runID keeps the namespaces and labs of concurrent runs apart.
var runID = func() string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

// ipCmd runs iproute2's ip and returns its output; the error carries the
// command line and what ip said.
func ipCmd(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ipScript runs each line of ip arguments in order and stops at the first
// failure.
func ipScript(lines ...[]string) error {
	for _, l := range lines {
		if _, err := ipCmd(l...); err != nil {
			return err
		}
	}
	return nil
}

// newNetNS creates the named network namespace with its loopback up and
// registers its deletion (which removes every link inside). Names carry
// runID, so they never collide with another run's, or the lab's (fl-…).
func (c *cleanup) newNetNS(short string) (string, error) {
	name := fmt.Sprintf("fbb%s-%s", runID, short)
	if _, err := ipCmd("netns", "add", name); err != nil {
		return "", err
	}
	c.add(func() { _, _ = ipCmd("netns", "del", name) })
	if _, err := ipCmd("-n", name, "link", "set", "lo", "up"); err != nil {
		return "", err
	}
	return name, nil
}

// nsThread runs functions on one OS thread inside a network namespace. The
// thread never returns to the scheduler (Go ends it with its goroutine), so
// no other goroutine ever runs in the namespace, nor this one outside it.
type nsThread struct {
	work chan func()
}

func startNSThread(ns string) (*nsThread, error) {
	t := &nsThread{work: make(chan func())}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		errc <- nil
		for fn := range t.work {
			fn()
		}
	}()
	if err := <-errc; err != nil {
		return nil, err
	}
	return t, nil
}

// do runs fn on the namespace's thread and waits for it.
func (t *nsThread) do(fn func() error) error {
	errc := make(chan error, 1)
	t.work <- func() { errc <- fn() }
	return <-errc
}

// stop ends the thread.
func (t *nsThread) stop() { close(t.work) }
