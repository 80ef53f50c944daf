package service

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestCIDRAllocator(t *testing.T) {
	a, err := NewCIDRAllocator(netip.MustParsePrefix("10.96.0.0/29"))
	if err != nil {
		t.Fatal(err)
	}
	used := map[netip.Addr]bool{}
	inUse := func(ip netip.Addr) bool { return used[ip] }
	var got []string
	for {
		ip, err := a.Allocate(inUse)
		if err != nil {
			if !errors.Is(err, ErrExhausted) {
				t.Fatalf("error does not wrap ErrExhausted: %v", err)
			}
			if !strings.Contains(err.Error(), "service CIDR 10.96.0.0/29: all 6 usable addresses are in use") {
				t.Errorf("exhaustion message: %v", err)
			}
			break
		}
		used[ip] = true
		got = append(got, ip.String())
	}
	want := "10.96.0.1 10.96.0.2 10.96.0.3 10.96.0.4 10.96.0.5 10.96.0.6"
	if strings.Join(got, " ") != want {
		t.Errorf("allocated %v, want %s (no network, no broadcast)", got, want)
	}
	// Lowest free first: a released address is the next one given.
	delete(used, netip.MustParseAddr("10.96.0.3"))
	if ip, err := a.Allocate(inUse); err != nil || ip.String() != "10.96.0.3" {
		t.Errorf("after release: %v, %v; want 10.96.0.3", ip, err)
	}
}

func TestCIDRAllocatorIPv6(t *testing.T) {
	a, err := NewCIDRAllocator(netip.MustParsePrefix("fd00:96::/126"))
	if err != nil {
		t.Fatal(err)
	}
	used := map[netip.Addr]bool{}
	var got []string
	for {
		ip, err := a.Allocate(func(ip netip.Addr) bool { return used[ip] })
		if err != nil {
			if !errors.Is(err, ErrExhausted) {
				t.Fatal(err)
			}
			break
		}
		used[ip] = true
		got = append(got, ip.String())
	}
	// IPv6 has no broadcast: the last address is usable.
	if want := "fd00:96::1 fd00:96::2 fd00:96::3"; strings.Join(got, " ") != want {
		t.Errorf("allocated %v, want %s", got, want)
	}
	// A huge prefix allocates without walking it.
	big, err := NewCIDRAllocator(netip.MustParsePrefix("fd00::/64"))
	if err != nil {
		t.Fatal(err)
	}
	if ip, err := big.Allocate(func(netip.Addr) bool { return false }); err != nil || ip.String() != "fd00::1" {
		t.Errorf("Allocate on /64: %v, %v", ip, err)
	}
}

func TestCIDRAllocatorCheck(t *testing.T) {
	a, err := NewCIDRAllocator(netip.MustParsePrefix("10.96.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if a.CIDR().String() != "10.96.0.0/24" {
		t.Errorf("CIDR() = %s", a.CIDR())
	}
	if err := a.Check(netip.MustParseAddr("10.96.0.10")); err != nil {
		t.Error(err)
	}
	for ip, want := range map[string]string{
		"10.97.0.1":   "outside the service CIDR",
		"10.96.0.0":   "network or broadcast",
		"10.96.0.255": "network or broadcast",
		"fd00::1":     "outside the service CIDR",
	} {
		if err := a.Check(netip.MustParseAddr(ip)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%s) = %v, want %q", ip, err, want)
		}
	}
}

func TestNewCIDRAllocatorErrors(t *testing.T) {
	for in, want := range map[string]string{
		"10.96.0.1/24":        "has host bits set: use 10.96.0.0/24",
		"10.96.0.0/31":        "holds no usable address",
		"10.96.0.0/32":        "holds no usable address",
		"fd00::/128":          "holds no usable address",
		"::ffff:10.0.0.0/104": "IPv4-mapped",
	} {
		_, err := NewCIDRAllocator(netip.MustParsePrefix(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NewCIDRAllocator(%s) = %v, want %q", in, err, want)
		}
	}
	if _, err := NewCIDRAllocator(netip.Prefix{}); err == nil {
		t.Error("zero prefix accepted")
	}
	if _, err := NewCIDRAllocator(netip.MustParsePrefix("fd00::/127")); err != nil {
		t.Errorf("/127 has one usable address: %v", err)
	}
}
