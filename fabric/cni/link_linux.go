//go:build linux

package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/fabric-net/fabric/fabric/api"
)

// The netlink calls go through handles bound to a namespace rather than
// through the calling thread's namespace, so they hit the right one however
// goroutines move between threads. Only the sysctl write needs the thread
// inside the workload's namespace (ns.Do).

// checkNetns says why path is not a network namespace, or nil.
func checkNetns(path string) error {
	n, err := ns.GetNS(path)
	if err != nil {
		return err
	}
	return n.Close()
}

// nodeHandle is a netlink handle on the namespace the plugin runs in: the
// node's, where the host-side veth lives.
func nodeHandle() (*netlink.Handle, error) {
	cur, err := ns.GetCurrentNS()
	if err != nil {
		return nil, fmt.Errorf("open the node's netns: %w", err)
	}
	defer cur.Close()
	return netlink.NewHandleAt(netns.NsHandle(cur.Fd()))
}

// setupLink makes the veth pair and configures the workload's side as s
// says. It removes a leftover host veth of the same endpoint first: the
// name is derived from the endpoint ID, so a veth by that name can only be
// from an earlier, interrupted ADD of this same attachment.
func setupLink(s linkSpec) (linkState, error) {
	wns, err := ns.GetNS(s.Netns)
	if err != nil {
		return linkState{}, fmt.Errorf("open netns: %w", err)
	}
	defer wns.Close()
	node, err := nodeHandle()
	if err != nil {
		return linkState{}, err
	}
	defer node.Close()
	wl, err := netlink.NewHandleAt(netns.NsHandle(wns.Fd()))
	if err != nil {
		return linkState{}, fmt.Errorf("netlink in the workload's netns: %w", err)
	}
	defer wl.Close()

	if old, err := node.LinkByName(s.HostIfName); err == nil {
		if err := node.LinkDel(old); err != nil {
			return linkState{}, fmt.Errorf("remove leftover veth %s: %w", s.HostIfName, err)
		}
	}
	if _, err := wl.LinkByName(s.IfName); err == nil {
		return linkState{}, fmt.Errorf("interface %s already exists in the workload's netns; "+
			"DEL the attachment that made it, or give another CNI_IFNAME", s.IfName)
	}

	attrs := netlink.NewLinkAttrs()
	attrs.Name = s.HostIfName
	attrs.MTU = s.MTU
	veth := netlink.NewVeth(attrs)
	veth.PeerName = s.IfName
	veth.PeerNamespace = netlink.NsFd(int(wns.Fd()))
	veth.PeerMTU = uint32(s.MTU)
	if err := node.LinkAdd(veth); err != nil {
		return linkState{}, fmt.Errorf("create veth %s (node) / %s (workload): %w", s.HostIfName, s.IfName, err)
	}
	host, err := node.LinkByName(s.HostIfName)
	if err != nil {
		return linkState{}, fmt.Errorf("find new veth %s: %w", s.HostIfName, err)
	}
	work, err := wl.LinkByName(s.IfName)
	if err != nil {
		return linkState{}, fmt.Errorf("find new interface %s in the workload's netns: %w", s.IfName, err)
	}
	st := linkState{
		HostIndex: host.Attrs().Index, HostMAC: host.Attrs().HardwareAddr,
		WorkloadIndex: work.Attrs().Index, WorkloadMAC: work.Attrs().HardwareAddr, MTU: work.Attrs().MTU,
	}

	hasV6 := slices.ContainsFunc(s.Addrs, func(a addrSpec) bool { return a.Prefix.Addr().Is6() })
	if hasV6 {
		// DAD would hold the address "tentative" for a second or more
		// after ADD returns; the agent guarantees it is unique.
		err := wns.Do(func(ns.NetNS) error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/"+s.IfName+"/accept_dad", []byte("0"), 0o644)
		})
		if err != nil {
			return linkState{}, fmt.Errorf("disable IPv6 DAD on %s (is IPv6 disabled in the workload's netns?): %w", s.IfName, err)
		}
	}
	if lo, err := wl.LinkByName("lo"); err == nil {
		if err := wl.LinkSetUp(lo); err != nil {
			return linkState{}, fmt.Errorf("set lo up: %w", err)
		}
	}
	for _, a := range s.Addrs {
		addr := &netlink.Addr{IPNet: ipNet(a.Prefix)}
		if a.Prefix.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := wl.AddrAdd(work, addr); err != nil {
			return linkState{}, fmt.Errorf("add address %s to %s: %w", a.Prefix, s.IfName, err)
		}
	}
	if err := node.LinkSetUp(host); err != nil {
		return linkState{}, fmt.Errorf("set %s up: %w", s.HostIfName, err)
	}
	// Routes need the interface up; the kernel refuses a nexthop on a
	// down device.
	if err := wl.LinkSetUp(work); err != nil {
		return linkState{}, fmt.Errorf("set %s up: %w", s.IfName, err)
	}
	for _, a := range s.Addrs {
		// onlink: the gateway is in no subnet of the workload (its
		// addresses are /32 and /128); the host veth answers for it.
		r := &netlink.Route{LinkIndex: st.WorkloadIndex, Dst: ipNet(defaultRoute(a.Gateway)),
			Gw: net.IP(a.Gateway.AsSlice()), Flags: int(netlink.FLAG_ONLINK)}
		if err := wl.RouteAdd(r); err != nil {
			return linkState{}, fmt.Errorf("add default route via %s dev %s: %w", a.Gateway, s.IfName, err)
		}
		if a.Gateway.Is6() {
			n := &netlink.Neigh{LinkIndex: st.WorkloadIndex, Family: netlink.FAMILY_V6, State: netlink.NUD_PERMANENT,
				IP: net.IP(a.Gateway.AsSlice()), HardwareAddr: st.HostMAC}
			if err := wl.NeighSet(n); err != nil {
				return linkState{}, fmt.Errorf("add neighbour %s lladdr %s dev %s: %w", a.Gateway, st.HostMAC, s.IfName, err)
			}
		}
	}
	return st, nil
}

// removeLink deletes the host veth, which takes its peer with it. A veth
// that is not there is not an error: DEL runs again and again.
func removeLink(hostIfName string) error {
	node, err := nodeHandle()
	if err != nil {
		return err
	}
	defer node.Close()
	l, err := node.LinkByName(hostIfName)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find %s: %w", hostIfName, err)
	}
	if err := node.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", hostIfName, err)
	}
	return nil
}

// checkLink lists how the interfaces differ from s (and from the agent's
// attachment, when it has one). The error is for not being able to look.
func checkLink(s linkSpec, att *api.Attachment) ([]string, error) {
	var drift []string
	node, err := nodeHandle()
	if err != nil {
		return nil, err
	}
	defer node.Close()
	host, err := node.LinkByName(s.HostIfName)
	var hostMAC net.HardwareAddr
	switch {
	case err != nil:
		drift = append(drift, fmt.Sprintf("host veth %s missing in the node's netns", s.HostIfName))
	default:
		a := host.Attrs()
		hostMAC = a.HardwareAddr
		if a.Flags&net.FlagUp == 0 {
			drift = append(drift, fmt.Sprintf("host veth %s is down", s.HostIfName))
		}
		if s.MTU != 0 && a.MTU != s.MTU {
			drift = append(drift, fmt.Sprintf("host veth %s has MTU %d, want %d", s.HostIfName, a.MTU, s.MTU))
		}
		if att != nil && att.HostIfIndex != 0 && att.HostIfIndex != a.Index {
			drift = append(drift, fmt.Sprintf("host veth %s has ifindex %d, the agent has %d", s.HostIfName, a.Index, att.HostIfIndex))
		}
		if att != nil && att.HostMAC != "" && att.HostMAC != a.HardwareAddr.String() {
			drift = append(drift, fmt.Sprintf("host veth %s has MAC %s, the agent has %s", s.HostIfName, a.HardwareAddr, att.HostMAC))
		}
	}

	wns, err := ns.GetNS(s.Netns)
	if err != nil {
		return append(drift, fmt.Sprintf("workload netns %s cannot be opened: %v", s.Netns, err)), nil
	}
	defer wns.Close()
	wl, err := netlink.NewHandleAt(netns.NsHandle(wns.Fd()))
	if err != nil {
		return nil, fmt.Errorf("netlink in the workload's netns: %w", err)
	}
	defer wl.Close()
	work, err := wl.LinkByName(s.IfName)
	if err != nil {
		return append(drift, fmt.Sprintf("interface %s missing in netns %s", s.IfName, s.Netns)), nil
	}
	a := work.Attrs()
	if a.Flags&net.FlagUp == 0 {
		drift = append(drift, fmt.Sprintf("%s is down", s.IfName))
	}
	if s.MTU != 0 && a.MTU != s.MTU {
		drift = append(drift, fmt.Sprintf("%s has MTU %d, want %d", s.IfName, a.MTU, s.MTU))
	}
	if att != nil && att.WorkloadMAC != "" && att.WorkloadMAC != a.HardwareAddr.String() {
		drift = append(drift, fmt.Sprintf("%s has MAC %s, the agent has %s", s.IfName, a.HardwareAddr, att.WorkloadMAC))
	}

	var addrs []netlink.Addr
	var routes []netlink.Route
	var neighs []netlink.Neigh
	if err := retryDump(func() (err error) { addrs, err = wl.AddrList(work, netlink.FAMILY_ALL); return }); err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", s.IfName, err)
	}
	if err := retryDump(func() (err error) { routes, err = wl.RouteList(work, netlink.FAMILY_ALL); return }); err != nil {
		return nil, fmt.Errorf("list routes of %s: %w", s.IfName, err)
	}
	if err := retryDump(func() (err error) { neighs, err = wl.NeighList(a.Index, netlink.FAMILY_V6); return }); err != nil {
		return nil, fmt.Errorf("list neighbours of %s: %w", s.IfName, err)
	}
	for _, want := range s.Addrs {
		if !slices.ContainsFunc(addrs, func(x netlink.Addr) bool { return prefixOf(x.IPNet) == want.Prefix }) {
			drift = append(drift, fmt.Sprintf("address %s missing on %s", want.Prefix, s.IfName))
		}
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return isDefaultVia(r, want.Gateway) }) {
			drift = append(drift, fmt.Sprintf("default route via %s missing on %s", want.Gateway, s.IfName))
		}
		if want.Gateway.Is6() && hostMAC != nil && !slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
			ip, _ := netip.AddrFromSlice(n.IP)
			return ip == want.Gateway && n.State&netlink.NUD_PERMANENT != 0 && n.HardwareAddr.String() == hostMAC.String()
		}) {
			drift = append(drift, fmt.Sprintf("permanent neighbour %s lladdr %s missing on %s", want.Gateway, hostMAC, s.IfName))
		}
	}
	return drift, nil
}

// isDefaultVia reports whether r is a default route through gw.
func isDefaultVia(r netlink.Route, gw netip.Addr) bool {
	if r.Dst != nil {
		if ones, _ := r.Dst.Mask.Size(); ones != 0 {
			return false
		}
	}
	g, ok := netip.AddrFromSlice(r.Gw)
	return ok && g.Unmap() == gw
}

// retryDump repeats a netlink dump the kernel interrupted (the table
// changed while it was read); the result of an interrupted dump may be
// incomplete, and CHECK must not report drift from half a list.
func retryDump(f func() error) error {
	var err error
	for range 5 {
		if err = f(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return err
}

func ipNet(p netip.Prefix) *net.IPNet {
	n := prefixToIPNet(p)
	return &n
}

func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}
