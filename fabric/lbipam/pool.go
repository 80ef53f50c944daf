package lbipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Pool is one load-balancer address pool: Cilium's CiliumLoadBalancerIPPool
// spec plus Fabric's exclusions. The zero value of every field means what
// Cilium's default means, so a Pool built in Go and one parsed from YAML agree.
type Pool struct {
	Name string `json:"name"`
	// Blocks are the pool's addresses, IPv4 and IPv6 mixed, in the order
	// they are handed out.
	Blocks []Block `json:"blocks"`
	// ServiceSelector chooses the services the pool serves; the zero value
	// selects every service.
	ServiceSelector Selector `json:"serviceSelector,omitzero"`
	// Disabled stops new assignments from the pool; addresses already
	// assigned stay with their services (Cilium's semantics).
	Disabled bool `json:"disabled,omitempty"`
	// ReserveFirstLastIPs is Cilium's allowFirstLastIPs: "No": the first and
	// last address of every CIDR block are never handed out. It does not
	// apply to start/stop blocks, nor to /31, /32, /127 and /128 CIDRs,
	// where it would leave nothing usable.
	ReserveFirstLastIPs bool `json:"reserveFirstLastIPs,omitempty"`
	// Exclude lists addresses of the blocks that are never handed out
	// (Fabric's annotation lbipam.fabric.io/exclude; Cilium has no such field).
	Exclude []Block `json:"exclude,omitempty"`
}

// Block is a CIDR, or a start/stop range (inclusive; Stop unset means Start
// alone). Exactly one form is set.
type Block struct {
	CIDR  netip.Prefix `json:"cidr,omitzero"`
	Start netip.Addr   `json:"start,omitzero"`
	Stop  netip.Addr   `json:"stop,omitzero"`
}

func (b Block) String() string {
	if b.CIDR.IsValid() {
		return b.CIDR.String()
	}
	return b.span().String()
}

// validate checks b; the messages say what to write instead.
func (b Block) validate() error {
	switch {
	case b.CIDR.IsValid() && (b.Start.IsValid() || b.Stop.IsValid()):
		return errors.New("has both cidr and start/stop; use either a cidr or a start/stop range")
	case b.CIDR.IsValid():
		if b.CIDR != b.CIDR.Masked() {
			return fmt.Errorf("cidr %s has host bits set; write %s", b.CIDR, b.CIDR.Masked())
		}
		if b.CIDR.Addr().Zone() != "" {
			return fmt.Errorf("cidr %s has a zone; remove the %%zone", b.CIDR)
		}
		return nil
	case !b.Start.IsValid() && b.Stop.IsValid():
		return errors.New("has stop but no start; add start, the first address of the range")
	case !b.Start.IsValid():
		return errors.New("is empty; give a cidr (10.0.0.0/24) or a start and stop (10.0.0.10, 10.0.0.20)")
	}
	if b.Start.Zone() != "" || b.Stop.Zone() != "" {
		return errors.New("start or stop has a zone; remove the %zone")
	}
	if b.Start.Is4In6() || b.Stop.Is4In6() {
		return errors.New("start or stop is an IPv4-mapped IPv6 address; write the plain IPv4 address")
	}
	if b.Stop.IsValid() {
		if b.Start.BitLen() != b.Stop.BitLen() {
			return fmt.Errorf("start %s and stop %s are of different families; use two blocks", b.Start, b.Stop)
		}
		if b.Stop.Less(b.Start) {
			return fmt.Errorf("stop %s is below start %s; swap them", b.Stop, b.Start)
		}
	}
	return nil
}

// span is every address of b, reserved or not.
func (b Block) span() addrRange {
	if b.CIDR.IsValid() {
		return addrRange{b.CIDR.Addr(), lastOf(b.CIDR)}
	}
	if b.Stop.IsValid() {
		return addrRange{b.Start, b.Stop}
	}
	return addrRange{b.Start, b.Start}
}

// usable is the part of b that may be handed out, before exclusions.
func (b Block) usable(reserveFirstLast bool) addrRange {
	r := b.span()
	if reserveFirstLast && b.CIDR.IsValid() && b.CIDR.Addr().BitLen()-b.CIDR.Bits() > 1 {
		r = addrRange{r.from.Next(), r.to.Prev()}
	}
	return r
}

// Selector is a Kubernetes label selector: every MatchLabels pair and every
// requirement must hold. The zero value selects everything.
type Selector struct {
	MatchLabels      map[string]string `json:"matchLabels,omitempty"`
	MatchExpressions []Requirement     `json:"matchExpressions,omitempty"`
}

// Operator is a label selector operator.
type Operator string

const (
	OpIn           Operator = "In"
	OpNotIn        Operator = "NotIn"
	OpExists       Operator = "Exists"
	OpDoesNotExist Operator = "DoesNotExist"
)

// Requirement is one matchExpressions entry.
type Requirement struct {
	Key      string   `json:"key"`
	Operator Operator `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// Matches tells whether labels satisfy s.
func (s Selector) Matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		v, ok := labels[r.Key]
		switch r.Operator {
		case OpIn:
			if !ok || !slices.Contains(r.Values, v) {
				return false
			}
		case OpNotIn:
			if ok && slices.Contains(r.Values, v) {
				return false
			}
		case OpExists:
			if !ok {
				return false
			}
		case OpDoesNotExist:
			if ok {
				return false
			}
		default:
			return false // Validate refuses these; never select on a typo.
		}
	}
	return true
}

// Validate says what is wrong with the selector, if anything: empty keys,
// unknown operators, values where none belong or none where some do.
func (s Selector) Validate() error {
	for k := range s.MatchLabels {
		if k == "" {
			return errors.New("matchLabels has an empty key; give the label's name")
		}
	}
	for i, r := range s.MatchExpressions {
		if r.Key == "" {
			return fmt.Errorf("matchExpressions[%d].key is empty; give the label's name", i)
		}
		switch r.Operator {
		case OpIn, OpNotIn:
			if len(r.Values) == 0 {
				return fmt.Errorf("matchExpressions[%d]: operator %s needs at least one value; add values", i, r.Operator)
			}
		case OpExists, OpDoesNotExist:
			if len(r.Values) != 0 {
				return fmt.Errorf("matchExpressions[%d]: operator %s takes no values; remove values", i, r.Operator)
			}
		default:
			return fmt.Errorf("matchExpressions[%d].operator %q is unknown; use In, NotIn, Exists or DoesNotExist", i, r.Operator)
		}
	}
	return nil
}

// Validate checks the pool on its own; CheckOverlaps checks pools against
// each other.
func (p Pool) Validate() error {
	if err := checkPoolName(p.Name); err != nil {
		return err
	}
	if len(p.Blocks) == 0 {
		return fmt.Errorf("pool %q: spec.blocks is empty; add at least one cidr or start/stop block", p.Name)
	}
	for i, b := range p.Blocks {
		if err := b.validate(); err != nil {
			return fmt.Errorf("pool %q: spec.blocks[%d] %w", p.Name, i, err)
		}
	}
	if err := checkOverlapsWithin(p.Name, p.Blocks); err != nil {
		return err
	}
	if err := p.ServiceSelector.Validate(); err != nil {
		return fmt.Errorf("pool %q: spec.serviceSelector.%w", p.Name, err)
	}
	for i, x := range p.Exclude {
		if err := x.validate(); err != nil {
			return fmt.Errorf("pool %q: exclude[%d] %w", p.Name, i, err)
		}
		in := false
		for _, b := range p.Blocks {
			in = in || b.span().overlaps(x.span())
		}
		if !in {
			return fmt.Errorf("pool %q: exclude[%d] %s lies outside every block of the pool and excludes nothing; fix the address or remove it", p.Name, i, x)
		}
	}
	return nil
}

func checkPoolName(name string) error {
	if name == "" {
		return errors.New("pool name (metadata.name) is empty; give the pool a name")
	}
	if len(name) > 253 {
		return fmt.Errorf("pool name %.20q... is %d characters long; use at most 253", name, len(name))
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (c == '-' || c == '.') && i > 0 && i < len(name)-1
		if !ok {
			return fmt.Errorf("pool name %q is not a DNS subdomain name; use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit", name)
		}
	}
	return nil
}

func checkOverlapsWithin(name string, blocks []Block) error {
	for i := range blocks {
		for j := i + 1; j < len(blocks); j++ {
			if blocks[i].span().overlaps(blocks[j].span()) {
				return fmt.Errorf("pool %q: spec.blocks[%d] %s and spec.blocks[%d] %s overlap; remove or shrink one of them", name, i, blocks[i], j, blocks[j])
			}
		}
	}
	return nil
}

// CheckOverlaps returns an error when two pools share a name or an address:
// every address belongs to one pool at most, so the pool of an assigned
// address is never in doubt.
func CheckOverlaps(pools []Pool) error {
	var errs []error
	for i := range pools {
		for j := i + 1; j < len(pools); j++ {
			p, q := pools[i], pools[j]
			if p.Name == q.Name {
				errs = append(errs, fmt.Errorf("pool %q is defined twice; pool names must be unique: rename or remove one", p.Name))
				continue
			}
			for bi, b := range p.Blocks {
				for bj, c := range q.Blocks {
					if b.span().overlaps(c.span()) {
						errs = append(errs, fmt.Errorf("pools %q (spec.blocks[%d] %s) and %q (spec.blocks[%d] %s) overlap; an address may belong to one pool only: remove or shrink one of the blocks",
							p.Name, bi, b, q.Name, bj, c))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// owns tells whether a lies in one of p's blocks, reserved or not.
func (p Pool) owns(a netip.Addr) bool {
	for _, b := range p.Blocks {
		if b.span().contains(a) {
			return true
		}
	}
	return false
}

// offers tells whether a may be handed out from p (disabled or not).
func (p Pool) offers(a netip.Addr) bool {
	for _, b := range p.Blocks {
		if b.usable(p.ReserveFirstLastIPs).contains(a) {
			return !p.excluded(a)
		}
	}
	return false
}

func (p Pool) excluded(a netip.Addr) bool {
	for _, x := range p.Exclude {
		if x.span().contains(a) {
			return true
		}
	}
	return false
}

// whyNotOffered explains why p does not offer a, which p owns.
func (p Pool) whyNotOffered(a netip.Addr) string {
	if p.excluded(a) {
		return fmt.Sprintf("it is excluded from pool %q", p.Name)
	}
	return fmt.Sprintf("pool %q reserves the first and last address of its CIDRs (allowFirstLastIPs: No)", p.Name)
}

// hasFamily tells whether p has blocks of family f.
func (p Pool) hasFamily(f Family) bool {
	for _, b := range p.Blocks {
		if familyOf(b.span().from) == f {
			return true
		}
	}
	return false
}

// size counts the addresses p may hand out, capped at MaxUint64.
func (p Pool) size() uint64 {
	var n uint64
	for _, b := range p.Blocks {
		r := b.usable(p.ReserveFirstLastIPs)
		n = satAdd(n, span(r.from, r.to)-p.excludedIn(r))
	}
	return n
}

// excludedIn counts the distinct excluded addresses inside r.
func (p Pool) excludedIn(r addrRange) uint64 {
	var clipped []addrRange
	for _, x := range p.Exclude {
		s := x.span()
		if !s.overlaps(r) {
			continue
		}
		if s.from.Less(r.from) {
			s.from = r.from
		}
		if r.to.Less(s.to) {
			s.to = r.to
		}
		clipped = append(clipped, s)
	}
	slices.SortFunc(clipped, func(a, b addrRange) int { return a.from.Compare(b.from) })
	var n uint64
	var cur *addrRange
	for i := range clipped {
		c := clipped[i]
		if cur != nil && c.from.Compare(cur.to) <= 0 {
			if cur.to.Less(c.to) {
				cur.to = c.to
			}
			continue
		}
		if cur != nil {
			n = satAdd(n, span(cur.from, cur.to))
		}
		cur = &c
	}
	if cur != nil {
		n = satAdd(n, span(cur.from, cur.to))
	}
	return n
}

// free returns up to limit addresses of family f that p offers and used does
// not hold, lowest block first. Excluded ranges are jumped over, so the cost
// is bounded by len(used)+len(Exclude)+limit whatever the pool's size.
func (p Pool) free(f Family, used map[netip.Addr]bool, limit int) []netip.Addr {
	var out []netip.Addr
	for _, b := range p.Blocks {
		r := b.usable(p.ReserveFirstLastIPs)
		if familyOf(r.from) != f {
			continue
		}
		a := r.from
	walk:
		for len(out) < limit && a.IsValid() && r.contains(a) {
			for _, x := range p.Exclude {
				if s := x.span(); s.contains(a) {
					if s.to == r.to {
						break walk
					}
					a = s.to.Next()
					continue walk
				}
			}
			if !used[a] {
				out = append(out, a)
			}
			if a == r.to {
				break
			}
			a = a.Next()
		}
	}
	return out
}

func (p Pool) describe() string {
	parts := make([]string, len(p.Blocks))
	for i, b := range p.Blocks {
		parts[i] = b.String()
	}
	return fmt.Sprintf("%q (%s)", p.Name, strings.Join(parts, ", "))
}
