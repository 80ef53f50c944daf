package bpf

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	c := DefaultConfig()
	c.UnderlayIPv4 = netip.MustParseAddr("10.77.0.1")
	return c
}

func TestConfigValidate(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	cases := map[string]struct {
		mutate func(*Config)
		want   string
	}{
		"relative pin dir": {func(c *Config) { c.PinDir = "fabric" }, "pin dir"},
		"bad mode":         {func(c *Config) { c.Mode = "gre" }, "mode \"gre\""},
		"no underlay":      {func(c *Config) { c.UnderlayIfName = "" }, "underlay interface"},
		"v6 as v4":         {func(c *Config) { c.UnderlayIPv4 = netip.MustParseAddr("fd77::1") }, "not an IPv4"},
		"v4 as v6":         {func(c *Config) { c.UnderlayIPv6 = netip.MustParseAddr("10.0.0.1") }, "not an IPv6"},
		"no vxlan dev":     {func(c *Config) { c.VXLANIfName = "" }, "VXLAN device"},
		"geneve port":      {func(c *Config) { c.GenevePort = 70000 }, "geneve port"},
		"service entries":  {func(c *Config) { c.ServiceEntries = -1 }, "ServiceEntries"},
		"backend entries":  {func(c *Config) { c.BackendEntries = 1 << 25 }, "BackendEntries"},
		"affinity entries": {func(c *Config) { c.AffinityEntries = -5 }, "AffinityEntries"},
		"nat entries":      {func(c *Config) { c.NATEntries = -1 }, "NATEntries"},
		"nat range order":  {func(c *Config) { c.NATPortMin, c.NATPortMax = 62000, 61000 }, "NATPortMin..NATPortMax"},
		"nat range low":    {func(c *Config) { c.NATPortMin, c.NATPortMax = 80, 2000 }, "NATPortMin..NATPortMax"},
		"nat half set":     {func(c *Config) { c.NATPortMin, c.NATPortMax = 0, 2000 }, "NATPortMin..NATPortMax"},
		"tcp timeout":      {func(c *Config) { c.CTTCPTimeout = time.Second }, "CTTCPTimeout"},
		"syn timeout":      {func(c *Config) { c.CTSYNTimeout = -time.Second }, "CTSYNTimeout"},
		"closing timeout":  {func(c *Config) { c.CTTCPClosingTimeout = 8 * 24 * time.Hour }, "CTTCPClosingTimeout"},
		"any timeout":      {func(c *Config) { c.CTAnyTimeout = time.Millisecond }, "CTAnyTimeout"},
	}
	for name, c := range cases {
		cfg := validConfig()
		c.mutate(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate() = %v; want an error mentioning %q", name, err, c.want)
		}
	}
	// Geneve and native modes need no VXLAN device.
	cfg := validConfig()
	cfg.Mode, cfg.VXLANIfName = ModeNative, ""
	if err := cfg.Validate(); err != nil {
		t.Errorf("native without vxlan device: %v", err)
	}
	// Zero NAT and conntrack settings mean today's defaults.
	var zero Config
	if lo, hi := zero.natPorts(); lo != DefaultNATPortMin || hi != DefaultNATPortMax {
		t.Errorf("zero NAT ports give %d..%d", lo, hi)
	}
	if got, want := zero.ctTimeouts(), DefaultConfig().ctTimeouts(); got != want ||
		got != (ctTimeouts{time.Hour, time.Minute, 10 * time.Second, 5 * time.Minute}) {
		t.Errorf("zero timeouts give %+v; want %+v (as before they were configurable)", got, want)
	}
}

func TestConntrackLifetimes(t *testing.T) {
	ct := DefaultConfig().ctTimeouts()
	for _, c := range []struct {
		proto uint8
		flags uint32
		want  time.Duration
	}{
		{ProtoTCP, 0, time.Minute}, {ProtoTCP, ctSeenReply, time.Hour}, {ProtoTCP, ctSeenReply | ctClosing, 10 * time.Second},
		{ProtoTCP, ctClosing, 10 * time.Second}, {ProtoUDP, ctSeenReply, 5 * time.Minute}, {ProtoICMP, 0, 5 * time.Minute},
	} {
		if got := ct.ctLife(c.proto, c.flags); got != c.want {
			t.Errorf("ctLife(%d, %#x) = %v; want %v", c.proto, c.flags, got, c.want)
		}
	}
	const s = uint64(time.Second)
	if !idle(100*s, 200*s, time.Minute) || idle(100*s, 130*s, time.Minute) || idle(300*s, 200*s, time.Minute) {
		t.Error("idle misjudges last-seen times (one written after now must count as fresh)")
	}
	k := ctKey{Sport: 8080, Dport: 40000, Proto: ProtoTCP, Family: 4}
	v := lbRevnat{Port: 80, Addr: [16]byte{10, 96, 0, 10}, Client: [16]byte{10, 210, 1, 10}}
	want := ctKey{Saddr: v.Client, Daddr: v.Addr, Sport: 40000, Dport: 80, Proto: ProtoTCP, Family: 4}
	if got := lbCTKeyOfRevnat(k, v); got != want {
		t.Errorf("lbCTKeyOfRevnat = %+v; want %+v", got, want)
	}
}

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string][3]int{"32768\t60999\n": {32768, 60999, 1}, "1024 2048": {1024, 2048, 1},
		"60999 32768": {0, 0, 0}, "": {0, 0, 0}, "a b": {0, 0, 0}, "1 2 3": {0, 0, 0}} {
		lo, hi, ok := parsePortRange(in)
		if ok != (want[2] == 1) || (ok && (lo != want[0] || hi != want[1])) {
			t.Errorf("parsePortRange(%q) = %d, %d, %v; want %v", in, lo, hi, ok, want)
		}
	}
}

func FuzzParsePortRange(f *testing.F) {
	for _, s := range []string{"32768\t60999\n", "0 65535", "", "-1 5", "99999999999999999999 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lo, hi, ok := parsePortRange(s)
		if ok && lo > hi {
			t.Errorf("parsePortRange(%q) = %d > %d but ok", s, lo, hi)
		}
	})
}

func TestKeyEncodings(t *testing.T) {
	// Sizes are those of the C structs (include/common.h).
	for _, c := range []struct {
		v    any
		size int
	}{{endpointKey{}, 20}, {endpointInfo{}, 24}, {ipcacheKey{}, 24}, {ipcacheHostKey{}, 20}, {remoteInfo{}, 24}, {seenKey{}, 8}} {
		if got := binary.Size(c.v); got != c.size {
			t.Errorf("%T is %d bytes; want %d", c.v, got, c.size)
		}
	}

	k := endpointKeyOf(netip.MustParseAddr("10.210.1.10"))
	if k.Family != familyV4 || k.Addr != [16]byte{10, 210, 1, 10} {
		t.Errorf("endpoint key of 10.210.1.10 = %+v", k)
	}
	if k2 := endpointKeyOf(netip.MustParseAddr("::ffff:10.210.1.10")); k2 != k {
		t.Errorf("IPv4-mapped address keyed differently: %+v", k2)
	}
	k6 := endpointKeyOf(netip.MustParseAddr("fd00:210:1::10"))
	if k6.Family != familyV6 || k6.Addr != netip.MustParseAddr("fd00:210:1::10").As16() {
		t.Errorf("endpoint key of fd00:210:1::10 = %+v", k6)
	}

	p := ipcacheKeyOf(netip.MustParsePrefix("10.210.2.77/24"))
	if p.Prefixlen != 32+24 || p.Family != familyV4 || p.Addr != [16]byte{10, 210, 2, 0} {
		t.Errorf("ipcache key of 10.210.2.77/24 = %+v (want masked, prefixlen 56)", p)
	}
	if pm := ipcacheKeyOf(netip.MustParsePrefix("::ffff:10.210.2.0/120")); pm != p {
		t.Errorf("IPv4-mapped prefix keyed as %+v; want %+v", pm, p)
	}
	p6 := ipcacheKeyOf(netip.MustParsePrefix("fd00:210:2::5/128"))
	if p6.Prefixlen != 32+128 || p6.Family != familyV6 {
		t.Errorf("ipcache key of a /128 = %+v", p6)
	}

	r := remoteInfoOf(IPCacheEntry{Identity: 7, Node: netip.MustParseAddr("10.77.0.2")})
	if r.Identity != 7 || r.NodeFamily != familyV4 || r.Node != [16]byte{10, 77, 0, 2} {
		t.Errorf("remote info = %+v", r)
	}
	if r := remoteInfoOf(IPCacheEntry{Identity: 7}); r.NodeFamily != 0 {
		t.Errorf("entry without node has node family %d", r.NodeFamily)
	}
}

func TestCompileState(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	hmac := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	ep := Endpoint{IPs: []netip.Addr{netip.MustParseAddr("10.210.1.10"), netip.MustParseAddr("fd00:210:1::10")},
		HostIfIndex: 5, MAC: mac, HostMAC: hmac, Identity: 1000}
	d, err := compile(State{
		Endpoints: []Endpoint{ep},
		IPCache: []IPCacheEntry{
			{Prefix: netip.MustParsePrefix("10.210.2.0/24"), Node: netip.MustParseAddr("10.77.0.2")},
			{Prefix: netip.MustParsePrefix("10.210.2.10/32"), Identity: 2000, Node: netip.MustParseAddr("10.77.0.2")},
			{Prefix: netip.MustParsePrefix("fd00:210:2::10/128"), Identity: 2000, Node: netip.MustParseAddr("10.77.0.2")},
			{Prefix: netip.MustParsePrefix("fd00:210:2::/64"), Node: netip.MustParseAddr("10.77.0.2")},
		},
	}, ModeVXLAN)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.endpoints) != 2 || len(d.devices) != 1 || len(d.ipcache) != 2 || len(d.hosts) != 2 {
		t.Errorf("compiled %d endpoints, %d devices, %d ipcache prefixes, %d host entries; want 2, 1, 2, 2",
			len(d.endpoints), len(d.devices), len(d.ipcache), len(d.hosts))
	}
	// Full-length entries go to ipcache_host only, IPv4-mapped ones as IPv4.
	for k := range d.ipcache {
		if k.fullLength() {
			t.Errorf("host entry %+v in the trie", k)
		}
	}
	if _, ok := d.hosts[ipcacheHostKey{Family: familyV4, Addr: [16]byte{10, 210, 2, 10}}]; !ok {
		t.Errorf("10.210.2.10/32 not among the host entries %v", d.hosts)
	}
	mapped, err := compile(State{IPCache: []IPCacheEntry{{Prefix: netip.MustParsePrefix("::ffff:10.210.2.10/128")}}}, ModeVXLAN)
	if err != nil || len(mapped.hosts) != 1 || len(mapped.ipcache) != 0 {
		t.Errorf("IPv4-mapped /128: %d host entries, %d prefixes, %v; want 1, 0", len(mapped.hosts), len(mapped.ipcache), err)
	}
	dup := []IPCacheEntry{{Prefix: netip.MustParsePrefix("10.210.2.10/32")}, {Prefix: netip.MustParsePrefix("::ffff:10.210.2.10/128")}}
	if _, err := compile(State{IPCache: dup}, ModeVXLAN); err == nil {
		t.Error("a host listed twice (once IPv4-mapped) was accepted")
	}

	big := ep
	big.Identity = 1 << 24
	if _, err := compile(State{Endpoints: []Endpoint{big}}, ModeGeneve); !errors.Is(err, ErrNotSupported) {
		t.Errorf("identity beyond the VNI in geneve mode: %v; want ErrNotSupported", err)
	}
	if _, err := compile(State{Endpoints: []Endpoint{big}}, ModeNative); err != nil {
		t.Errorf("identity beyond the VNI in native mode: %v", err)
	}
	if _, err := compile(State{Endpoints: []Endpoint{ep, ep}}, ModeVXLAN); err == nil {
		t.Error("the same IP on two endpoints was accepted")
	}
	// A bad entry is reported but does not hold back the good ones.
	part, err := compile(State{Endpoints: []Endpoint{big, ep}}, ModeVXLAN)
	if err == nil || len(part.endpoints) != 2 {
		t.Errorf("partly invalid state: %d endpoint keys, %v; want the valid endpoint's 2 and an error", len(part.endpoints), err)
	}
	v6node := []IPCacheEntry{{Prefix: netip.MustParsePrefix("fd00:210:2::/64"), Node: netip.MustParseAddr("fd77::2")}}
	if _, err := compile(State{IPCache: v6node}, ModeVXLAN); err == nil {
		t.Error("an IPv6 tunnel endpoint was accepted in vxlan mode")
	}
	if _, err := compile(State{IPCache: v6node}, ModeNative); err != nil {
		t.Errorf("an IPv6 nexthop in native mode: %v", err)
	}
}

// entryOf must read back exactly what ipcacheKeyOf and remoteInfoOf wrote,
// or what operators see of the kernel's ipcache would lie.
func TestIPCacheEntryRoundTrip(t *testing.T) {
	for _, e := range []IPCacheEntry{
		{Prefix: netip.MustParsePrefix("10.201.3.0/24"), Node: netip.MustParseAddr("10.99.1.12")},
		{Prefix: netip.MustParsePrefix("10.201.3.7/32"), Identity: 0x11000, Node: netip.MustParseAddr("10.99.1.12")},
		{Prefix: netip.MustParsePrefix("fd00:201::d00/120"), Node: netip.MustParseAddr("fd99:1::12")},
		{Prefix: netip.MustParsePrefix("10.99.1.11/32"), Identity: 6},
		{Prefix: netip.MustParsePrefix("fd00:201::d07/128"), Identity: 0x11000, Node: netip.MustParseAddr("fd99:1::12")},
	} {
		k := ipcacheKeyOf(e.Prefix)
		got := entryOf(k, remoteInfoOf(e))
		if got != e {
			t.Errorf("round trip of %+v gave %+v", e, got)
		}
		// Host entries are read back from ipcache_host, by its key.
		if k.fullLength() {
			if got := entryOf(k.hostKey().trieKey(), remoteInfoOf(e)); got != e {
				t.Errorf("round trip of %+v through ipcache_host gave %+v", e, got)
			}
		}
	}
}
