// Package frr runs FRR (zebra and bgpd) inside a network namespace, without
// systemd, as the router that the bgp package's tests and the lab peer with,
// and reads its state back through vtysh. It owns only the daemons it starts:
// they are found and stopped by the pid files in the router's folder.
package frr

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Daemons is where Debian's frr package installs zebra and bgpd.
const Daemons = "/usr/lib/frr"

// ErrNotInstalled is returned by Start when FRR's daemons are missing.
var ErrNotInstalled = errors.New("frr: /usr/lib/frr/bgpd or vtysh not found: install Debian's frr package (bash .ci/deps.sh)")

// Router is a running zebra+bgpd pair.
type Router struct {
	// Dir holds the configuration, pid files and vty sockets.
	Dir   string
	NetNS string
}

// Start writes conf as bgpd's configuration into dir and starts zebra and
// bgpd in netns (which must exist). dir must be reachable by the frr user
// (its daemons drop privileges); Start chowns dir itself, not its parents.
// It returns once bgpd answers on its vty.
func Start(dir, netns, conf string) (*Router, error) {
	if _, err := os.Stat(filepath.Join(Daemons, "bgpd")); err != nil {
		return nil, ErrNotInstalled
	}
	if _, err := exec.LookPath("vtysh"); err != nil {
		return nil, ErrNotInstalled
	}
	uid, gid, err := frrUser()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("frr: create %s: %w", dir, err)
	}
	files := map[string]string{
		"zebra.conf": "hostname zebra\n",
		"bgpd.conf":  conf,
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return nil, fmt.Errorf("frr: write %s: %w", p, err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			return nil, fmt.Errorf("frr: chown %s: %w", p, err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("frr: chmod %s: %w", dir, err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, fmt.Errorf("frr: chown %s to frr: %w", dir, err)
	}
	r := &Router{Dir: dir, NetNS: netns}
	for _, d := range []string{"zebra", "bgpd"} {
		args := []string{"netns", "exec", netns, filepath.Join(Daemons, d),
			"-d", // daemonize: the pid file, not this process, tracks it
			"-f", filepath.Join(dir, d+".conf"),
			"-i", filepath.Join(dir, d+".pid"),
			"-z", filepath.Join(dir, "zserv.api"),
			"--vty_socket", dir,
			"-P", "0", // no vty TCP port: vtysh uses the socket
			"--log", "file:" + filepath.Join(dir, d+".log"),
		}
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			r.Stop()
			return nil, fmt.Errorf("frr: start %s in netns %s: %w: %s", d, netns, err, bytes.TrimSpace(out))
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := r.VTY("show bgp summary json")
		if err == nil {
			return r, nil
		}
		if time.Now().After(deadline) {
			r.Stop()
			return nil, fmt.Errorf("frr: bgpd in netns %s did not answer on its vty within 10s: %w", netns, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func frrUser() (int, int, error) {
	u, err := user.Lookup("frr")
	if err != nil {
		return 0, 0, fmt.Errorf("frr: user frr not found (%w): install Debian's frr package", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// Stop kills the daemons by their pid files (TERM, then KILL after 3s) and
// waits for them to go. It is safe to call twice.
func (r *Router) Stop() error {
	var errs []error
	for _, d := range []string{"bgpd", "zebra"} {
		pid, err := r.PID(d)
		if err != nil {
			continue // never started, or already stopped
		}
		if err := stopPID(pid); err != nil {
			errs = append(errs, fmt.Errorf("frr: stop %s (pid %d): %w", d, pid, err))
		}
		os.Remove(filepath.Join(r.Dir, d+".pid"))
	}
	return errors.Join(errs...)
}

// PID reads a daemon's pid file ("zebra" or "bgpd").
func (r *Router) PID(daemon string) (int, error) {
	b, err := os.ReadFile(filepath.Join(r.Dir, daemon+".pid"))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("frr: bad pid file for %s: %q", daemon, b)
	}
	return pid, nil
}

func stopPID(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return err
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	return nil
}

// VTY runs one vtysh command against this router and returns its output.
func (r *Router) VTY(cmd string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	c := exec.CommandContext(ctx, "vtysh", "--vty_socket", r.Dir, "-c", cmd)
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return out, fmt.Errorf("frr: vtysh -c %q: %w: %s", cmd, err, bytes.TrimSpace(append(stderr.Bytes(), out...)))
	}
	return out, nil
}

// Path is one path FRR holds for a prefix.
type Path struct {
	NextHops  []netip.Addr
	ASPath    string
	Best      bool
	Multipath bool
	Peer      string
}

// Routes returns FRR's BGP table of one address family ("ipv4" or "ipv6"),
// by prefix.
func (r *Router) Routes(afi string) (map[netip.Prefix][]Path, error) {
	out, err := r.VTY("show bgp " + afi + " unicast json")
	if err != nil {
		return nil, err
	}
	return ParseRoutes(out)
}

// ParseRoutes reads the JSON of "show bgp ipv4|ipv6 unicast json".
func ParseRoutes(b []byte) (map[netip.Prefix][]Path, error) {
	var doc struct {
		Routes map[string][]struct {
			Valid     bool   `json:"valid"`
			Best      bool   `json:"bestpath"`
			Multipath bool   `json:"multipath"`
			Path      string `json:"path"`
			PeerID    string `json:"peerId"`
			NextHops  []struct {
				IP string `json:"ip"`
			} `json:"nexthops"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("frr: parse bgp table: %w", err)
	}
	out := make(map[netip.Prefix][]Path, len(doc.Routes))
	for k, paths := range doc.Routes {
		pfx, err := netip.ParsePrefix(k)
		if err != nil {
			return nil, fmt.Errorf("frr: parse bgp table: prefix %q: %w", k, err)
		}
		for _, p := range paths {
			if !p.Valid {
				continue
			}
			fp := Path{ASPath: p.Path, Best: p.Best, Multipath: p.Multipath, Peer: p.PeerID}
			for _, nh := range p.NextHops {
				if a, err := netip.ParseAddr(nh.IP); err == nil {
					fp.NextHops = append(fp.NextHops, a)
				}
			}
			out[pfx] = append(out[pfx], fp)
		}
	}
	return out, nil
}

// Peer is one neighbour in "show bgp summary json".
type Peer struct {
	State  string // "Established", "Active", ...
	PfxRcd uint64 // prefixes received and accepted
}

// Summary returns the neighbours of every address family, by address.
func (r *Router) Summary() (map[string]Peer, error) {
	out, err := r.VTY("show bgp summary json")
	if err != nil {
		return nil, err
	}
	return ParseSummary(out)
}

// ParseSummary reads the JSON of "show bgp summary json": an object of
// address families, each with its peers.
func ParseSummary(b []byte) (map[string]Peer, error) {
	var doc map[string]struct {
		Peers map[string]struct {
			State  string `json:"state"`
			PfxRcd uint64 `json:"pfxRcd"`
		} `json:"peers"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("frr: parse bgp summary: %w", err)
	}
	out := make(map[string]Peer)
	for _, af := range doc {
		for addr, p := range af.Peers {
			prev := out[addr]
			out[addr] = Peer{State: p.State, PfxRcd: prev.PfxRcd + p.PfxRcd}
		}
	}
	return out, nil
}
