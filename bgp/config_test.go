package bgp

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	c := DefaultConfig()
	c.RouterID = netip.MustParseAddr("10.0.0.1")
	c.LocalASN = 65001
	c.Peers = []PeerConfig{
		{Address: netip.MustParseAddr("10.0.0.254"), RemoteASN: 65000},
		{Address: netip.MustParseAddr("fd00::254"), RemoteASN: 65000, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second},
	}
	c.Communities = []string{"65000:100", "1:2:3", "no-export"}
	return c
}

func TestValidate(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no router id", func(c *Config) { c.RouterID = netip.Addr{} }, "bgp.routerID"},
		{"v6 router id", func(c *Config) { c.RouterID = netip.MustParseAddr("fd00::1") }, "bgp.routerID"},
		{"asn 0", func(c *Config) { c.LocalASN = 0 }, "bgp.localASN: 0 is not an ASN"},
		{"listen port", func(c *Config) { c.ListenPort = -2 }, "bgp.listenPort"},
		{"community", func(c *Config) { c.Communities = []string{"65000:100", "70000:1"} }, "bgp.communities[1]"},
		{"peer asn", func(c *Config) { c.Peers[1].RemoteASN = 0 }, "bgp.peers[1].remoteASN: 0 is not an ASN; use 1..4294967295"},
		{"peer address", func(c *Config) { c.Peers[0].Address = netip.Addr{} }, "bgp.peers[0].address"},
		{"duplicate peer", func(c *Config) { c.Peers[1].Address = c.Peers[0].Address }, "bgp.peers[1].address: 10.0.0.254 is also peers[0]"},
		{"hold time", func(c *Config) { c.Peers[0].HoldTime = time.Second }, "bgp.peers[0].holdTime"},
		{"keepalive", func(c *Config) { c.Peers[1].Keepalive = 9 * time.Second }, "bgp.peers[1].keepalive"},
		{"fractional", func(c *Config) { c.Peers[1].HoldTime = 9500 * time.Millisecond }, "whole seconds"},
		{"restart without gr", func(c *Config) { c.Peers[0].RestartTime = time.Minute }, "bgp.peers[0].restartTime"},
		{"password", func(c *Config) { c.Peers[0].Password = strings.Repeat("x", 81) }, "bgp.peers[0].password"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			c.Peers = append([]PeerConfig(nil), c.Peers...)
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}, nil); err == nil {
		t.Fatal("New(Config{}) succeeded")
	}
}
