package tunnel

import (
	"strings"
	"testing"
)

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"vxlan": ModeVXLAN, "Geneve": ModeGeneve, " native ": ModeNative} {
		got, err := ParseMode(in)
		if err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := ParseMode("gre")
	if err == nil {
		t.Fatal("ParseMode(gre) succeeded")
	}
	for _, part := range []string{"--datapath-mode", "gre", "vxlan", "geneve", "native"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not mention %q", err, part)
		}
	}
}

func TestOverheadAndMTU(t *testing.T) {
	cases := []struct {
		mode     Mode
		v6       bool
		overhead int
		mtu      int // for a 1500-byte underlay
	}{
		{ModeVXLAN, false, 50, 1450},
		{ModeVXLAN, true, 70, 1450},
		{ModeGeneve, false, 50, 1450},
		{ModeGeneve, true, 70, 1450},
		{ModeNative, false, 0, 1500},
		{ModeNative, true, 0, 1500},
	}
	for _, c := range cases {
		if got := Overhead(c.mode, c.v6); got != c.overhead {
			t.Errorf("Overhead(%s, v6=%v) = %d; want %d", c.mode, c.v6, got, c.overhead)
		}
		if got := WorkloadMTU(c.mode, 1500); got != c.mtu {
			t.Errorf("WorkloadMTU(%s, 1500) = %d; want %d", c.mode, got, c.mtu)
		}
	}
	if got := WorkloadMTU(ModeGeneve, 9000); got != 8950 {
		t.Errorf("WorkloadMTU(geneve, 9000) = %d; want 8950", got)
	}
}
