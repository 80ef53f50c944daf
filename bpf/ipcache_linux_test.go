//go:build linux

package bpf

import (
	"cmp"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

// TestIPCacheHostMapRoot checks the split of the ipcache: host entries in
// the ipcache_host hash, shorter prefixes in the trie, the programs reading
// the hash first; and that an agent restarting on pins of a version without
// ipcache_host (its /32s in the trie) keeps forwarding to them, and that
// Apply moves them over.
func TestIPCacheHostMapRoot(t *testing.T) {
	pin := newPinDir(t)
	ns := newNetNS(t, "ipc")
	cfg := Config{PinDir: pin, Mode: ModeGeneve, UnderlayIfName: "lo",
		UnderlayIPv4: netip.MustParseAddr("10.77.0.1"), GenevePort: 6081}
	wl := netip.MustParseAddr("10.210.1.10")
	host := IPCacheEntry{Prefix: netip.MustParsePrefix("10.210.2.10/32"), Identity: 2000, Node: netip.MustParseAddr("10.77.0.3")}
	host6 := IPCacheEntry{Prefix: netip.MustParsePrefix("fd00:210:2::10/128"), Identity: 2000, Node: netip.MustParseAddr("10.77.0.3")}
	cidr := IPCacheEntry{Prefix: netip.MustParsePrefix("10.210.2.0/24"), Node: netip.MustParseAddr("10.77.0.2")}
	state := func(ipc ...IPCacheEntry) State {
		return State{
			Endpoints: []Endpoint{{IPs: []netip.Addr{wl}, HostIfIndex: 1, MAC: wlMAC, HostMAC: hostMAC, Identity: 1000}},
			IPCache:   ipc,
		}
	}
	open := func() *Datapath {
		t.Helper()
		var d *Datapath
		if err := inNS(ns, func() (err error) { d, err = Open(cfg); return err }); err != nil {
			t.Fatalf("open: %v", err)
		}
		return d
	}
	apply := func(d *Datapath, st State) {
		t.Helper()
		if err := inNS(ns, func() error { return d.Apply(st) }); err != nil {
			t.Fatalf("apply: %v", err)
		}
	}
	// tunnel returns the node a packet to dst is encapsulated towards.
	tunnel := func(d *Datapath, dst string) netip.Addr {
		t.Helper()
		ret, out := run(t, d.lxc.LxcIngress, ipv4Packet(wl, netip.MustParseAddr(dst), 1, icmpEcho()))
		if ret != tcActRedirect {
			t.Fatalf("to %s: verdict %d; want redirect", dst, ret)
		}
		g, err := parseGeneve(out)
		if err != nil {
			t.Fatalf("to %s: %v", dst, err)
		}
		return g.outerDst
	}
	count := func(m *ebpf.Map) int {
		t.Helper()
		n := 0
		var k, v []byte
		it := m.Iterate()
		for it.Next(&k, &v) {
			n++
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return n
	}
	readBack := func(d *Datapath, want ...IPCacheEntry) {
		t.Helper()
		got, err := d.IPCache()
		if err != nil {
			t.Fatal(err)
		}
		byPrefix := func(x, y IPCacheEntry) int { return cmp.Compare(x.Prefix.String(), y.Prefix.String()) }
		slices.SortFunc(got, byPrefix)
		slices.SortFunc(want, byPrefix)
		if !slices.Equal(got, want) {
			t.Errorf("IPCache() = %v; want %v", got, want)
		}
	}

	d := open()
	apply(d, state(cidr, host, host6))
	if h, p := count(d.lxc.IpcacheHost), count(d.lxc.Ipcache); h != 2 || p != 1 {
		t.Errorf("ipcache_host holds %d entries, ipcache %d; want 2 and 1", h, p)
	}
	readBack(d, cidr, host, host6)
	if got := tunnel(d, "10.210.2.10"); got != host.Node {
		t.Errorf("to the host entry: tunnel to %s; want %s", got, host.Node)
	}
	if got := tunnel(d, "10.210.2.33"); got != cidr.Node {
		t.Errorf("to the pod CIDR: tunnel to %s; want %s", got, cidr.Node)
	}

	// What an older version leaves: the host entries in the trie, no
	// ipcache_host pin.
	for _, e := range []IPCacheEntry{host, host6} {
		k := ipcacheKeyOf(e.Prefix)
		if err := d.lxc.Ipcache.Put(k, remoteInfoOf(e)); err != nil {
			t.Fatal(err)
		}
		if err := d.lxc.IpcacheHost.Delete(k.hostKey()); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.lxc.IpcacheHost.Unpin(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d = open()
	t.Cleanup(func() {
		if err := d.Destroy(); err != nil {
			t.Errorf("destroy: %v", err)
		}
	})
	if _, err := os.Stat(filepath.Join(pin, "ipcache_host")); err != nil {
		t.Errorf("ipcache_host not pinned again on open: %v", err)
	}
	if h, p := count(d.lxc.IpcacheHost), count(d.lxc.Ipcache); h != 0 || p != 3 {
		t.Errorf("after open on the old pins: ipcache_host holds %d entries, ipcache %d; want 0 and 3", h, p)
	}
	readBack(d, cidr, host, host6)
	if got := tunnel(d, "10.210.2.10"); got != host.Node {
		t.Errorf("to a host entry still in the trie: tunnel to %s; want %s", got, host.Node)
	}
	apply(d, state(cidr, host, host6))
	if h, p := count(d.lxc.IpcacheHost), count(d.lxc.Ipcache); h != 2 || p != 1 {
		t.Errorf("after apply on the old pins: ipcache_host holds %d entries, ipcache %d; want 2 and 1", h, p)
	}
	readBack(d, cidr, host, host6)
	if got := tunnel(d, "10.210.2.10"); got != host.Node {
		t.Errorf("to the moved host entry: tunnel to %s; want %s", got, host.Node)
	}

	// Declarative: a host entry removed from the state leaves the hash.
	apply(d, state(cidr, host6))
	var v remoteInfo
	if err := d.lxc.IpcacheHost.Lookup(ipcacheKeyOf(host.Prefix).hostKey(), &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("removed host entry: lookup gave %+v, %v; want it gone", v, err)
	}
	readBack(d, cidr, host6)
	if got := tunnel(d, "10.210.2.10"); got != cidr.Node {
		t.Errorf("after the host entry left: tunnel to %s; want the pod CIDR's %s", got, cidr.Node)
	}
}
