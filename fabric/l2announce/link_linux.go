//go:build linux

package l2announce

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// This file is the package's only use of netlink: link state, so the agent
// can make a node ineligible when the interface it announces on loses
// carrier (a cable pulled, a veth whose peer went down).

// LinkUp tells whether the interface can carry announcements: it is
// administratively up and has carrier (operationally up). A missing
// interface is down.
func (a *Announcer) LinkUp(ifname string) bool {
	h, err := a.netlinkHandle()
	if err != nil {
		a.log.Warn("netlink handle", "err", err)
		return false
	}
	defer h.Close()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return false
	}
	return linkUp(l.Attrs())
}

func (a *Announcer) netlinkHandle() (*netlink.Handle, error) {
	if a.ns.IsOpen() {
		return netlink.NewHandleAt(a.ns)
	}
	return netlink.NewHandle()
}

// linkUp is the kernel's IFF_RUNNING with IFF_UP: RUNNING is set while the
// link is operationally up (carrier and not dormant), which is what "can
// answer ARP" needs.
func linkUp(attrs *netlink.LinkAttrs) bool {
	if attrs == nil {
		return false
	}
	return attrs.Flags&net.FlagUp != 0 && attrs.RawFlags&unix.IFF_RUNNING != 0
}

// WatchLinks calls fn with every interface's state in the announcer's
// namespace, then again each time an interface goes up or down (or is
// deleted: down), until ctx is cancelled or the announcer is closed. Calls
// come from one goroutine, in order; fn must not block for long. It
// returns once the watch is in place.
func (a *Announcer) WatchLinks(ctx context.Context, fn func(ifname string, up bool)) error {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	var stopping atomic.Bool // closing the socket makes netlink report an error
	opts := netlink.LinkSubscribeOptions{
		ListExisting: true,
		ErrorCallback: func(err error) {
			if !stopping.Load() {
				a.log.Warn("link watch", "err", err)
			}
		},
	}
	if a.ns.IsOpen() {
		ns := a.ns
		opts.Namespace = &ns
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return fmt.Errorf("l2announce: watch links on a closed announcer")
	}
	if err := netlink.LinkSubscribeWithOptions(updates, done, opts); err != nil {
		a.mu.Unlock()
		return fmt.Errorf("l2announce: subscribe to link changes: %w", err)
	}
	a.wg.Add(1)
	a.mu.Unlock()
	go func() {
		defer a.wg.Done()
		defer func() {
			stopping.Store(true)
			close(done)
			for range updates { // let netlink's reader finish and close it
			}
		}()
		last := map[string]bool{}
		for {
			select {
			case <-ctx.Done():
				return
			case <-a.ctx.Done():
				return
			case u, ok := <-updates:
				if !ok {
					return
				}
				attrs := u.Attrs()
				if attrs == nil || attrs.Name == "" {
					continue
				}
				up := u.Header.Type != unix.RTM_DELLINK && linkUp(attrs)
				if was, seen := last[attrs.Name]; seen && was == up {
					continue // an unrelated change (MTU, stats, address)
				}
				last[attrs.Name] = up
				if u.Header.Type == unix.RTM_DELLINK {
					delete(last, attrs.Name)
				}
				a.log.Info("link state", "iface", attrs.Name, "up", up)
				fn(attrs.Name, up)
			}
		}
	}()
	return nil
}
