//go:build linux

package tunnel

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// EnsureVXLAN makes the current network namespace hold a flow-based
// ("external", collect-metadata) VXLAN device called name on UDP port port
// with the given MTU, up, and returns its ifindex. The device carries no VNI
// or remote of its own: the eBPF datapath sets both per packet through the
// tunnel key, which is how one device reaches every node. It is idempotent:
// an existing device with the right kind and port is kept (MTU and state are
// fixed up); one that differs is replaced.
func EnsureVXLAN(name string, port int, mtu int) (ifindex int, err error) {
	if name == "" || port <= 0 || port > 65535 || mtu < 68 {
		return 0, fmt.Errorf("ensure vxlan %q: bad arguments (port %d, mtu %d)", name, port, mtu)
	}
	link, err := netlink.LinkByName(name)
	switch {
	case err == nil:
		if v, ok := link.(*netlink.Vxlan); ok && v.FlowBased && v.Port == port && !v.Learning {
			break
		}
		// A device with our name that is not what we need is ours from an
		// older configuration (or a mistake): replace it rather than
		// forwarding through something we do not understand.
		if err := netlink.LinkDel(link); err != nil {
			return 0, fmt.Errorf("replace device %s: %w", name, err)
		}
		link = nil
	case errors.As(err, new(netlink.LinkNotFoundError)):
		link = nil
	default:
		return 0, fmt.Errorf("look up device %s: %w", name, err)
	}
	if link == nil {
		v := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu},
			FlowBased: true,
			Port:      port,
			Learning:  false,
		}
		if err := netlink.LinkAdd(v); err != nil {
			return 0, fmt.Errorf("create vxlan device %s (port %d): %w", name, port, err)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return 0, fmt.Errorf("look up new device %s: %w", name, err)
		}
	}
	if link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return 0, fmt.Errorf("set mtu %d on %s: %w", mtu, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return 0, fmt.Errorf("set %s up: %w", name, err)
	}
	return link.Attrs().Index, nil
}

// RemoveVXLAN deletes the VXLAN device called name from the current network
// namespace; a device that does not exist is not an error.
func RemoveVXLAN(name string) error {
	link, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up device %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Vxlan); !ok {
		return fmt.Errorf("remove vxlan %s: the device is a %s, not vxlan; leaving it", name, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("delete device %s: %w", name, err)
	}
	return nil
}
