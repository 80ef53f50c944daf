package bgp

import (
	"fmt"
	"strconv"
	"strings"
)

// Community is a BGP community: standard (RFC 1997, "65000:100", shown as
// A:B with A and B 16-bit) or large (RFC 8092, "A:B:C" with 32-bit parts).
type Community struct {
	Large   bool
	A, B, C uint32
}

// wellKnown are the standard communities users write by name.
var wellKnown = map[string]uint32{
	"graceful-shutdown":   0xFFFF0000,
	"blackhole":           0xFFFF029A,
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"no-peer":             0xFFFFFF04,
}

// ParseCommunity parses "A:B" (standard, 16-bit parts), "A:B:C" (large,
// 32-bit parts) or a well-known name ("no-export", "no-advertise",
// "no-export-subconfed", "no-peer", "blackhole", "graceful-shutdown").
func ParseCommunity(s string) (Community, error) {
	if v, ok := wellKnown[strings.ToLower(s)]; ok {
		return Community{A: v >> 16, B: v & 0xFFFF}, nil
	}
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 2:
		a, err1 := strconv.ParseUint(parts[0], 10, 16)
		b, err2 := strconv.ParseUint(parts[1], 10, 16)
		if err1 != nil || err2 != nil {
			return Community{}, fmt.Errorf("community %q: both parts of a standard community must be 0..65535 (e.g. 65000:100); use A:B:C for a large one", s)
		}
		return Community{A: uint32(a), B: uint32(b)}, nil
	case 3:
		var v [3]uint32
		for i, p := range parts {
			n, err := strconv.ParseUint(p, 10, 32)
			if err != nil {
				return Community{}, fmt.Errorf("community %q: part %d of a large community must be 0..4294967295 (e.g. 64512:1:2)", s, i+1)
			}
			v[i] = uint32(n)
		}
		return Community{Large: true, A: v[0], B: v[1], C: v[2]}, nil
	}
	return Community{}, fmt.Errorf("community %q: use A:B (standard), A:B:C (large) or a well-known name such as no-export", s)
}

// String returns the community in the form ParseCommunity reads.
func (c Community) String() string {
	if c.Large {
		return fmt.Sprintf("%d:%d:%d", c.A, c.B, c.C)
	}
	return fmt.Sprintf("%d:%d", c.A, c.B)
}

// standard returns a standard community as its 32-bit wire value.
func (c Community) standard() uint32 { return c.A<<16 | c.B&0xFFFF }

// parseCommunities parses a list, naming the bad entry.
func parseCommunities(list []string) ([]Community, error) {
	out := make([]Community, 0, len(list))
	for i, s := range list {
		c, err := ParseCommunity(s)
		if err != nil {
			return nil, fmt.Errorf("communities[%d]: %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}
