//go:build !linux

package l2announce

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
)

// ErrNotSupported: answering ARP and NDP needs Linux packet sockets.
var ErrNotSupported = errors.New("l2announce: L2 announcements need Linux; run the agent on Linux")

// Announcer is the Linux responder; elsewhere every method fails, so the
// control plane still builds and its unit tests run.
type Announcer struct{}

func NewAnnouncer(log *slog.Logger) *Announcer { return &Announcer{} }

func NewAnnouncerInNetNS(log *slog.Logger, path string) (*Announcer, error) {
	return nil, ErrNotSupported
}

func (a *Announcer) Set(owned map[netip.Addr][]string) error {
	if len(owned) == 0 {
		return nil
	}
	return ErrNotSupported
}

func (a *Announcer) Owned() map[netip.Addr][]string { return map[netip.Addr][]string{} }

func (a *Announcer) Close() error { return nil }

func (a *Announcer) LinkUp(ifname string) bool { return false }

func (a *Announcer) WatchLinks(ctx context.Context, fn func(ifname string, up bool)) error {
	return ErrNotSupported
}
