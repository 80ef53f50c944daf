package bgp

import (
	"context"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// Route is a best path learned from a peer.
type Route struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	// ASPath is the AS numbers in order, nearest first; AS_SET members are
	// flattened in.
	ASPath []uint32
	// Peer is the session the route came from.
	Peer netip.Addr
}

func routeEqual(a, b Route) bool {
	return a.Prefix == b.Prefix && a.NextHop == b.NextHop && a.Peer == b.Peer && slices.Equal(a.ASPath, b.ASPath)
}

// Routes returns the best learned path of every prefix, sorted by prefix.
// Prefixes this speaker announces itself are not included.
func (s *Speaker) Routes() []Route {
	s.mu.Lock()
	started := s.started && !s.closed
	s.mu.Unlock()
	if !started {
		return nil
	}
	var out []Route
	for _, f := range []*api.Family{familyV4, familyV6} {
		req := &api.ListPathRequest{
			TableType:             api.TableType_GLOBAL,
			Family:                f,
			EnableNlriBinary:      true,
			EnableAttributeBinary: true,
			EnableOnlyBinary:      true,
		}
		err := s.srv.ListPath(context.Background(), req, func(d *api.Destination) {
			for _, p := range d.Paths {
				if !p.Best {
					continue
				}
				if r, ok := toRoute(d.Prefix, p); ok {
					out = append(out, r)
				}
			}
		})
		if err != nil {
			s.log.Warn("bgp list routes failed", "family", f.Afi.String(), "err", err)
		}
	}
	slices.SortFunc(out, func(a, b Route) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out
}

// toRoute converts a learned path; local paths (no neighbour) report false.
func toRoute(prefix string, p *api.Path) (Route, bool) {
	peer, err := netip.ParseAddr(p.NeighborIp)
	if err != nil || peer.IsUnspecified() {
		return Route{}, false // our own announcement
	}
	pfx, err := netip.ParsePrefix(prefix)
	if err != nil {
		return Route{}, false
	}
	r := Route{Prefix: pfx, Peer: peer}
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		return Route{}, false
	}
	for _, a := range attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			r.NextHop, _ = netip.AddrFromSlice(a.Value)
		case *bgp.PathAttributeMpReachNLRI:
			r.NextHop, _ = netip.AddrFromSlice(a.Nexthop)
		case *bgp.PathAttributeAsPath:
			for _, seg := range a.Value {
				r.ASPath = append(r.ASPath, seg.GetAS()...)
			}
		}
	}
	r.NextHop = r.NextHop.Unmap()
	return r, true
}

// routesDebounce batches a burst of updates (a peer sending thousands of
// prefixes) into one callback.
const routesDebounce = 100 * time.Millisecond

// WatchRoutes calls fn with the whole current set of learned routes (as
// Routes returns it) once at the start and again after every change, until
// ctx ends. Calls are serialized and come from one goroutine; fn must not
// block for long, as changes queue behind it (they are coalesced, never
// dropped: the next call carries the latest set). It returns an error only
// when the watch cannot be set up.
func (s *Speaker) WatchRoutes(ctx context.Context, fn func([]Route)) error {
	s.mu.Lock()
	started := s.started && !s.closed
	s.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	// Received updates and session changes are the only things that change
	// learned routes; watching best-path events instead would also fire for
	// every one of our own announcements.
	req := &api.WatchEventRequest{
		Peer:  &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_ADJIN}}},
	}
	if err := s.srv.WatchEvent(ctx, req, func(*api.WatchEventResponse) { poke() }); err != nil {
		return err
	}
	go func() {
		var last []Route
		first := true
		// A slow resync guards against a change that raised no event (a
		// peer's routes dropped after its state event was delivered).
		resync := time.NewTicker(5 * time.Second)
		defer resync.Stop()
		for {
			cur := s.Routes()
			if first || !slices.EqualFunc(cur, last, routeEqual) {
				fn(cur)
				last, first = cur, false
			}
			select {
			case <-ctx.Done():
				return
			case <-resync.C:
			case <-kick:
				select {
				case <-ctx.Done():
					return
				case <-time.After(routesDebounce):
				}
			}
		}
	}()
	return nil
}
