package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// cleanup holds what the run must undo, newest first. It runs from the
// normal exit path and from the signal handler, whichever comes first; each
// step runs once.
type cleanup struct {
	running sync.Mutex // held while steps run, so a second run waits for the first
	mu      sync.Mutex
	steps   []func()
}

func newCleanup() *cleanup { return &cleanup{} }

// add registers f and returns a func that runs f now (once) and drops it from
// the list, for things undone before the end of the run.
func (c *cleanup) add(f func()) func() {
	var once sync.Once
	step := func() { once.Do(f) }
	c.mu.Lock()
	c.steps = append(c.steps, step)
	c.mu.Unlock()
	return step
}

func (c *cleanup) run() {
	c.running.Lock()
	defer c.running.Unlock()
	c.mu.Lock()
	steps := c.steps
	c.steps = nil
	c.mu.Unlock()
	for i := len(steps) - 1; i >= 0; i-- {
		steps[i]()
	}
}

// tempDir makes a directory removed at cleanup.
func (c *cleanup) tempDir(pattern string) (string, func(), error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", nil, fmt.Errorf("make temp dir: %w", err)
	}
	return dir, c.add(func() { os.RemoveAll(dir) }), nil
}

// startProcess starts cmd in its own process group with a parent-death
// signal, so that it dies with this program even on SIGKILL, and registers a
// stop that signals its PID (and only it): SIGTERM, then SIGKILL after 3s.
func (c *cleanup) startProcess(cmd *exec.Cmd) (stop func(), err error) {
	stop, _, err = c.startProcessDone(cmd)
	return stop, err
}

// startProcessDone is startProcess that also returns a channel closed when
// the process has exited.
func (c *cleanup) startProcessDone(cmd *exec.Cmd) (stop func(), exited <-chan struct{}, err error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	p := cmd.Process
	return c.add(func() {
		select {
		case <-done:
			return
		default:
		}
		p.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			p.Kill()
			<-done
		}
	}), done, nil
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. They are free
// when returned; the listeners are held until all are picked so the same
// port is not handed out twice.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
