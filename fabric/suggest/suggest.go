// Package suggest finds the likely intended spelling of a misspelt name,
// for the "did you mean" hints every manifest parser gives on an unknown
// field. It knows nothing of YAML or of any manifest.
package suggest

import "strings"

// Closest returns the known name that name most likely misspells: one
// equal ignoring case, else the nearest within two edits (ignoring case),
// else "".
func Closest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if strings.EqualFold(k, name) {
			return k
		}
		if d := distance(strings.ToLower(name), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance, capped for long inputs: a hint is
// only worth giving for short names, and user input must not cost
// quadratic time.
func distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
