package lab

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// buildTopology creates the namespaces and links of the plan. Every command
// runs inside a lab namespace; veth pairs are created inside one lab
// namespace with the peer placed straight into another, so no interface ever
// appears in the machine's own namespace, even for a moment.
func (l *Lab) buildTopology(ctx context.Context) error {
	st := l.st
	for _, ns := range st.Namespaces {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := addNetns(ns); err != nil {
			return err
		}
		// Addresses must be usable at once: no duplicate address
		// detection, which would hold IPv6 addresses back for seconds.
		for _, key := range []string{"net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"} {
			if err := sysctlIn(ns, key, "0"); err != nil {
				return err
			}
		}
		if err := ipIn(ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	rt := routerNS(st.Name)
	// ECMP spreads flows by their 5-tuple, as a top-of-rack router does,
	// not only by addresses.
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv6.conf.all.forwarding", "1"},
		{"net.ipv4.fib_multipath_hash_policy", "1"}, {"net.ipv6.fib_multipath_hash_policy", "1"}} {
		if err := sysctlIn(rt, kv[0], kv[1]); err != nil {
			return err
		}
	}
	// The outside host, behind the router.
	if slices.Contains(st.Namespaces, extNS(st.Name)) {
		ext := extNS(st.Name)
		if err := ipIn(rt, "link", "add", "ext", "type", "veth", "peer", "name", "eth0", "netns", ext); err != nil {
			return err
		}
		for i, a := range extRouterAddrs() {
			if err := addAddr(rt, "ext", a.String()+"/"+strconv.Itoa(prefixLen(a))); err != nil {
				return err
			}
			if err := addAddr(ext, "eth0", ExtAddrs()[i].String()+"/"+strconv.Itoa(prefixLen(a))); err != nil {
				return err
			}
		}
		for _, ns := range []struct{ ns, dev string }{{rt, "ext"}, {ext, "eth0"}} {
			if err := ipIn(ns.ns, "link", "set", ns.dev, "up"); err != nil {
				return err
			}
		}
		if err := ipIn(ext, "-4", "route", "add", "default", "via", extRouterAddrs()[0].String()); err != nil {
			return err
		}
		if err := ipIn(ext, "-6", "route", "add", "default", "via", extRouterAddrs()[1].String()); err != nil {
			return err
		}
	}
	for c := 1; c <= st.Clusters; c++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		sw := switchNS(st.Name, c)
		// The switch only bridges; it must never route between its
		// ports, which would hide a broken router.
		if err := sysctlIn(sw, "net.ipv4.ip_forward", "0"); err != nil {
			return err
		}
		racks := max(st.Racks, 1)
		for r := 1; r <= racks; r++ {
			br, port, peer := rackBridge(r), rackRouterPort(c, r), "rt"
			if r > 1 {
				peer = fmt.Sprintf("rt%d", r)
			}
			if err := ipIn(sw, "link", "add", br, "type", "bridge", "mcast_snooping", "0"); err != nil {
				return err
			}
			if err := ipIn(sw, "link", "set", br, "up"); err != nil {
				return err
			}
			// Router leg: the rack's port in the router, its peer on the
			// rack's bridge.
			if err := ipIn(rt, "link", "add", port, "type", "veth", "peer", "name", peer, "netns", sw); err != nil {
				return err
			}
			if err := ipIn(sw, "link", "set", peer, "master", br, "up"); err != nil {
				return err
			}
			for _, a := range rackRouterAddrs(c, r) {
				if err := addAddr(rt, port, a.String()+"/"+strconv.Itoa(prefixLen(a))); err != nil {
					return err
				}
			}
			if err := ipIn(rt, "link", "set", port, "up"); err != nil {
				return err
			}
		}
		for i := range st.NodeList {
			n := &st.NodeList[i]
			if n.Cluster != c {
				continue
			}
			if err := ipIn(sw, "link", "add", switchPort(n.Index), "type", "veth", "peer", "name", "eth0", "netns", n.Namespace); err != nil {
				return err
			}
			if err := ipIn(sw, "link", "set", switchPort(n.Index), "master", rackBridge(n.Rack), "up"); err != nil {
				return err
			}
			for _, a := range n.Underlay {
				if err := addAddr(n.Namespace, "eth0", a.String()+"/"+strconv.Itoa(prefixLen(a))); err != nil {
					return err
				}
			}
			if err := ipIn(n.Namespace, "link", "set", "eth0", "up"); err != nil {
				return err
			}
			gw := rackRouterAddrs(c, n.Rack)
			if err := ipIn(n.Namespace, "-4", "route", "add", "default", "via", gw[0].String(), "dev", "eth0"); err != nil {
				return err
			}
			if err := ipIn(n.Namespace, "-6", "route", "add", "default", "via", gw[1].String(), "dev", "eth0"); err != nil {
				return err
			}
		}
		// The cluster's client: a host on the segment, not a node.
		if cl := clientNS(st.Name, c); slices.Contains(st.Namespaces, cl) {
			if err := ipIn(sw, "link", "add", "cl", "type", "veth", "peer", "name", "eth0", "netns", cl); err != nil {
				return err
			}
			if err := ipIn(sw, "link", "set", "cl", "master", "br0", "up"); err != nil {
				return err
			}
			for _, a := range clientAddrs(c) {
				if err := addAddr(cl, "eth0", a.String()+"/"+strconv.Itoa(prefixLen(a))); err != nil {
					return err
				}
			}
			if err := ipIn(cl, "link", "set", "eth0", "up"); err != nil {
				return err
			}
			gw := routerAddrs(c)
			if err := ipIn(cl, "-4", "route", "add", "default", "via", gw[0].String()); err != nil {
				return err
			}
			if err := ipIn(cl, "-6", "route", "add", "default", "via", gw[1].String()); err != nil {
				return err
			}
		}
		fmt.Fprintf(l.log, "lab %s: cluster %s wired (%d nodes on %s)\n", st.Name, clusterName(c), st.Nodes, sw)
	}
	return nil
}

func addAddr(ns, dev, cidr string) error {
	// nodad: the address is usable at once (IPv4 ignores it).
	args := []string{"addr", "add", cidr, "dev", dev}
	if strings.Contains(cidr, ":") {
		args = append(args, "nodad")
	}
	return ipIn(ns, args...)
}
