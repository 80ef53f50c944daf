//go:build linux

package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeProtocol marks the routes Fabric adds in the node's namespace, so
// a sync finds and removes its own stale ones and never anyone else's.
const routeProtocol netlink.RouteProtocol = 0xfa

// SetEndpointRoutes makes the node's stack reach each local workload
// address through the host side of its veth (what replies to masqueraded
// traffic need once connection tracking has turned their destination back
// into the workload's). want maps an address to the host veth's ifindex;
// routes Fabric added before that are not in want are removed. Idempotent.
func SetEndpointRoutes(want map[netip.Addr]int) error {
	have, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("endpoint routes: list: %w", err)
	}
	var errs []error
	seen := map[netip.Addr]bool{}
	for _, r := range have {
		if r.Dst == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		a = a.Unmap()
		ones, bits := r.Dst.Mask.Size()
		if ok && ones == bits && want[a] == r.LinkIndex {
			seen[a] = true
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("endpoint routes: remove %s: %w", r.Dst, err))
		}
	}
	for a, ifindex := range want {
		if seen[a] {
			continue
		}
		r := &netlink.Route{LinkIndex: ifindex, Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())},
			Scope: netlink.SCOPE_LINK, Protocol: routeProtocol}
		if err := netlink.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("endpoint routes: add %s dev %d: %w", a, ifindex, err))
		}
	}
	return errors.Join(errs...)
}
