package service

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
)

// Maglev table sizes. The default is Cilium's; the bounds keep an override
// sane (a table is 4 bytes an entry in the datapath, per service port).
const (
	defaultTableSize = 16381
	MinTableSize     = 251
	MaxTableSize     = 1 << 20
)

// The salts make the offset and skip hashes two different hash functions.
// They are part of the cluster's behaviour: changing them moves almost every
// connection of every service on upgrade.
const (
	maglevOffsetSalt = 0x6661627269632d6f // "fabric-o"
	maglevSkipSalt   = 0x6661627269632d73 // "fabric-s"
)

// Maglev returns the Maglev lookup table of size m for the given backends
// (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
// Balancer", NSDI 2016, section 3.4): entry i is the index in backends of the
// backend that serves flows hashing to i.
//
// Every backend takes turns claiming the next free slot of its own
// permutation of the table, so each gets m/len(backends) entries, give or
// take one, and removing a backend moves little more than its own entries.
// The permutation of a backend comes from its name alone (offset and skip
// from two salted FNV-1a hashes), so the table depends only on the set of
// names, not on their order: every node computing it gets the same table.
//
// Names must be stable (e.g. Backend.ID) and unique; a repeated name gets no
// entries of its own. Maglev returns nil when there are no backends. m must be
// prime (see NextPrime and DefaultTableSize): with any other size a
// permutation may not reach every slot, so Maglev panics.
func Maglev(backends []string, m int) []int {
	if !isPrime(m) {
		panic(fmt.Sprintf("service.Maglev: table size %d is not prime; use NextPrime or DefaultTableSize", m))
	}
	// Turns are taken in name order, which makes the table independent of
	// the caller's order.
	order := make([]int, 0, len(backends))
	for i := range backends {
		order = append(order, i)
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case backends[a] < backends[b]:
			return -1
		case backends[a] > backends[b]:
			return 1
		}
		return 0
	})
	order = slices.CompactFunc(order, func(a, b int) bool { return backends[a] == backends[b] })
	if len(order) == 0 {
		return nil
	}

	size := uint64(m)
	pos := make([]uint64, len(order))  // the next slot of each permutation to try
	skip := make([]uint64, len(order)) // the permutation's stride
	for k, i := range order {
		pos[k] = maglevHash(backends[i], maglevOffsetSalt) % size
		skip[k] = maglevHash(backends[i], maglevSkipSalt)%(size-1) + 1
	}
	table := make([]int, m)
	for i := range table {
		table[i] = -1
	}
	for filled := 0; ; {
		for k, i := range order {
			c := pos[k]
			for table[c] >= 0 {
				if c += skip[k]; c >= size {
					c -= size
				}
			}
			table[c] = i
			if pos[k] = c + skip[k]; pos[k] >= size {
				pos[k] -= size
			}
			if filled++; filled == m {
				return table
			}
		}
	}
}

// maglevHash is FNV-1a 64 of salt and name, finished with the murmur3 64-bit
// mixer: FNV alone moves little between names that differ only in their last
// bytes (10.0.0.1:80, 10.0.0.2:80), which would correlate their permutations.
func maglevHash(name string, salt uint64) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], salt)
	h.Write(b[:])
	h.Write([]byte(name))
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// DefaultTableSize is the smallest prime that is at least 100 times
// maxBackends and at least 16381 (Cilium's default). The Maglev paper keeps
// the table at least 100 times the backends so that shares stay within about
// 1% of each other.
//
// maxBackends should be the most backends a service may have (a configured
// limit), not its current count: a table size that follows the count moves
// almost every connection each time it changes.
func DefaultTableSize(maxBackends int) int {
	return NextPrime(max(100*maxBackends, defaultTableSize))
}

// NextPrime is the smallest prime >= n.
func NextPrime(n int) int {
	if n <= 2 {
		return 2
	}
	if n%2 == 0 {
		n++
	}
	for !isPrime(n) {
		n += 2
	}
	return n
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	if n%2 == 0 {
		return n == 2
	}
	for d := 3; d <= n/d; d += 2 {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// checkTableSize says why m cannot be a Maglev table size, or "".
func checkTableSize(m int) string {
	switch {
	case m < MinTableSize || m > MaxTableSize:
		return fmt.Sprintf("%d is out of range: use a prime between %d and %d, such as %d (see DefaultTableSize)", m, MinTableSize, MaxTableSize, defaultTableSize)
	case !isPrime(m):
		if p := NextPrime(m); p <= MaxTableSize {
			return fmt.Sprintf("%d is not prime: use a prime, such as %d", m, p)
		}
		return fmt.Sprintf("%d is not prime: use a prime, such as %d", m, defaultTableSize)
	}
	return ""
}
