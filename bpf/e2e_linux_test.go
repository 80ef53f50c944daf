//go:build linux

package bpf

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The end-to-end tests build two nodes on one underlay segment (a bridge in
// a namespace of its own, which also holds a host outside the cluster), each
// with two workloads attached through veth pairs, open the datapath inside
// each node's namespace, and send real traffic between the workloads.

const underlayMTU = 1500

type workload struct {
	ns       string
	ip4, ip6 netip.Addr
	identity uint32
	ep       Endpoint
}

type node struct {
	ns             string
	under4, under6 netip.Addr
	cidr4, cidr6   netip.Prefix
	cfg            Config
	dp             *Datapath
	wls            []*workload
}

type cluster struct {
	t     *testing.T // the test the cluster lives as long as
	mode  Mode
	mtu   int
	nodes [2]*node
	// outside is a host on the underlay segment that is no node: the
	// client of external frontends.
	outside            string
	outside4, outside6 netip.Addr
	// services are in every node's state (services_e2e_linux_test.go).
	services []Service
}

func overhead(m Mode) int {
	if m == ModeNative {
		return 0
	}
	return 50
}

func newCluster(t *testing.T, mode Mode) *cluster {
	t.Helper()
	requireRoot(t)
	c := &cluster{t: t, mode: mode, mtu: underlayMTU - overhead(mode)}
	pins := [2]string{newPinDir(t), newPinDir(t)}
	for i := range c.nodes {
		n := &node{
			ns:     newNetNS(t, fmt.Sprintf("n%d", i+1)),
			under4: netip.MustParseAddr(fmt.Sprintf("10.77.0.%d", i+1)),
			under6: netip.MustParseAddr(fmt.Sprintf("fd77::%d", i+1)),
			cidr4:  netip.MustParsePrefix(fmt.Sprintf("10.210.%d.0/24", i+1)),
			cidr6:  netip.MustParsePrefix(fmt.Sprintf("fd00:210:%d::/64", i+1)),
		}
		n.cfg = Config{PinDir: pins[i], Mode: mode, UnderlayIfName: "eth0", UnderlayIPv4: n.under4,
			UnderlayIPv6: n.under6, VXLANIfName: "fabric_vxlan", GenevePort: 6081}
		c.nodes[i] = n
	}
	sw := newNetNS(t, "sw")
	ipn(t, sw, "link", "add", "br0", "type", "bridge")
	ipn(t, sw, "link", "set", "br0", "up")
	c.outside = newNetNS(t, "out")
	c.outside4, c.outside6 = netip.MustParseAddr("10.77.0.9"), netip.MustParseAddr("fd77::9")
	for i, ns := range []string{c.nodes[0].ns, c.nodes[1].ns, c.outside} {
		port := fmt.Sprintf("p%d", i)
		ipn(t, sw, "link", "add", port, "mtu", strconv.Itoa(underlayMTU), "type", "veth", "peer", "name", "eth0", "netns", ns)
		ipn(t, sw, "link", "set", port, "master", "br0", "up")
	}
	ipn(t, c.outside, "addr", "add", c.outside4.String()+"/24", "dev", "eth0")
	ipn(t, c.outside, "addr", "add", c.outside6.String()+"/64", "dev", "eth0", "nodad")
	ipn(t, c.outside, "link", "set", "eth0", "mtu", strconv.Itoa(underlayMTU), "up")
	for i, n := range c.nodes {
		ipn(t, n.ns, "addr", "add", n.under4.String()+"/24", "dev", "eth0")
		ipn(t, n.ns, "addr", "add", n.under6.String()+"/64", "dev", "eth0", "nodad")
		ipn(t, n.ns, "link", "set", "eth0", "mtu", strconv.Itoa(underlayMTU), "up")
		if mode == ModeVXLAN {
			ipn(t, n.ns, "link", "add", "fabric_vxlan", "type", "vxlan", "external", "dstport", "8472", "nolearning")
			ipn(t, n.ns, "link", "set", "fabric_vxlan", "mtu", strconv.Itoa(c.mtu), "up")
		}
		for j := range 2 {
			c.addWorkload(t, n, i, j)
		}
	}
	for i, n := range c.nodes {
		n.dp = openIn(t, n)
		if err := inNS(n.ns, func() error { return n.dp.Apply(c.state(i)) }); err != nil {
			t.Fatalf("apply on node %d: %v", i+1, err)
		}
	}
	return c
}

func openIn(t *testing.T, n *node) *Datapath {
	t.Helper()
	var dp *Datapath
	err := inNS(n.ns, func() error {
		var err error
		dp, err = Open(n.cfg)
		return err
	})
	if err != nil {
		t.Fatalf("open datapath in %s: %v", n.ns, err)
	}
	t.Cleanup(func() { _ = dp.Destroy() }) // a no-op error once closed
	return dp
}

type ipLink struct {
	Ifindex int    `json:"ifindex"`
	Address string `json:"address"`
}

func linkInfo(t *testing.T, ns, dev string) ipLink {
	t.Helper()
	var links []ipLink
	if err := json.Unmarshal([]byte(ipn(t, ns, "-j", "link", "show", dev)), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show %s in %s: %v", dev, ns, err)
	}
	return links[0]
}

func (c *cluster) addWorkload(t *testing.T, n *node, ni, wi int) {
	wl := &workload{
		ns:       newNetNS(t, fmt.Sprintf("n%dw%d", ni+1, wi)),
		ip4:      netip.MustParseAddr(fmt.Sprintf("10.210.%d.%d", ni+1, 10+wi)),
		ip6:      netip.MustParseAddr(fmt.Sprintf("fd00:210:%d::%d", ni+1, 10+wi)),
		identity: uint32(0x10000*(ni+1) + 0x1000 + wi), // cluster bits set, below 2^24
	}
	host := fmt.Sprintf("lxc%d", wi)
	gw4 := n.cidr4.Addr().Next()
	gw6 := n.cidr6.Addr().Next()
	ipn(t, n.ns, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", wl.ns)
	ipn(t, n.ns, "link", "set", host, "up")
	ipn(t, wl.ns, "link", "set", "eth0", "mtu", strconv.Itoa(c.mtu), "up")
	ipn(t, wl.ns, "addr", "add", wl.ip4.String()+"/32", "dev", "eth0")
	ipn(t, wl.ns, "addr", "add", wl.ip6.String()+"/128", "dev", "eth0", "nodad")
	ipn(t, wl.ns, "route", "add", "default", "via", gw4.String(), "dev", "eth0", "onlink")
	ipn(t, wl.ns, "-6", "route", "add", "default", "via", gw6.String(), "dev", "eth0", "onlink")
	h, w := linkInfo(t, n.ns, host), linkInfo(t, wl.ns, "eth0")
	hmac, _ := net.ParseMAC(h.Address)
	wmac, _ := net.ParseMAC(w.Address)
	wl.ep = Endpoint{IPs: []netip.Addr{wl.ip4, wl.ip6}, HostIfIndex: h.Ifindex, HostMAC: hmac, MAC: wmac, Identity: wl.identity}
	n.wls = append(n.wls, wl)
}

// state is what node i's agent would hand its datapath: its endpoints, and
// the other node's endpoints and pod CIDRs in the ipcache.
func (c *cluster) state(i int) State {
	var st State
	for _, wl := range c.nodes[i].wls {
		st.Endpoints = append(st.Endpoints, wl.ep)
	}
	other := c.nodes[1-i]
	node4, node6 := other.under4, other.under4
	if c.mode == ModeNative {
		node6 = other.under6 // native IPv6 goes by the node's IPv6 nexthop
	}
	for _, wl := range other.wls {
		st.IPCache = append(st.IPCache,
			IPCacheEntry{Prefix: netip.PrefixFrom(wl.ip4, 32), Identity: wl.identity, Node: node4},
			IPCacheEntry{Prefix: netip.PrefixFrom(wl.ip6, 128), Identity: wl.identity, Node: node6})
	}
	st.IPCache = append(st.IPCache,
		IPCacheEntry{Prefix: other.cidr4, Node: node4},
		IPCacheEntry{Prefix: other.cidr6, Node: node6})
	st.Services = c.services
	return st
}

func ping(t *testing.T, from *workload, to netip.Addr, extra ...string) {
	t.Helper()
	args := append([]string{"ping", "-c", "2", "-i", "0.2", "-W", "2"}, extra...)
	out, err := nsExec(from.ns, append(args, to.String())...)
	if err != nil {
		t.Errorf("ping %s → %s %v: %v\n%s", from.ip4, to, extra, err, out)
	}
}

// tcpTransfer sends size bytes from one workload to another over TCP and
// checks that all of them, unchanged, arrive.
func tcpTransfer(t *testing.T, from, to *workload, dst netip.Addr, size int) {
	t.Helper()
	var ln net.Listener
	if err := inNS(to.ns, func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(dst, 0).String())
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", to.ns, err)
	}
	defer ln.Close()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	got := make(chan []byte, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		b, _ := io.ReadAll(conn)
		got <- b
	}()
	start := time.Now()
	err := inNS(from.ns, func() error {
		conn, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		_, err = conn.Write(data)
		return err
	})
	if err != nil {
		t.Fatalf("tcp %s → %s: %v", from.ip4, ln.Addr(), err)
	}
	b := <-got
	if !bytes.Equal(b, data) {
		t.Fatalf("tcp %s → %s: received %d of %d bytes (or corrupted)", from.ip4, ln.Addr(), len(b), size)
	}
	el := time.Since(start)
	t.Logf("tcp %s → %s: %d MB in %v (%.0f Mbit/s)", from.ip4, ln.Addr(), size>>20, el.Round(time.Millisecond),
		float64(size*8)/el.Seconds()/1e6)
}

// capture collects the frames arriving on a node's underlay interface
// through an AF_PACKET socket opened in its namespace, until stop is called.
func capture(t *testing.T, n *node) (stop func() [][]byte) {
	t.Helper()
	var fd int
	err := inNS(n.ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		tv := unix.Timeval{Usec: 100000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("capture on %s: %v", n.ns, err)
	}
	var (
		mu     sync.Mutex
		frames [][]byte
		done   = make(chan struct{})
		exited = make(chan struct{})
	)
	go func() {
		defer close(exited)
		buf := make([]byte, 65536)
		for {
			select {
			case <-done:
				return
			default:
			}
			var from unix.Sockaddr
			nr, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			mu.Lock()
			frames = append(frames, append([]byte(nil), buf[:nr]...))
			mu.Unlock()
		}
	}()
	return func() [][]byte {
		close(done)
		<-exited
		unix.Close(fd)
		mu.Lock()
		defer mu.Unlock()
		return frames
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// wire is what a captured underlay frame carries, decoded.
type wire struct {
	kind     string // "vxlan", "geneve", "native"
	vni      uint32
	innerSrc netip.Addr
	innerDst netip.Addr
}

func decodeUnderlay(b []byte) (wire, bool) {
	if len(b) < 34 || binary.BigEndian.Uint16(b[12:]) != 0x0800 {
		return wire{}, false
	}
	ip := b[14:34]
	src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	if ip[9] != 17 || len(b) < 42+8+14+20 {
		return wire{kind: "native", innerSrc: src, innerDst: dst}, true
	}
	port := binary.BigEndian.Uint16(b[36:])
	switch port {
	case 8472:
		vx := b[42:50]
		if vx[0] != 0x08 {
			return wire{}, false
		}
		return decodeInner(wire{kind: "vxlan", vni: uint32(vx[4])<<16 | uint32(vx[5])<<8 | uint32(vx[6])}, b[50:])
	case 6081:
		g, err := parseGeneve(b)
		if err != nil {
			return wire{}, false
		}
		return decodeInner(wire{kind: "geneve", vni: g.vni}, g.inner)
	}
	return wire{kind: "native", innerSrc: src, innerDst: dst}, true
}

func decodeInner(w wire, eth []byte) (wire, bool) {
	if len(eth) < 14+20 || binary.BigEndian.Uint16(eth[12:]) != 0x0800 {
		return w, false
	}
	w.innerSrc = netip.AddrFrom4([4]byte(eth[14+12 : 14+16]))
	w.innerDst = netip.AddrFrom4([4]byte(eth[14+16 : 14+20]))
	return w, true
}

var tooLong = regexp.MustCompile(`(?i)message too long`)

func testMode(t *testing.T, mode Mode) {
	c := newCluster(t, mode)
	n1, n2 := c.nodes[0], c.nodes[1]
	a, b := n1.wls[0], n1.wls[1] // same node
	x, y := n2.wls[0], n2.wls[1] // the other node

	t.Run("same node", func(t *testing.T) {
		ping(t, a, b.ip4)
		ping(t, a, b.ip6)
	})
	t.Run("cross node", func(t *testing.T) {
		ping(t, a, x.ip4)
		ping(t, a, x.ip6)
		ping(t, y, b.ip4)
		ping(t, y, b.ip6)
	})
	t.Run("wire format", func(t *testing.T) {
		stop := capture(t, n2)
		ping(t, a, x.ip4)
		frames := stop()
		var found bool
		for _, f := range frames {
			w, ok := decodeUnderlay(f)
			if !ok || w.innerSrc != a.ip4 || w.innerDst != x.ip4 {
				continue
			}
			found = true
			switch mode {
			case ModeNative:
				if w.kind != "native" {
					t.Errorf("native mode sent %s on the wire", w.kind)
				}
			default:
				if w.kind != string(mode) || w.vni != a.identity {
					t.Errorf("%s mode: on the wire %s with VNI %d; want %s with VNI %d (the sender's identity)",
						mode, w.kind, w.vni, mode, a.identity)
				}
			}
		}
		if !found {
			t.Errorf("no frame from %s to %s among %d captured on %s's underlay", a.ip4, x.ip4, len(frames), n2.ns)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		tcpTransfer(t, a, x, x.ip4, 8<<20)
		tcpTransfer(t, y, b, b.ip6, 8<<20)
	})
	t.Run("mtu", func(t *testing.T) {
		max4 := c.mtu - 28
		ping(t, a, x.ip4, "-M", "do", "-s", strconv.Itoa(max4))
		ping(t, a, x.ip6, "-M", "do", "-s", strconv.Itoa(c.mtu-48))
		out, err := nsExec(a.ns, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", strconv.Itoa(max4+1), x.ip4.String())
		if err == nil || !tooLong.MatchString(out) {
			t.Errorf("ping -s %d (MTU+1) did not fail with \"message too long\": %v\n%s", max4+1, err, out)
		}
		t.Logf("workload MTU %d: ping -M do -s %d passes, -s %d fails locally: %s", c.mtu, max4, max4+1,
			strings.TrimSpace(tooLongLine(out)))
	})
	t.Run("services", func(t *testing.T) { testServices(t, c) })
	t.Run("identities", func(t *testing.T) {
		seen, err := n2.dp.IngressSeen()
		if err != nil {
			t.Fatal(err)
		}
		if seen[[2]uint32{a.identity, x.identity}] == 0 {
			t.Errorf("node 2 ingress_seen %v lacks {%d %d}", seen, a.identity, x.identity)
		}
		seen, err = n1.dp.IngressSeen()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range [][2]uint32{{y.identity, b.identity}, {x.identity, a.identity}, {a.identity, b.identity}} {
			if seen[k] == 0 {
				t.Errorf("node 1 ingress_seen %v lacks %v", seen, k)
			}
		}
	})
	t.Run("idempotent apply", func(t *testing.T) {
		before := pinnedNames(t, n1)
		for range 2 {
			if err := inNS(n1.ns, func() error { return n1.dp.Apply(c.state(0)) }); err != nil {
				t.Fatal(err)
			}
		}
		if after := pinnedNames(t, n1); after != before {
			t.Errorf("apply of the same state changed the pins: %s → %s", before, after)
		}
	})
	t.Run("restart", func(t *testing.T) {
		// Ping every 10ms while both agents "restart": Close, then Open and
		// Apply again. Pinned links keep forwarding in between.
		cmd := exec.Command("ip", "netns", "exec", a.ns, "ping", "-q", "-i", "0.01", "-c", "300", "-W", "1", x.ip4.String())
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		for i, n := range c.nodes {
			if err := n.dp.Close(); err != nil {
				t.Errorf("close node %d: %v", i+1, err)
			}
		}
		time.Sleep(300 * time.Millisecond) // no agent at all for a while
		for i, n := range c.nodes {
			n.dp = openIn(c.t, n) // lives past this subtest
			if err := inNS(n.ns, func() error { return n.dp.Apply(c.state(i)) }); err != nil {
				t.Errorf("apply after restart on node %d: %v", i+1, err)
			}
		}
		err := cmd.Wait()
		m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out.String())
		if err != nil || m == nil || m[1] != m[2] {
			t.Errorf("ping across the restart lost packets: %v\n%s", err, out.String())
		} else {
			t.Logf("restart: %s of %s pings answered", m[2], m[1])
		}
		ping(t, a, x.ip6)
	})
	t.Run("endpoint removal", func(t *testing.T) {
		st := c.state(0)
		st.Endpoints = st.Endpoints[:1] // b leaves node 1
		if err := inNS(n1.ns, func() error { return n1.dp.Apply(st) }); err != nil {
			t.Fatal(err)
		}
		if names := pinnedNames(t, n1); strings.Contains(names, lxcPin(uint32(b.ep.HostIfIndex))) {
			t.Errorf("link of the removed endpoint still pinned: %s", names)
		}
		if out, err := nsExec(a.ns, "ping", "-c", "1", "-W", "1", b.ip4.String()); err == nil {
			t.Errorf("ping to a removed endpoint answered:\n%s", out)
		}
	})
}

func pinnedNames(t *testing.T, n *node) string {
	t.Helper()
	var names []string
	err := inNS(n.ns, func() error {
		var err error
		names, err = n.dp.pinnedLinks()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(names, ",")
}

func tooLongLine(s string) string {
	for _, line := range strings.Split(s, "\n") {
		if tooLong.MatchString(line) {
			return line
		}
	}
	return ""
}

func TestDatapathVXLANRoot(t *testing.T)  { testMode(t, ModeVXLAN) }
func TestDatapathGeneveRoot(t *testing.T) { testMode(t, ModeGeneve) }
func TestDatapathNativeRoot(t *testing.T) { testMode(t, ModeNative) }
