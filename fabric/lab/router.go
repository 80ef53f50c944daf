package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fabric-net/fabric/bgp/frr"
)

// A BGP lab's router is FRR (zebra and bgpd from Debian's package) in the
// router namespace, started without systemd from the lab's own folder, so
// that `lab down` finds its daemons by their command lines even after a
// crash. It peers with every node on the node's rack subnet, in both
// families, and spreads traffic to an address several nodes announce over
// all of them (ECMP across per-node AS numbers needs multipath-relax).

// routerConf is bgpd's configuration for st.
func routerConf(st *state) string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults traditional\nhostname %s-router\n!\nrouter bgp %d\n", st.Name, RouterASN)
	fmt.Fprintf(&b, " bgp router-id %s\n", extRouterAddrs()[0])
	b.WriteString(" no bgp ebgp-requires-policy\n no bgp network import-check\n bgp bestpath as-path multipath-relax\n")
	var v6 []string
	for _, n := range st.NodeList {
		asn := NodeASN(n.Cluster, n.Index)
		for _, a := range n.Underlay {
			fmt.Fprintf(&b, " neighbor %s remote-as %d\n neighbor %s timers 3 9\n neighbor %s timers connect 1\n", a, asn, a, a)
			if a.Is6() {
				v6 = append(v6, a.String())
			}
		}
	}
	b.WriteString(" address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\n")
	b.WriteString(" address-family ipv6 unicast\n  maximum-paths 8\n")
	for _, a := range v6 {
		fmt.Fprintf(&b, "  neighbor %s activate\n", a)
	}
	b.WriteString(" exit-address-family\n!\n")
	return b.String()
}

// startRouter starts FRR in the router namespace. FRR's daemons run as the
// frr user, which must be able to reach the router folder: the lab folders
// above it become traversable (mode 0711), not readable.
func startRouter(st *state) error {
	for _, d := range []string{filepath.Dir(labDir(st.Dir, st.Name)), labDir(st.Dir, st.Name)} {
		if err := os.Chmod(d, 0o711); err != nil {
			return fmt.Errorf("router: let FRR reach %s: %w", d, err)
		}
	}
	if _, err := frr.Start(st.RouterDir, routerNS(st.Name), routerConf(st)); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	return nil
}

// isRouterDaemon matches the command line of the lab's FRR daemons: their
// configuration lives in the lab's router folder.
func isRouterDaemon(labDir string) func(string) bool {
	return func(a string) bool {
		return strings.HasPrefix(a, labDir+"/router/") && strings.HasSuffix(a, ".conf")
	}
}

// stopRouter stops the lab's FRR daemons, found by their command lines.
func stopRouter(labDir string) (bool, error) {
	pids := strayProcs(isRouterDaemon(labDir))
	if len(pids) == 0 {
		return false, nil
	}
	return true, stopProcs(isRouterDaemon(labDir), "FRR daemon", pids, 3*time.Second)
}

// RouterVTY runs one vtysh command on a BGP lab's router.
func (l *Lab) RouterVTY(cmd string) ([]byte, error) {
	l.mu.Lock()
	st := l.st
	l.mu.Unlock()
	if !st.BGP {
		return nil, fmt.Errorf("lab %s runs no FRR router: make it with --bgp", st.Name)
	}
	r := &frr.Router{Dir: st.RouterDir, NetNS: routerNS(st.Name)}
	return r.VTY(cmd)
}

// RouterRoutes returns the router's BGP table of one family ("ipv4" or
// "ipv6").
func (l *Lab) RouterRoutes(afi string) (map[string][]frr.Path, error) {
	l.mu.Lock()
	st := l.st
	l.mu.Unlock()
	r := &frr.Router{Dir: st.RouterDir, NetNS: routerNS(st.Name)}
	m, err := r.Routes(afi)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]frr.Path, len(m))
	for p, paths := range m {
		out[p.String()] = paths
	}
	return out, nil
}
