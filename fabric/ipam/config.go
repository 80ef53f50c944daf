package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Config is the cluster-wide IPAM configuration. Every agent of a cluster must
// be given the same Config: the pools and masks decide which node CIDRs exist.
type Config struct {
	// Pools are the cluster's pod address pools, IPv4 and/or IPv6. Several
	// pools of one family are allowed; they are used in the order given.
	Pools []netip.Prefix
	// NodeMaskV4 is the prefix length of each node's IPv4 CIDR (default 24).
	NodeMaskV4 int
	// NodeMaskV6 is the prefix length of each node's IPv6 CIDR (default 112).
	NodeMaskV6 int
	// ReleaseGrace is how long a node must be absent from gossip before its
	// CIDRs and endpoint IPs are given back (default 5m).
	ReleaseGrace time.Duration
}

// Limits on node masks: a node CIDR must hold the reserved addresses (network,
// gateway and, for IPv4, broadcast) and at least one endpoint.
const (
	maxNodeMaskV4 = 30
	maxNodeMaskV6 = 126
)

// DefaultConfig returns a dual-stack configuration: 256 IPv4 /24 node CIDRs and
// 65536 IPv6 /112 node CIDRs.
func DefaultConfig() Config {
	return Config{
		Pools: []netip.Prefix{
			netip.MustParsePrefix("10.200.0.0/16"),
			netip.MustParsePrefix("fd00:fab:200::/96"),
		},
		NodeMaskV4:   24,
		NodeMaskV6:   112,
		ReleaseGrace: 5 * time.Minute,
	}
}

// Validate checks the configuration and says which field is wrong and how to
// fix it.
func (c Config) Validate() error {
	var errs []error
	if len(c.Pools) == 0 {
		errs = append(errs, errors.New("ipam.pools: no pool given; set at least one pool, e.g. 10.200.0.0/16"))
	}
	if c.NodeMaskV4 < 1 || c.NodeMaskV4 > maxNodeMaskV4 {
		errs = append(errs, fmt.Errorf("ipam.node-mask-v4: /%d is out of range; use 1..%d so a node CIDR holds network, gateway, broadcast and at least one endpoint", c.NodeMaskV4, maxNodeMaskV4))
	}
	if c.NodeMaskV6 < 1 || c.NodeMaskV6 > maxNodeMaskV6 {
		errs = append(errs, fmt.Errorf("ipam.node-mask-v6: /%d is out of range; use 1..%d so a node CIDR holds the subnet-router, gateway and at least one endpoint", c.NodeMaskV6, maxNodeMaskV6))
	}
	if c.ReleaseGrace <= 0 {
		errs = append(errs, fmt.Errorf("ipam.release-grace: %s is not positive; use a duration longer than a node reboot, e.g. 5m", c.ReleaseGrace))
	}
	for i, p := range c.Pools {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("ipam.pools[%d]: invalid prefix; give a CIDR such as 10.200.0.0/16", i))
			continue
		}
		if p.Addr().Zone() != "" || p.Addr().Is4In6() {
			errs = append(errs, fmt.Errorf("ipam.pools[%d]: %s: zoned or IPv4-mapped prefixes are not pools; give a plain IPv4 or IPv6 CIDR", i, p))
			continue
		}
		if p != p.Masked() {
			errs = append(errs, fmt.Errorf("ipam.pools[%d]: %s has host bits set; use %s", i, p, p.Masked()))
			continue
		}
		mask := c.nodeMask(p.Addr().Is4())
		if mask < p.Bits() {
			errs = append(errs, fmt.Errorf("ipam.pools[%d]: %s is smaller than one node CIDR (/%d); use a bigger pool or a longer node mask (ipam.node-mask-%s >= /%d)", i, p, mask, familyOf(p), p.Bits()))
		}
		for j := range i {
			if q := c.Pools[j]; q.IsValid() && q.Overlaps(p) {
				errs = append(errs, fmt.Errorf("ipam.pools[%d]: %s overlaps ipam.pools[%d] %s; pools must be disjoint, remove or shrink one", i, p, j, q))
			}
		}
	}
	return errors.Join(errs...)
}

func (c Config) nodeMask(is4 bool) int {
	if is4 {
		return c.NodeMaskV4
	}
	return c.NodeMaskV6
}

// pools returns the pools of one family, in configuration order.
func (c Config) pools(f Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range c.Pools {
		if familyOf(p) == f {
			out = append(out, p)
		}
	}
	return out
}

// families returns the families that have at least one pool, IPv4 first.
func (c Config) families() []Family {
	var out []Family
	for _, f := range []Family{IPv4, IPv6} {
		if len(c.pools(f)) > 0 {
			out = append(out, f)
		}
	}
	return out
}
