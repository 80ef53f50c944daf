package gossip

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.NodeName = "n1"
	if err := ok.Validate(); err != nil {
		t.Fatalf("DefaultConfig with a name: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; "" = valid
	}{
		{"default", func(*Config) {}, ""},
		{"keys", func(c *Config) { c.Keys = [][]byte{make([]byte, 16), make([]byte, 32)} }, ""},
		{"port 0", func(c *Config) { c.BindPort = 0 }, ""},
		{"advertise", func(c *Config) { c.AdvertiseAddr, c.AdvertisePort = "10.0.0.1", 7000 }, ""},
		{"no name", func(c *Config) { c.NodeName = "" }, "NodeName is empty"},
		{"long name", func(c *Config) { c.NodeName = strings.Repeat("n", 129) }, "NodeName"},
		{"no cluster", func(c *Config) { c.ClusterName = "" }, "ClusterName is empty"},
		{"id 0", func(c *Config) { c.ClusterID = 0 }, "gossip: ClusterID 0 is invalid: use 1..65535"},
		{"id big", func(c *Config) { c.ClusterID = 65536 }, "use 1..65535"},
		{"bind host", func(c *Config) { c.BindAddr = "node1" }, "BindAddr"},
		{"bind port", func(c *Config) { c.BindPort = 70000 }, "BindPort"},
		{"advertise host", func(c *Config) { c.AdvertiseAddr = "x" }, "AdvertiseAddr"},
		{"advertise any", func(c *Config) { c.AdvertiseAddr = "0.0.0.0" }, "unspecified"},
		{"advertise port", func(c *Config) { c.AdvertisePort = -1 }, "AdvertisePort"},
		{"key size", func(c *Config) { c.Keys = [][]byte{make([]byte, 10)} }, "Keys[0]: key is 10 bytes"},
		{"dup key", func(c *Config) { c.Keys = [][]byte{make([]byte, 16), make([]byte, 16)} }, "Keys[1] repeats"},
		{"probe interval", func(c *Config) { c.ProbeInterval = 0 }, "ProbeInterval"},
		{"probe timeout", func(c *Config) { c.ProbeTimeout = time.Second }, "ProbeTimeout"},
		{"gossip interval", func(c *Config) { c.GossipInterval = -1 }, "GossipInterval"},
		{"suspicion", func(c *Config) { c.SuspicionMult = 0 }, "SuspicionMult"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestNewRejectsMismatchedMeta(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeName, cfg.BindAddr, cfg.BindPort = "a", "127.0.0.1", 0
	cfg.Logger = slog.New(slog.DiscardHandler)
	if _, err := New(cfg, Meta{Name: "b"}); err == nil {
		t.Error("meta naming another node accepted")
	}
	if _, err := New(cfg, Meta{ClusterID: 99}); err == nil {
		t.Error("meta of another cluster accepted")
	}
}

func TestWithPort(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1":       "10.0.0.1:7946",
		"10.0.0.1:8000":  "10.0.0.1:8000",
		"::1":            "[::1]:7946",
		"[::1]:8000":     "[::1]:8000",
		"node1":          "node1:7946",
		"node1:8000":     "node1:8000",
		"node1:notaport": "",
		"":               "",
	} {
		got, err := withPort(in, 7946)
		if want == "" {
			if err == nil {
				t.Errorf("withPort(%q) = %q, want error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("withPort(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
}

func TestParseMemberlistLine(t *testing.T) {
	for in, want := range map[string]struct {
		level slog.Level
		msg   string
	}{
		"[DEBUG] memberlist: Stream connection\n": {slog.LevelDebug, "Stream connection"},
		"[INFO] memberlist: Suspect c":            {slog.LevelInfo, "Suspect c"},
		"[WARN] memberlist: Refuting":             {slog.LevelWarn, "Refuting"},
		"[ERR] memberlist: Conflicting address":   {slog.LevelError, "Conflicting address"},
		"plain line":                              {slog.LevelInfo, "plain line"},
	} {
		level, msg := parseMemberlistLine(in)
		if level != want.level || msg != want.msg {
			t.Errorf("parse %q = %v %q, want %v %q", in, level, msg, want.level, want.msg)
		}
	}
}
