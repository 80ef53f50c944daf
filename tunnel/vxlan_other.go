//go:build !linux

package tunnel

import (
	"errors"
	"net/netip"
	"runtime"
)

var errNoOverlay = errors.New("overlay devices need Linux; this is " + runtime.GOOS)

// EnsureVXLAN needs Linux.
func EnsureVXLAN(name string, port int, mtu int) (int, error) { return 0, errNoOverlay }

// RemoveVXLAN needs Linux.
func RemoveVXLAN(name string) error { return errNoOverlay }

// EnableForwarding needs Linux.
func EnableForwarding() error { return errNoOverlay }

// SetMasquerade needs Linux.
func SetMasquerade(oif string, pools []netip.Prefix, nodes []netip.Addr, natPorts [2]uint16) error {
	return errNoOverlay
}

// SetEndpointRoutes needs Linux.
func SetEndpointRoutes(want map[netip.Addr]int) error { return errNoOverlay }
