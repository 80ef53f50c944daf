package bgp

import (
	"testing"
)

func TestParseCommunity(t *testing.T) {
	good := map[string]Community{
		"65000:100":      {A: 65000, B: 100},
		"0:0":            {},
		"65535:65535":    {A: 65535, B: 65535},
		"1:2:3":          {Large: true, A: 1, B: 2, C: 3},
		"4294967295:0:7": {Large: true, A: 4294967295, C: 7},
		"no-export":      {A: 0xFFFF, B: 0xFF01},
		"NO-ADVERTISE":   {A: 0xFFFF, B: 0xFF02},
	}
	for s, want := range good {
		got, err := ParseCommunity(s)
		if err != nil || got != want {
			t.Errorf("ParseCommunity(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "1", "65536:1", "1:65536", "-1:1", "a:b", "1:2:3:4", "1::3", "4294967296:1:1", " 1:2"} {
		if c, err := ParseCommunity(s); err == nil {
			t.Errorf("ParseCommunity(%q) = %+v, want an error", s, c)
		}
	}
}

func FuzzParseCommunity(f *testing.F) {
	for _, s := range []string{"65000:100", "1:2:3", "no-export", "", ":", "1:2:3:4", "65536:0", "+1:2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCommunity(s)
		if err != nil {
			return
		}
		if !c.Large && (c.A > 0xFFFF || c.B > 0xFFFF) {
			t.Fatalf("%q: standard community with a part over 16 bits: %+v", s, c)
		}
		// What String writes, ParseCommunity reads back to the same value.
		again, err := ParseCommunity(c.String())
		if err != nil || again != c {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, c, c.String(), again, err)
		}
	})
}
