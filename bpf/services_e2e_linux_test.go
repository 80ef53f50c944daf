//go:build linux

package bpf

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

const backendPort = 8080

// serveName makes a workload answer on backendPort, TCP and UDP, with its
// name: a TCP connection gets the name at once and again for every line it
// sends (so a test can tell which backend an established connection
// reaches); a UDP datagram gets the name back.
func serveName(t *testing.T, wl *workload, name string) {
	t.Helper()
	var (
		ln net.Listener
		pc net.PacketConn
	)
	err := inNS(wl.ns, func() error {
		var err error
		if ln, err = net.Listen("tcp", fmt.Sprintf(":%d", backendPort)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", backendPort))
		return err
	})
	if err != nil {
		t.Fatalf("serve in %s: %v", wl.ns, err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := fmt.Fprintln(conn, name); err != nil {
					return
				}
				sc := bufio.NewScanner(conn)
				for sc.Scan() {
					if _, err := fmt.Fprintln(conn, name); err != nil {
						return
					}
				}
			}()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(name), from)
		}
	}()
}

// dialName connects from a workload to addr over TCP and returns the
// backend's name and the open connection.
func dialName(from *workload, addr netip.AddrPort) (string, net.Conn, error) {
	var conn net.Conn
	err := inNS(from.ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr.String(), 3*time.Second)
		return err
	})
	if err != nil {
		return "", nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		conn.Close()
		return "", nil, fmt.Errorf("read from %s: %w", addr, err)
	}
	return strings.TrimSpace(line), conn, nil
}

func askUDP(from *workload, addr netip.AddrPort) (string, error) {
	var conn net.Conn
	if err := inNS(from.ns, func() error {
		var err error
		conn, err = net.Dial("udp", addr.String())
		return err
	}); err != nil {
		return "", err
	}
	defer conn.Close()
	buf := make([]byte, 64)
	for range 3 { // UDP may lose the first datagram to neighbour resolution
		_ = conn.SetDeadline(time.Now().Add(time.Second))
		if _, err := conn.Write([]byte("who")); err != nil {
			return "", err
		}
		n, err := conn.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", fmt.Errorf("udp %s: no answer", addr)
}

func (c *cluster) applyAll(t *testing.T) {
	t.Helper()
	for i, n := range c.nodes {
		if err := inNS(n.ns, func() error { return n.dp.Apply(c.state(i)) }); err != nil {
			t.Fatalf("apply on node %d: %v", i+1, err)
		}
	}
}

// testServices runs the service checks on a cluster: client a on node 1;
// backends b (node 1), x and y (node 2).
func testServices(t *testing.T, c *cluster) {
	n1, n2 := c.nodes[0], c.nodes[1]
	a, b := n1.wls[0], n1.wls[1]
	x, y := n2.wls[0], n2.wls[1]
	names := map[*workload]string{a: "a", b: "b", x: "x", y: "y"}
	for wl, name := range names {
		serveName(t, wl, name)
	}
	be4 := func(wls ...*workload) []Backend {
		var out []Backend
		for _, wl := range wls {
			out = append(out, Backend{Addr: netip.AddrPortFrom(wl.ip4, backendPort)})
		}
		return out
	}
	fe4 := netip.MustParseAddrPort("10.96.0.10:80")
	fe6 := netip.MustParseAddrPort("[fd00:96::10]:80")
	hair := netip.MustParseAddrPort("10.96.0.11:80")
	lbIP := netip.MustParseAddrPort("10.77.0.100:80")
	const tableSize = 31
	tcp := Service{Frontend: fe4, Proto: ProtoTCP, Backends: be4(b, x, y), Maglev: rrTable(3, tableSize)}
	udp := Service{Frontend: fe4, Proto: ProtoUDP, Backends: be4(b, x, y), Maglev: rrTable(3, tableSize)}
	v6 := Service{Frontend: fe6, Proto: ProtoTCP, Maglev: rrTable(2, tableSize),
		Backends: []Backend{{netip.AddrPortFrom(b.ip6, backendPort)}, {netip.AddrPortFrom(x.ip6, backendPort)}}}
	hairpin := Service{Frontend: hair, Proto: ProtoTCP, Backends: be4(a), Maglev: rrTable(1, 7)}
	external := Service{Frontend: lbIP, Proto: ProtoTCP, Backends: be4(b), Maglev: rrTable(1, 7), External: true}
	be6 := func(wls ...*workload) []Backend {
		var out []Backend
		for _, wl := range wls {
			out = append(out, Backend{Addr: netip.AddrPortFrom(wl.ip6, backendPort)})
		}
		return out
	}
	ext := func(fe netip.AddrPort, proto uint8, bs []Backend) Service {
		return Service{Frontend: fe, Proto: proto, Backends: bs, Maglev: rrTable(len(bs), 7), External: true}
	}
	// Node ports on node 1's own addresses, with a backend on node 1 (b)
	// and one on node 2 (x), and a load-balancer IP with only x.
	npLocal, npRemote := netip.AddrPortFrom(n1.under4, 30080), netip.AddrPortFrom(n1.under4, 30081)
	np6Local, np6Remote := netip.AddrPortFrom(n1.under6, 30080), netip.AddrPortFrom(n1.under6, 30081)
	lbRemote := netip.MustParseAddrPort("10.77.0.101:80")
	c.services = []Service{tcp, udp, v6, hairpin, external,
		ext(npLocal, ProtoTCP, be4(b)), ext(npLocal, ProtoUDP, be4(b)),
		ext(npRemote, ProtoTCP, be4(x)), ext(npRemote, ProtoUDP, be4(x)),
		ext(np6Local, ProtoTCP, be6(b)), ext(np6Remote, ProtoTCP, be6(x)),
		ext(lbRemote, ProtoTCP, be4(x))}
	c.applyAll(t)

	t.Run("stable ids", func(t *testing.T) { testStableIDs(t, c) })
	t.Run("spread", func(t *testing.T) {
		counts := map[string]int{}
		for i := range 200 {
			name, conn, err := dialName(a, fe4)
			if err != nil {
				t.Fatalf("connection %d to %s: %v", i, fe4, err)
			}
			conn.Close()
			counts[name]++
		}
		t.Logf("200 connections to %s: %v", fe4, counts)
		for _, n := range []string{"b", "x", "y"} {
			if counts[n] < 200/3/2 {
				t.Errorf("backend %s got %d of 200 connections; want about a third (%v)", n, counts[n], counts)
			}
		}
	})
	t.Run("udp", func(t *testing.T) {
		seen := map[string]int{}
		for range 30 {
			name, err := askUDP(a, fe4)
			if err != nil {
				t.Fatal(err)
			}
			seen[name]++
		}
		if len(seen) < 2 {
			t.Errorf("30 UDP clients reached only %v", seen)
		}
	})
	t.Run("ipv6", func(t *testing.T) {
		seen := map[string]int{}
		for range 20 {
			name, conn, err := dialName(a, fe6)
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
			seen[name]++
		}
		if seen["b"] == 0 || seen["x"] == 0 || len(seen) != 2 {
			t.Errorf("20 IPv6 connections reached %v; want b and x", seen)
		}
	})
	t.Run("hairpin", func(t *testing.T) {
		name, conn, err := dialName(a, hair)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if name != "a" {
			t.Errorf("hairpin reached %q; want a", name)
		}
	})
	t.Run("backend removal", func(t *testing.T) {
		name, conn, err := dialName(a, fe4)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var keep []*workload
		var removed string
		for _, wl := range []*workload{b, x, y} {
			if names[wl] == name || removed != "" {
				keep = append(keep, wl)
			} else {
				removed = names[wl]
			}
		}
		c.services[0].Backends = be4(keep...)
		c.services[0].Maglev = rrTable(2, tableSize)
		c.applyAll(t)
		defer func() {
			c.services[0] = tcp
			c.applyAll(t)
		}()
		r := bufio.NewReader(conn)
		if _, err := fmt.Fprintln(conn, "again"); err != nil {
			t.Fatalf("established connection to %s after removing %s: %v", name, removed, err)
		}
		line, err := r.ReadString('\n')
		if err != nil || strings.TrimSpace(line) != name {
			t.Errorf("established connection to %s after removing %s: got %q, %v", name, removed, line, err)
		}
		for range 30 {
			got, conn, err := dialName(a, fe4)
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
			if got == removed {
				t.Fatalf("a new connection reached removed backend %s", removed)
			}
		}
		svcs, err := n1.dp.Services()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range svcs {
			if s.Frontend == fe4 && s.Proto == ProtoTCP && len(s.Backends) != 2 {
				t.Errorf("Services() after removal: %+v", s)
			}
		}
	})
	t.Run("affinity", func(t *testing.T) {
		c.services[0].AffinityTimeout = time.Minute
		c.applyAll(t)
		defer func() {
			c.services[0] = tcp
			c.applyAll(t)
		}()
		seen := map[string]int{}
		for range 20 {
			name, conn, err := dialName(a, fe4)
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
			seen[name]++
		}
		if len(seen) != 1 {
			t.Errorf("with affinity, 20 connections of one client reached %v; want one backend", seen)
		}
	})
	t.Run("external", func(t *testing.T) {
		// Node 2's own namespace is the outside client: it routes the
		// load-balancer IP to node 1, whose stack forwards b's reply.
		if out, err := nsExec(n1.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
			t.Fatalf("ip_forward: %v %s", err, out)
		}
		ipn(t, n2.ns, "route", "replace", lbIP.Addr().String()+"/32", "via", n1.under4.String())
		outside := &workload{ns: n2.ns}
		name, conn, err := dialName(outside, lbIP)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if name != "b" {
			t.Errorf("external frontend reached %q; want b", name)
		}
	})
	t.Run("outside", func(t *testing.T) {
		testOutside(t, c, []outsideCase{
			{npLocal, false, "b"}, {npLocal, true, "b"}, {np6Local, false, "b"},
			{npRemote, false, "x"}, {npRemote, true, "x"}, {np6Remote, false, "x"},
			{lbRemote, false, "x"},
		})
	})
}

// testOutside: a host on the underlay segment that is no node reaches
// external frontends on node 1: node ports on node 1's own addresses (the
// replies leave by the underlay interface, never judged by node 1's stack)
// and a load-balancer IP, with the backend on node 1 or on node 2 (source
// translated to node 1's address and a NAT port).
func testOutside(t *testing.T, c *cluster, cases []outsideCase) {
	n1 := c.nodes[0]
	// Node 2's stack routes its backend's replies to node 1's address.
	for _, n := range c.nodes {
		for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"} {
			if out, err := nsExec(n.ns, "sysctl", "-qw", kv); err != nil {
				t.Fatalf("sysctl %s: %v %s", kv, err, out)
			}
		}
	}
	out := &workload{ns: c.outside}
	for _, tc := range cases {
		if a := tc.fe.Addr(); a.Is4() && a != n1.under4 {
			ipn(t, c.outside, "route", "replace", a.String()+"/32", "via", n1.under4.String())
		}
		var (
			name string
			err  error
		)
		proto := "tcp"
		if tc.udp {
			proto = "udp"
			name, err = askUDP(out, tc.fe)
		} else {
			var conn net.Conn
			if name, conn, err = dialName(out, tc.fe); err == nil {
				conn.Close()
			}
		}
		if err != nil || name != tc.want {
			t.Errorf("outside → %s/%s: reached %q, %v; want %s", tc.fe, proto, name, err, tc.want)
		}
	}
	lo, hi := n1.cfg.natPorts()
	var (
		k   ctKey
		v   lbNAT
		nat int
	)
	for it := n1.dp.lxc.LbNat.Iterate(); it.Next(&k, &v); {
		a := addrOf(k.Family, k.Daddr)
		if (a != n1.under4 && a != n1.under6) || int(k.Dport) < lo || int(k.Dport) > hi {
			t.Errorf("lb_nat entry %+v: want node 1's address and a port in %d..%d", k, lo, hi)
		}
		nat++
	}
	if nat == 0 {
		t.Errorf("node 1 recorded no NAT translation")
	}
}

type outsideCase struct {
	fe   netip.AddrPort
	udp  bool
	want string
}

// serviceIDs reads node n's id assignments and Maglev inner map ids.
func serviceIDs(t *testing.T, n *node) (svcs map[lbSvcKey]uint32, backends map[lbBackend]uint32, tables map[uint32]uint32) {
	t.Helper()
	svcs, backends, tables = map[lbSvcKey]uint32{}, map[lbBackend]uint32{}, map[uint32]uint32{}
	var (
		k  lbSvcKey
		v  lbSvc
		id uint32
		be lbBackend
	)
	for it := n.dp.lxc.LbServices.Iterate(); it.Next(&k, &v); {
		svcs[k] = v.ID
	}
	for it := n.dp.lxc.LbBackends.Iterate(); it.Next(&id, &be); {
		backends[be] = id
	}
	var inner uint32
	for it := n.dp.lxc.LbMaglev.Iterate(); it.Next(&id, &inner); {
		tables[id] = inner
	}
	return svcs, backends, tables
}

// testStableIDs: an Apply of the same state writes no Maglev table, and
// ids survive an agent restart and services added in front of them.
func testStableIDs(t *testing.T, c *cluster) {
	n1 := c.nodes[0]
	svcs, backends, tables := serviceIDs(t, n1)
	if len(svcs) != len(c.services) || len(tables) != len(c.services) {
		t.Fatalf("node 1 holds %d services and %d tables; want %d", len(svcs), len(tables), len(c.services))
	}
	c.applyAll(t)
	if _, _, again := serviceIDs(t, n1); fmt.Sprint(again) != fmt.Sprint(tables) {
		t.Errorf("an Apply of the same state replaced Maglev tables: %v → %v", tables, again)
	}
	if err := n1.dp.Close(); err != nil {
		t.Fatal(err)
	}
	n1.dp = openIn(c.t, n1)
	saved := c.services
	extra := Service{Frontend: netip.MustParseAddrPort("10.96.0.99:81"), Proto: ProtoTCP,
		Backends: []Backend{{netip.MustParseAddrPort("10.210.2.99:81")}}, Maglev: rrTable(1, 7)}
	c.services = append([]Service{extra}, saved...)
	c.applyAll(t)
	s2, b2, _ := serviceIDs(t, n1)
	for k, id := range svcs {
		if s2[k] != id {
			t.Errorf("service %v: id %d became %d across a restart", k, id, s2[k])
		}
	}
	for k, id := range backends {
		if b2[k] != id {
			t.Errorf("backend %v: id %d became %d across a restart", k, id, b2[k])
		}
	}
	c.services = saved
	c.applyAll(t)
	if s3, b3, _ := serviceIDs(t, n1); len(s3) != len(saved) || len(b3) != len(backends) {
		t.Errorf("after removing a service: %d services, %d backends; want %d and %d", len(s3), len(b3), len(saved), len(backends))
	}
}
