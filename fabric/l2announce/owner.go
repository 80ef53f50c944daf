package l2announce

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"slices"
	"time"
)

// Member is one node as the caller's membership sees it. Only alive nodes
// are passed in; a node that died is simply left out.
type Member struct {
	Name   string
	Labels map[string]string
	// Since is when the node joined or last became eligible; it counts
	// towards the settle time.
	Since time.Time
	// Eligible says the node can answer now, e.g. its announcing link has
	// carrier. An ineligible node never owns an IP.
	Eligible bool
}

// Owner returns the candidate that answers for ip, by rendezvous (highest
// random weight) hashing of (ip, name): every node computes the same owner
// from the same candidates, and removing a candidate moves only the IPs it
// owned. It returns "" when there is no candidate. Duplicate and empty names
// are ignored.
func Owner(ip netip.Addr, candidates []string) string {
	key := ip.Unmap().WithZone("").AsSlice()
	best, bestW := "", uint64(0)
	for _, c := range candidates {
		if c == "" {
			continue
		}
		w := weight(key, c)
		// Ties (astronomically rare) go to the smaller name, so the
		// result does not depend on the candidates' order.
		if best == "" || w > bestW || w == bestW && c < best {
			best, bestW = c, w
		}
	}
	return best
}

// weight is a hash that every node computes alike, whatever its version of
// Go: SHA-256 rather than a seeded or runtime-dependent hash.
func weight(ip []byte, name string) uint64 {
	h := sha256.New()
	h.Write(ip)
	h.Write([]byte{0}) // separates the IP from the name
	h.Write([]byte(name))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// Assign decides the owner of every wanted IP: among the members that are
// eligible and selected by a policy that selects the IP (its service and its
// kind) and the member (its nodeSelector), the rendezvous winner. A member
// counts once it has been a member for settle, so a node that just joined
// does not take IPs over and hand them back while it flaps; but when no
// settled member can own an IP, unsettled ones count, so a cluster that just
// started still answers. IPs no member can own are left out. The result
// depends only on the arguments.
func Assign(policies []Policy, ips []Want, members []Member, now time.Time, settle time.Duration) map[netip.Addr]string {
	out := make(map[netip.Addr]string, len(ips))
	var settled, fresh []string
	for _, w := range ips {
		settled, fresh = settled[:0], fresh[:0]
		for _, m := range members {
			if !m.Eligible || m.Name == "" || !selected(policies, w, m) {
				continue
			}
			if now.Sub(m.Since) >= settle {
				settled = append(settled, m.Name)
			} else {
				fresh = append(fresh, m.Name)
			}
		}
		cands := settled
		if len(cands) == 0 {
			cands = fresh
		}
		if o := Owner(w.IP, cands); o != "" {
			out[w.IP.Unmap().WithZone("")] = o
		}
	}
	return out
}

func selected(policies []Policy, w Want, m Member) bool {
	for _, p := range policies {
		if p.SelectsIP(w) && p.SelectsNode(m.Labels) {
			return true
		}
	}
	return false
}

// Local turns an assignment into what node self announces, the input of
// (*Announcer).Set: each IP owned by self, on the interfaces among available
// that the policies selecting both the IP and self name. An owned IP no
// policy gives an available interface is left out: the caller should have
// marked self ineligible for it.
func Local(self Member, policies []Policy, ips []Want, owners map[netip.Addr]string, available []string) map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	for _, w := range ips {
		ip := w.IP.Unmap().WithZone("")
		if owners[ip] != self.Name {
			continue
		}
		var ifs []string
		for _, p := range policies {
			if !p.SelectsIP(w) || !p.SelectsNode(self.Labels) {
				continue
			}
			for _, name := range p.Interfaces(available) {
				if !slices.Contains(ifs, name) {
					ifs = append(ifs, name)
				}
			}
		}
		for _, name := range out[ip] {
			if !slices.Contains(ifs, name) {
				ifs = append(ifs, name)
			}
		}
		if len(ifs) > 0 {
			slices.Sort(ifs)
			out[ip] = ifs
		}
	}
	return out
}
