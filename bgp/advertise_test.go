package bgp

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func newTestSpeaker(t *testing.T) *Speaker {
	t.Helper()
	s, err := New(validConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBuildPathsErrors(t *testing.T) {
	s := newTestSpeaker(t)
	cases := []struct {
		advs []Advertisement
		want string
	}{
		{[]Advertisement{{}}, "advertisements[0].prefix"},
		{[]Advertisement{{Prefix: netip.MustParsePrefix("10.0.0.0/24")}, {Prefix: netip.MustParsePrefix("10.0.0.1/24")}}, "advertisements[1].prefix: 10.0.0.0/24 is listed twice"},
		{[]Advertisement{{Prefix: netip.MustParsePrefix("10.0.0.0/24"), NextHop: netip.MustParseAddr("fd00::1")}}, "advertisements[0].nextHop"},
		{[]Advertisement{{Prefix: netip.MustParsePrefix("fd00::/64"), NextHop: netip.MustParseAddr("10.0.0.1")}}, "advertisements[0].nextHop"},
		{[]Advertisement{{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Communities: []string{"x"}}}, "advertisements[0].communities[0]"},
		{[]Advertisement{{Prefix: netip.MustParsePrefix("::ffff:10.0.0.0/120")}}, "IPv4-mapped"},
	}
	for _, tc := range cases {
		_, err := s.buildPaths(tc.advs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("buildPaths(%v) = %v, want an error containing %q", tc.advs, err, tc.want)
		}
	}
}

func TestBuildPathsSharesAttributes(t *testing.T) {
	s := newTestSpeaker(t)
	advs := []Advertisement{
		{Prefix: netip.MustParsePrefix("10.1.0.0/24")},
		{Prefix: netip.MustParsePrefix("10.2.0.0/24")},
		{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Communities: []string{"65000:7"}},
		{Prefix: netip.MustParsePrefix("fd00:1::/64"), NextHop: netip.MustParseAddr("fd00::9")},
	}
	got, err := s.buildPaths(advs)
	if err != nil {
		t.Fatal(err)
	}
	a, b := got[netip.MustParsePrefix("10.1.0.0/24")], got[netip.MustParsePrefix("10.2.0.0/24")]
	if a.attrs != b.attrs || &a.path.PattrsBinary[0][0] != &b.path.PattrsBinary[0][0] {
		t.Error("two prefixes with the same next hop and communities do not share their attributes")
	}
	if c := got[netip.MustParsePrefix("192.0.2.1/32")]; c.attrs == a.attrs {
		t.Error("an extra community did not change the attribute key")
	}
	if v6 := got[netip.MustParsePrefix("fd00:1::/64")]; v6.path.Family.Afi != familyV6.Afi {
		t.Errorf("IPv6 prefix family %v", v6.path.Family)
	}
}

// TestBuildPathsLinear guards the "100k prefixes" promise: building is
// linear, so 100k takes well under a second.
func TestBuildPathsLinear(t *testing.T) {
	s := newTestSpeaker(t)
	advs := make([]Advertisement, 100_000)
	for i := range advs {
		advs[i] = Advertisement{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)}
	}
	start := time.Now()
	got, err := s.buildPaths(advs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(advs) {
		t.Fatalf("%d paths for %d advertisements", len(got), len(advs))
	}
	t.Logf("built 100k paths in %s", time.Since(start))
}

func BenchmarkBuildPaths(b *testing.B) {
	s, _ := New(validConfig(), nil)
	advs := make([]Advertisement, 10_000)
	for i := range advs {
		advs[i] = Advertisement{Prefix: netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", i>>8, i&255))}
	}
	for b.Loop() {
		s.buildPaths(advs)
	}
}
