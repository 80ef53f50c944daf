//go:build linux

package l2announce

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// announceDelays are the pauses before each gratuitous ARP / unsolicited
// neighbour advertisement after an IP is taken over (at 0, 100 and 300 ms):
// the first one moves the neighbours at once, the repeats cover a frame
// lost while a switch relearns the MAC.
var announceDelays = []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond}

// allNodes is ff02::1, where unsolicited advertisements go (RFC 4861 7.2.6).
var allNodes = netip.MustParseAddr("ff02::1")

// Announcer answers ARP requests and neighbour solicitations for the IPs
// this node owns, on the interfaces it is told, with each interface's MAC.
// It works in the network namespace it was created for. All methods are
// safe for concurrent use.
type Announcer struct {
	log *slog.Logger
	// ns is the namespace sockets are opened in; -1: the caller's.
	ns netns.NsHandle

	mu     sync.Mutex
	ifaces map[string]*iface
	closed bool
	ctx    context.Context // cancelled by Close; stops announcements and watches
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewAnnouncer returns an announcer for the network namespace the process
// runs in (the agent runs inside its node's namespace). It opens nothing
// until Set.
func NewAnnouncer(log *slog.Logger) *Announcer {
	return newAnnouncer(log, netns.None())
}

// NewAnnouncerInNetNS returns an announcer whose sockets and link watches
// live in the network namespace at path (e.g. /run/netns/NAME), while the
// caller stays where it is: for tests and labs that run several nodes in
// one process.
func NewAnnouncerInNetNS(log *slog.Logger, path string) (*Announcer, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("l2announce: open network namespace %s: %w", path, err)
	}
	return newAnnouncer(log, h), nil
}

func newAnnouncer(log *slog.Logger, ns netns.NsHandle) *Announcer {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Announcer{
		log:    log.With("subsystem", "l2announce"),
		ns:     ns,
		ifaces: map[string]*iface{},
		ctx:    ctx,
		cancel: cancel,
	}
}

// inNS runs fn with its OS thread in the announcer's namespace. Sockets
// keep the namespace they were created in, so everything opened in fn
// stays there. fn runs on a goroutine of its own: if the thread cannot be
// switched back, the goroutine ends with the thread locked and the runtime
// throws the thread away instead of reusing it in the wrong namespace.
func (a *Announcer) inNS(fn func() error) error {
	if !a.ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(a.ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return to network namespace: %w", err))
			return // thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Set makes the announcer answer for exactly owned: each IP on the named
// interfaces. It is declarative: calling it again with the same map changes
// nothing and sends nothing. IPs newly in owned are announced (gratuitous
// ARP, unsolicited neighbour advertisements with Override) on each of their
// interfaces; IPs no longer in owned stop being answered before Set
// returns. An interface that cannot be used is reported in the error and
// retried by the next Set; the rest of owned is applied regardless.
func (a *Announcer) Set(owned map[netip.Addr][]string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("l2announce: set on a closed announcer")
	}

	type sets struct{ v4, v6 map[netip.Addr]bool }
	want := map[string]*sets{}
	var errs []error
	for ip, names := range owned {
		ip = ip.Unmap().WithZone("")
		if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback() {
			errs = append(errs, fmt.Errorf("l2announce: %s cannot be announced; give a unicast address", ip))
			continue
		}
		for _, name := range names {
			s := want[name]
			if s == nil {
				s = &sets{map[netip.Addr]bool{}, map[netip.Addr]bool{}}
				want[name] = s
			}
			if ip.Is4() {
				s.v4[ip] = true
			} else {
				s.v6[ip] = true
			}
		}
	}

	// Give up first, so an IP moving to another interface is never
	// answered on both.
	for name, ifc := range a.ifaces {
		if _, ok := want[name]; !ok {
			ifc.close()
			delete(a.ifaces, name)
			a.log.Info("interface released", "iface", name)
		}
	}

	// Look the interfaces up each time: one deleted and made again has
	// a new index and perhaps a new MAC, and the old sockets are dead.
	found := map[string]*net.Interface{}
	lookupErr := map[string]error{}
	if err := a.inNS(func() error {
		for name := range want {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				lookupErr[name] = err
				continue
			}
			found[name] = ifi
		}
		return nil
	}); err != nil {
		return fmt.Errorf("l2announce: %w", err)
	}

	for _, name := range slices.Sorted(maps.Keys(want)) {
		s := want[name]
		ifi := found[name]
		if ifi == nil {
			errs = append(errs, fmt.Errorf("l2announce: interface %s: %w; create it or fix the policy's interfaces", name, lookupErr[name]))
			if old := a.ifaces[name]; old != nil {
				old.close()
				delete(a.ifaces, name)
			}
			continue
		}
		if len(ifi.HardwareAddr) != 6 {
			errs = append(errs, fmt.Errorf("l2announce: interface %s has no Ethernet address; announce on an Ethernet interface", name))
			continue
		}
		ifc := a.ifaces[name]
		if ifc != nil && (ifc.ifi.Index != ifi.Index || !bytes.Equal(ifc.ifi.HardwareAddr, ifi.HardwareAddr)) {
			a.log.Info("interface changed, reopening", "iface", name, "index", ifi.Index, "mac", ifi.HardwareAddr.String())
			ifc.close()
			ifc = nil
		}
		if ifc == nil {
			ifc = &iface{a: a, ifi: ifi, v4: map[netip.Addr]bool{}, v6: map[netip.Addr]bool{}, groups: map[netip.Addr]int{}}
			a.ifaces[name] = ifc
		}
		added, err := ifc.update(s.v4, s.v6)
		if err != nil {
			errs = append(errs, err)
		}
		for _, ip := range added {
			a.log.Info("announcing", "ip", ip.String(), "iface", name, "mac", ifi.HardwareAddr.String())
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				ifc.announce(a.ctx, ip)
			}()
		}
	}
	return errors.Join(errs...)
}

// Owned returns what the announcer answers for now, in Set's form.
func (a *Announcer) Owned() map[netip.Addr][]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[netip.Addr][]string{}
	for name, ifc := range a.ifaces {
		ifc.mu.RLock()
		for ip := range ifc.v4 {
			out[ip] = append(out[ip], name)
		}
		for ip := range ifc.v6 {
			out[ip] = append(out[ip], name)
		}
		ifc.mu.RUnlock()
	}
	for _, names := range out {
		slices.Sort(names)
	}
	return out
}

// Close stops answering for every IP, closes every socket, stops the link
// watches and waits for its goroutines. It sends nothing: the new owner's
// announcements move the neighbours.
func (a *Announcer) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	for name, ifc := range a.ifaces {
		ifc.close()
		delete(a.ifaces, name)
	}
	a.cancel()
	a.mu.Unlock()
	a.wg.Wait()
	if a.ns.IsOpen() {
		return a.ns.Close()
	}
	return nil
}

// iface is one interface in use: its sockets and the IPs answered on it.
type iface struct {
	a   *Announcer
	ifi *net.Interface

	mu     sync.RWMutex // guards the sets and the sockets' lifetimes
	v4, v6 map[netip.Addr]bool
	arp    *packet.Conn     // ARP frames; nil without IPv4 addresses
	icmp   *ipv6.PacketConn // ICMPv6; nil without IPv6 addresses
	groups map[netip.Addr]int
	closed bool
}

// update replaces the interface's IPs, opening and closing sockets and
// solicited-node group memberships to match, and returns the IPs that are
// new on it.
func (f *iface) update(v4, v6 map[netip.Addr]bool) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var added []netip.Addr
	var errs []error

	if len(v4) > 0 && f.arp == nil {
		var c *packet.Conn
		err := f.a.inNS(func() (err error) {
			c, err = packet.Listen(f.ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("l2announce: open ARP socket on %s: %w", f.ifi.Name, err))
			v4 = nil
		} else {
			f.arp = c
			f.a.wg.Add(1)
			go func() { defer f.a.wg.Done(); f.serveARP(c) }()
		}
	}
	for ip := range v4 {
		if !f.v4[ip] {
			added = append(added, ip)
		}
	}
	f.v4 = v4
	if len(v4) == 0 && f.arp != nil {
		f.arp.Close()
		f.arp = nil
	}

	if len(v6) > 0 && f.icmp == nil {
		c, err := f.openICMP()
		if err != nil {
			errs = append(errs, fmt.Errorf("l2announce: open ICMPv6 socket on %s: %w", f.ifi.Name, err))
			v6 = nil
		} else {
			f.icmp = c
			f.groups = map[netip.Addr]int{}
			f.a.wg.Add(1)
			go func() { defer f.a.wg.Done(); f.serveNDP(c) }()
		}
	}
	// Solicitations go to the solicited-node group of the address asked
	// for; the kernel drops them unless this interface has joined it.
	wantGroups := map[netip.Addr]int{}
	for ip := range v6 {
		g, _ := ndp.SolicitedNodeMulticast(ip)
		wantGroups[g]++
	}
	if f.icmp != nil {
		for g := range f.groups {
			if wantGroups[g] == 0 {
				_ = f.icmp.LeaveGroup(f.ifi, &net.IPAddr{IP: g.AsSlice()})
				delete(f.groups, g)
			}
		}
		for g, n := range wantGroups {
			if f.groups[g] == 0 {
				if err := f.icmp.JoinGroup(f.ifi, &net.IPAddr{IP: g.AsSlice()}); err != nil {
					errs = append(errs, fmt.Errorf("l2announce: join %s on %s: %w", g, f.ifi.Name, err))
					continue
				}
			}
			f.groups[g] = n
		}
	}
	for ip := range v6 {
		if !f.v6[ip] {
			added = append(added, ip)
		}
	}
	f.v6 = v6
	if len(v6) == 0 && f.icmp != nil {
		f.icmp.Close()
		f.icmp = nil
		f.groups = map[netip.Addr]int{}
	}
	slices.SortFunc(added, netip.Addr.Compare)
	return added, errors.Join(errs...)
}

// openICMP opens the raw ICMPv6 socket that hears solicitations and sends
// advertisements. It is bound to no address, so it works whatever
// addresses the interface has, and may send from addresses it does not
// have (IPV6_FREEBIND): advertisements come from the announced address
// itself, as the kernel's own do and as some resolvers (ndisc6) insist.
// Destinations are given without zones: the Go zone cache is per process,
// not per namespace, and would pick the wrong index when several
// namespaces are used from one process; the interface is in the control
// message instead.
func (f *iface) openICMP() (*ipv6.PacketConn, error) {
	var pc *ipv6.PacketConn
	err := f.a.inNS(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		c, err := lc.ListenPacket(context.Background(), "ip6:ipv6-icmp", "::")
		if err != nil {
			return err
		}
		pc = ipv6.NewPacketConn(c)
		var filter ipv6.ICMPFilter
		filter.SetAll(true)
		filter.Accept(ipv6.ICMPTypeNeighborSolicitation)
		for _, step := range []error{
			pc.SetHopLimit(ndp.HopLimit), // RFC 4861: receivers drop anything else
			pc.SetMulticastHopLimit(ndp.HopLimit),
			pc.SetChecksum(true, 2),
			pc.SetICMPFilter(&filter),
			pc.SetControlMessage(ipv6.FlagInterface, true),
			pc.SetMulticastLoopback(false),
		} {
			if step != nil {
				pc.Close()
				return step
			}
		}
		return nil
	})
	return pc, err
}

func (f *iface) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.v4, f.v6 = map[netip.Addr]bool{}, map[netip.Addr]bool{}
	if f.arp != nil {
		f.arp.Close()
		f.arp = nil
	}
	if f.icmp != nil {
		f.icmp.Close()
		f.icmp = nil
	}
}

func (f *iface) owns(ip netip.Addr) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if ip.Is4() {
		return f.v4[ip]
	}
	return f.v6[ip]
}

// announce sends the takeover announcements for ip, stopping early when ip
// is given up or the announcer closes.
func (f *iface) announce(ctx context.Context, ip netip.Addr) {
	for i, d := range announceDelays {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		err := f.sendUnsolicited(ip)
		if errors.Is(err, errNotOwned) {
			return
		}
		if err != nil {
			f.a.log.Warn("announce failed", "ip", ip.String(), "iface", f.ifi.Name, "try", i+1, "err", err)
		}
	}
}

var errNotOwned = errors.New("not owned")

func (f *iface) sendUnsolicited(ip netip.Addr) error {
	f.mu.RLock()
	defer f.mu.RUnlock() // keeps the socket open while writing
	mac := f.ifi.HardwareAddr
	if ip.Is4() {
		if !f.v4[ip] || f.arp == nil {
			return errNotOwned
		}
		// A request with sender and target both ip: Linux accepts this
		// as gratuitous and lets it override a recent entry.
		p, err := arp.NewPacket(arp.OperationRequest, mac, ip, ethernet.Broadcast, ip)
		if err != nil {
			return err
		}
		return writeARP(f.arp, mac, ethernet.Broadcast, p)
	}
	if !f.v6[ip] || f.icmp == nil {
		return errNotOwned
	}
	return f.writeNA(f.icmp, &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}, allNodes)
}

func writeARP(c *packet.Conn, src, dst net.HardwareAddr, p *arp.Packet) error {
	pb, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	fb, err := (&ethernet.Frame{Destination: dst, Source: src, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
	if err != nil {
		return err
	}
	_, err = c.WriteTo(fb, &packet.Addr{HardwareAddr: dst})
	return err
}

func (f *iface) writeNA(c *ipv6.PacketConn, na *ndp.NeighborAdvertisement, dst netip.Addr) error {
	b, err := ndp.MarshalMessage(na)
	if err != nil {
		return err
	}
	cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, IfIndex: f.ifi.Index, Src: na.TargetAddress.AsSlice()}
	_, err = c.WriteTo(b, cm, &net.IPAddr{IP: dst.AsSlice()})
	return err
}

// serveARP answers ARP requests for the interface's IPv4 addresses until c
// is closed. Nothing is logged per packet.
func (f *iface) serveARP(c *packet.Conn) {
	mac := f.ifi.HardwareAddr
	buf := make([]byte, 1600)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if f.gone(err, func() bool { return f.arp != c }) {
				return
			}
			f.a.log.Warn("read ARP", "iface", f.ifi.Name, "err", err)
			time.Sleep(100 * time.Millisecond) // no busy loop on a persistent error
			continue
		}
		var fr ethernet.Frame
		if fr.UnmarshalBinary(buf[:n]) != nil || fr.EtherType != ethernet.EtherTypeARP || bytes.Equal(fr.Source, mac) {
			continue // our own frames come back on a packet socket
		}
		var req arp.Packet
		if req.UnmarshalBinary(fr.Payload) != nil || req.Operation != arp.OperationRequest {
			continue
		}
		if req.SenderIP == req.TargetIP {
			continue // someone else's gratuitous ARP asks nothing
		}
		if !f.owns(req.TargetIP) {
			continue
		}
		reply, err := arp.NewPacket(arp.OperationReply, mac, req.TargetIP, req.SenderHardwareAddr, req.SenderIP)
		if err != nil {
			continue
		}
		_ = writeARP(c, mac, req.SenderHardwareAddr, reply)
	}
}

// serveNDP answers neighbour solicitations for the interface's IPv6
// addresses until c is closed.
func (f *iface) serveNDP(c *ipv6.PacketConn) {
	mac := f.ifi.HardwareAddr
	buf := make([]byte, max(f.ifi.MTU, 1280))
	for {
		n, cm, src, err := c.ReadFrom(buf)
		if err != nil {
			if f.gone(err, func() bool { return f.icmp != c }) {
				return
			}
			f.a.log.Warn("read ICMPv6", "iface", f.ifi.Name, "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		// The socket hears every interface of the namespace.
		if cm == nil || cm.IfIndex != f.ifi.Index {
			continue
		}
		msg, err := ndp.ParseMessage(buf[:n])
		if err != nil {
			continue
		}
		ns, ok := msg.(*ndp.NeighborSolicitation)
		if !ok || !f.owns(ns.TargetAddress.WithZone("")) {
			continue
		}
		na := &ndp.NeighborAdvertisement{
			Solicited:     true,
			Override:      true,
			TargetAddress: ns.TargetAddress.WithZone(""),
			Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
		}
		var dst netip.Addr
		if a, ok := src.(*net.IPAddr); ok {
			dst, _ = netip.AddrFromSlice(a.IP)
		}
		if !dst.IsValid() || dst.IsUnspecified() {
			// Duplicate address detection: answer everyone (RFC 4861 7.2.4).
			dst, na.Solicited = allNodes, false
		}
		_ = f.writeNA(c, na, dst)
	}
}

// gone tells a reader to stop: its socket was closed or replaced.
func (f *iface) gone(err error, replaced func() bool) bool {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
		return true
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.closed || replaced()
}
