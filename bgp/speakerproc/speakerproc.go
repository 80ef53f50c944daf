// Package speakerproc runs a bgp.Speaker as a child process inside a network
// namespace and drives it over stdin/stdout. gobgp runs in goroutines that
// migrate between threads, so a speaker cannot be moved into a namespace
// in-process; tests and benchmarks instead re-execute their own binary with
// "ip netns exec", and the child calls Main.
//
// Protocol: the parent writes one command per line ("advertise FILE" where
// FILE holds a JSON []bgp.Advertisement, "peers", "routes", "quit"); the child
// answers each with one JSON line {"reply": ...} or {"error": "..."}, and
// writes {"event": "routes", "routes": [...]} lines whenever its learned
// routes change.
package speakerproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fabric-net/fabric/bgp"
)

// EnvChild set to "1" tells a binary to run Main instead of its usual work;
// EnvConfig carries the speaker's bgp.Config as JSON.
const (
	EnvChild  = "FABRIC_BGP_CHILD"
	EnvConfig = "FABRIC_BGP_CONFIG"
)

// IsChild reports whether this process was started by Start.
func IsChild() bool { return os.Getenv(EnvChild) == "1" }

// message is one line from the child.
type message struct {
	Reply  json.RawMessage `json:"reply,omitempty"`
	Error  string          `json:"error,omitempty"`
	Event  string          `json:"event,omitempty"`
	Routes []bgp.Route     `json:"routes,omitempty"`
}

// Main runs the child side until "quit" or the end of stdin and returns the
// exit code. Logs go to stderr.
func Main() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := serve(os.Stdin, os.Stdout, log); err != nil {
		log.Error("bgp child failed", "err", err)
		return 1
	}
	return 0
}

func serve(in io.Reader, out io.Writer, log *slog.Logger) error {
	var cfg bgp.Config
	if err := json.Unmarshal([]byte(os.Getenv(EnvConfig)), &cfg); err != nil {
		return fmt.Errorf("parse %s: %w", EnvConfig, err)
	}
	sp, err := bgp.New(cfg, log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := sp.Start(ctx); err != nil {
		return err
	}
	defer sp.Close()

	var mu sync.Mutex
	enc := json.NewEncoder(out)
	send := func(m message) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(m)
	}
	if err := sp.WatchRoutes(ctx, func(rs []bgp.Route) {
		if rs == nil {
			rs = []bgp.Route{}
		}
		send(message{Event: "routes", Routes: rs})
	}); err != nil {
		return err
	}
	reply := func(v any, err error) {
		if err != nil {
			send(message{Error: err.Error()})
			return
		}
		b, _ := json.Marshal(v)
		send(message{Reply: b})
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		switch cmd {
		case "advertise":
			b, err := os.ReadFile(arg)
			if err != nil {
				reply(nil, err)
				continue
			}
			var advs []bgp.Advertisement
			if err := json.Unmarshal(b, &advs); err != nil {
				reply(nil, fmt.Errorf("parse %s: %w", arg, err))
				continue
			}
			start := time.Now()
			err = sp.Advertise(advs)
			reply(time.Since(start), err)
		case "peers":
			reply(sp.Peers(), nil)
		case "routes":
			reply(sp.Routes(), nil)
		case "quit":
			reply("bye", nil)
			return nil
		case "":
		default:
			reply(nil, fmt.Errorf("unknown command %q: use advertise FILE, peers, routes or quit", cmd))
		}
	}
	return sc.Err()
}

// Proc is the parent's handle on a child speaker.
type Proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	dir   string

	replies chan message
	exited  chan struct{}

	mu     sync.Mutex
	routes []bgp.Route
	seen   bool // a routes event arrived
	cond   chan struct{}
}

// Start runs exe (usually the current binary, os.Args[0]) with args inside
// netns as a child speaker with cfg. dir is a scratch folder for
// advertisement files; stderr receives the child's logs.
func Start(netns, exe string, args []string, cfg bgp.Config, dir string, stderr io.Writer) (*Proc, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("speakerproc: encode config: %w", err)
	}
	exe, err = filepath.Abs(exe)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns, exe}, args...)...)
	cmd.Env = append(os.Environ(), EnvChild+"=1", EnvConfig+"="+string(b))
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("speakerproc: start in netns %s: %w", netns, err)
	}
	p := &Proc{cmd: cmd, stdin: stdin, dir: dir, replies: make(chan message, 1), exited: make(chan struct{}), cond: make(chan struct{})}
	go p.read(stdout)
	return p, nil
}

func (p *Proc) read(r io.Reader) {
	defer close(p.exited)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	for sc.Scan() {
		var m message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue // a stray line from a library; not ours
		}
		if m.Event == "routes" {
			p.mu.Lock()
			p.routes, p.seen = m.Routes, true
			close(p.cond)
			p.cond = make(chan struct{})
			p.mu.Unlock()
			continue
		}
		p.replies <- m
	}
}

// PID is the child's process ID ("ip netns exec" execs it in place).
func (p *Proc) PID() int { return p.cmd.Process.Pid }

func (p *Proc) call(cmd string, v any) error {
	if _, err := fmt.Fprintln(p.stdin, cmd); err != nil {
		return fmt.Errorf("speakerproc: send %q: %w", cmd, err)
	}
	select {
	case m := <-p.replies:
		if m.Error != "" {
			return fmt.Errorf("speakerproc: %s: %s", cmd, m.Error)
		}
		if v != nil {
			return json.Unmarshal(m.Reply, v)
		}
		return nil
	case <-p.exited:
		return fmt.Errorf("speakerproc: %s: child exited", cmd)
	}
}

// Advertise hands the child the whole set to announce and returns how long
// the child's Speaker.Advertise took.
func (p *Proc) Advertise(advs []bgp.Advertisement) (time.Duration, error) {
	b, err := json.Marshal(advs)
	if err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(p.dir, "adv-*.json")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return 0, err
	}
	f.Close()
	var d time.Duration
	err = p.call("advertise "+f.Name(), &d)
	return d, err
}

// Peers returns the child's Speaker.Peers.
func (p *Proc) Peers() ([]bgp.PeerStatus, error) {
	var out []bgp.PeerStatus
	return out, p.call("peers", &out)
}

// Routes returns the child's Speaker.Routes.
func (p *Proc) Routes() ([]bgp.Route, error) {
	var out []bgp.Route
	return out, p.call("routes", &out)
}

// WaitWatched waits until the routes reported by the child's WatchRoutes
// satisfy ok, and returns them.
func (p *Proc) WaitWatched(ctx context.Context, ok func([]bgp.Route) bool) ([]bgp.Route, error) {
	for {
		p.mu.Lock()
		rs, seen, cond := p.routes, p.seen, p.cond
		p.mu.Unlock()
		if seen && ok(rs) {
			return rs, nil
		}
		select {
		case <-cond:
		case <-p.exited:
			return rs, errors.New("speakerproc: child exited")
		case <-ctx.Done():
			return rs, ctx.Err()
		}
	}
}

// WaitEstablished waits until every peer of the child is established.
func (p *Proc) WaitEstablished(ctx context.Context) error {
	for {
		peers, err := p.Peers()
		if err != nil {
			return err
		}
		up := len(peers) > 0
		for _, ps := range peers {
			up = up && ps.State == "established"
		}
		if up {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("speakerproc: peers not established: %+v: %w", peers, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill ends the child with SIGKILL, as a node's death would, and reaps it.
func (p *Proc) Kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

// Quit asks the child to close its sessions and exit; it is killed if it
// has not exited within 5s.
func (p *Proc) Quit() error {
	done := make(chan error, 1)
	go func() { done <- p.call("quit", nil) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	p.stdin.Close()
	t := time.AfterFunc(5*time.Second, func() { p.cmd.Process.Signal(syscall.SIGKILL) })
	defer t.Stop()
	return p.cmd.Wait()
}
