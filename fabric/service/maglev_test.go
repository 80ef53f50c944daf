package service

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func backendNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1)
	}
	return names
}

// checkTable checks that every entry is an index of backends.
func checkTable(t *testing.T, table []int, m, n int) []int {
	t.Helper()
	if len(table) != m {
		t.Fatalf("table has %d entries, want %d", len(table), m)
	}
	counts := make([]int, n)
	for i, b := range table {
		if b < 0 || b >= n {
			t.Fatalf("entry %d = %d: not a backend index (0..%d)", i, b, n-1)
		}
		counts[b]++
	}
	return counts
}

func TestMaglevSpread(t *testing.T) {
	const m = 16381
	for _, n := range []int{1, 3, 10, 100} {
		counts := checkTable(t, Maglev(backendNames(n), m), m, n)
		want := float64(m) / float64(n)
		for b, c := range counts {
			if share := float64(c); share < 0.95*want || share > 1.05*want {
				t.Errorf("N=%d: backend %d has %d entries, want %.1f±5%%", n, b, c, want)
			}
		}
		// Turns make the spread tighter than the paper's bound: one entry.
		if lo, hi := slices.Min(counts), slices.Max(counts); hi-lo > 1 {
			t.Errorf("N=%d: entries per backend range %d..%d, want within one", n, lo, hi)
		}
	}
}

// TestMaglevDisruption removes one backend and counts the entries that
// change owner. The removed backend's 1/N must move; the rest is churn among
// survivors, which shrinks as M/N grows (the paper's Figure 12). At M = 16381
// and N = 100 (M/N = 164) Maglev itself moves about 2.4/N, whatever the hash
// (SHA-256 gives the same), so 1.5/N holds only with a larger table there.
func TestMaglevDisruption(t *testing.T) {
	tests := []struct {
		n, m  int
		limit float64 // entries moved, in units of 1/N
	}{
		{3, 16381, 1.5},
		{10, 16381, 1.5},
		{100, 16381, 3},
		{100, 655373, 1.5},
	}
	for _, tt := range tests {
		n, m := tt.n, tt.m
		names := backendNames(n)
		before := Maglev(names, m)
		for _, gone := range []int{0, n / 2, n - 1} {
			rest := slices.Delete(slices.Clone(names), gone, gone+1)
			after := Maglev(rest, m)
			checkTable(t, after, m, n-1)
			moved, survivorsMoved := 0, 0
			for i := range before {
				if names[before[i]] == rest[after[i]] {
					continue
				}
				moved++
				if before[i] != gone {
					survivorsMoved++
				}
			}
			movedN := float64(moved) / float64(m) * float64(n)
			survivorsN := float64(survivorsMoved) / float64(m) * float64(n)
			if movedN > tt.limit || survivorsN > tt.limit-1 {
				t.Errorf("N=%d M=%d, removing %d: %.2f/N of the entries moved, %.2f/N of the survivors'; want <= %.1f/N and %.1f/N",
					n, m, gone, movedN, survivorsN, tt.limit, tt.limit-1)
			}
			t.Logf("N=%d M=%d, removing %d: %.2f/N moved, %.2f/N of them the survivors'", n, m, gone, movedN, survivorsN)
		}
	}
}

func TestMaglevDeterministic(t *testing.T) {
	names := backendNames(50)
	a := Maglev(names, 4093)
	if b := Maglev(slices.Clone(names), 4093); !slices.Equal(a, b) {
		t.Fatal("two runs over the same backends differ")
	}
	// The order of the names does not matter: only the set does.
	shuffled := slices.Clone(names)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	c := Maglev(shuffled, 4093)
	for i := range a {
		if names[a[i]] != shuffled[c[i]] {
			t.Fatalf("entry %d: %s in name order, %s shuffled", i, names[a[i]], shuffled[c[i]])
		}
	}
	// Pin a few entries: the table is part of the cluster's behaviour (all
	// nodes and versions must agree), so a change here must be deliberate.
	if got := Maglev([]string{"a", "b", "c"}, 251)[:12]; !slices.Equal(got, goldenABC) {
		t.Errorf("table of a, b, c starts %v, want %v: the hash or the population changed", got, goldenABC)
	}
}

var goldenABC = []int{2, 0, 2, 1, 2, 0, 2, 1, 1, 1, 0, 2}

func TestMaglevEdges(t *testing.T) {
	if got := Maglev(nil, 251); got != nil {
		t.Errorf("no backends: %v, want nil", got)
	}
	// A repeated name gets no entries of its own.
	counts := checkTable(t, Maglev([]string{"a", "b", "a"}, 251), 251, 3)
	if counts[2] != 0 || counts[0]+counts[1] != 251 {
		t.Errorf("repeated name: counts %v", counts)
	}
	// More backends than entries: the table is still full.
	checkTable(t, Maglev(backendNames(300), 251), 251, 300)
	defer func() {
		if recover() == nil {
			t.Error("Maglev with a table size that is not prime did not panic")
		}
	}()
	Maglev([]string{"a"}, 16384)
}

func TestNextPrime(t *testing.T) {
	for n, want := range map[int]int{-5: 2, 0: 2, 2: 2, 3: 3, 4: 5, 16381: 16381, 16382: 16411, 65521: 65521, 100000: 100003} {
		if got := NextPrime(n); got != want {
			t.Errorf("NextPrime(%d) = %d, want %d", n, got, want)
		}
	}
	for n, want := range map[int]int{0: 16381, 1: 16381, 163: 16381, 164: 16411, 1000: 100003} {
		if got := DefaultTableSize(n); got != want {
			t.Errorf("DefaultTableSize(%d) = %d, want %d", n, got, want)
		}
	}
}

func BenchmarkMaglev(b *testing.B) {
	names := backendNames(100)
	for b.Loop() {
		Maglev(names, 16381)
	}
}
