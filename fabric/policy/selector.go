package policy

import (
	"cmp"
	"slices"
	"strings"

	"github.com/fabric-net/fabric/fabric/identity"
)

// Operator is a set-based selector operator, as in Kubernetes.
type Operator string

const (
	OpIn           Operator = "In"
	OpNotIn        Operator = "NotIn"
	OpExists       Operator = "Exists"
	OpDoesNotExist Operator = "DoesNotExist"
)

// Requirement is one condition of a selector. Key is "source:key" or "key"
// (any source); see the package comment.
type Requirement struct {
	Key    string
	Op     Operator
	Values []string
}

// Selector selects label sets: all its requirements must hold. The empty
// selector matches every label set.
type Selector struct {
	Requirements []Requirement // sorted, so equal selectors compare and print equal
}

// Matches reports whether labels satisfies every requirement.
func (s Selector) Matches(labels identity.Labels) bool {
	return s.matchList(labels.List())
}

func (s Selector) matchList(list []identity.Label) bool {
	for _, r := range s.Requirements {
		if !r.matches(list) {
			return false
		}
	}
	return true
}

// IsWildcard reports whether the selector matches everything.
func (s Selector) IsWildcard() bool { return len(s.Requirements) == 0 }

func (r Requirement) matches(list []identity.Label) bool {
	src, key := splitKey(r.Key)
	found, in := false, false
	for _, l := range list {
		if l.Key != key || src != "" && l.Source != src {
			continue
		}
		found = true
		if slices.Contains(r.Values, l.Value) {
			in = true
		}
	}
	switch r.Op {
	case OpIn:
		return in
	case OpNotIn:
		return !in
	case OpExists:
		return found
	case OpDoesNotExist:
		return !found
	}
	return false // an unknown operator never matches: fail closed
}

// splitKey splits "k8s:app" into its source and key. "any" and a missing
// source both mean any source.
func splitKey(k string) (src, key string) {
	if i := strings.IndexByte(k, ':'); i > 0 && isSource(k[:i]) {
		src, key = k[:i], k[i+1:]
	} else {
		key = k
	}
	if src == "any" {
		src = ""
	}
	return src, key
}

func isSource(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// normKey drops the "any:" source, which means the same as none.
func normKey(k string) string {
	if src, key := splitKey(k); src != "" {
		return src + ":" + key
	} else {
		return key
	}
}

// refersTo reports whether the selector has a requirement on key (compared
// without source) or on a key of source src.
func (s Selector) refersTo(key, src string) bool {
	for _, r := range s.Requirements {
		rs, rk := splitKey(r.Key)
		if rk == key || src != "" && rs == src {
			return true
		}
	}
	return false
}

// with returns s plus r, kept sorted.
func (s Selector) with(rs ...Requirement) Selector {
	out := Selector{Requirements: append(slices.Clone(s.Requirements), rs...)}
	out.sort()
	return out
}

func (s *Selector) sort() {
	slices.SortFunc(s.Requirements, func(a, b Requirement) int {
		return cmp.Or(strings.Compare(a.Key, b.Key), strings.Compare(string(a.Op), string(b.Op)),
			slices.Compare(a.Values, b.Values))
	})
	s.Requirements = slices.CompactFunc(s.Requirements, func(a, b Requirement) bool {
		return a.Key == b.Key && a.Op == b.Op && slices.Equal(a.Values, b.Values)
	})
}

// String prints the selector compactly: "class=deathstar,org=empire",
// "env in (a,b)", "!debug"; "{}" for the wildcard.
func (s Selector) String() string {
	if s.IsWildcard() {
		return "{}"
	}
	parts := make([]string, len(s.Requirements))
	for i, r := range s.Requirements {
		switch {
		case r.Op == OpIn && len(r.Values) == 1:
			parts[i] = r.Key + "=" + r.Values[0]
		case r.Op == OpIn:
			parts[i] = r.Key + " in (" + strings.Join(r.Values, ",") + ")"
		case r.Op == OpNotIn:
			parts[i] = r.Key + " notin (" + strings.Join(r.Values, ",") + ")"
		case r.Op == OpExists:
			parts[i] = r.Key
		case r.Op == OpDoesNotExist:
			parts[i] = "!" + r.Key
		default:
			parts[i] = r.Key + " " + string(r.Op) + "?"
		}
	}
	return strings.Join(parts, ",")
}

// selector parses a Kubernetes label selector (matchLabels, matchExpressions).
// keyMap, when set, rewrites keys (namespaceSelector keys become namespace
// label keys).
func (w *walker) selector(v val, keyMap func(string) string) (Selector, error) {
	f, err := w.fields(v, "matchLabels", "matchExpressions")
	if err != nil {
		return Selector{}, err
	}
	if keyMap == nil {
		keyMap = func(k string) string { return k }
	}
	var s Selector
	if ml, ok := f["matchLabels"]; ok {
		labels, err := w.fields(ml)
		if err != nil {
			return Selector{}, err
		}
		// A null value ("reserved:host:") reads as absent in fields, but
		// in matchLabels it means the empty value.
		for i := 0; i+1 < len(ml.n.Content); i += 2 {
			name := ml.n.Content[i].Value
			value := ""
			if lv, ok := labels[name]; ok {
				if value, err = w.str(lv); err != nil {
					return Selector{}, err
				}
			}
			if name == "" {
				return Selector{}, w.errf(ml, "empty label key: write key: value")
			}
			s.Requirements = append(s.Requirements, Requirement{Key: normKey(keyMap(name)), Op: OpIn, Values: []string{value}})
		}
	}
	if me, ok := f["matchExpressions"]; ok {
		items, err := w.list(me)
		if err != nil {
			return Selector{}, err
		}
		for _, it := range items {
			ef, err := w.fields(it, "key", "operator", "values")
			if err != nil {
				return Selector{}, err
			}
			key, err := w.str(ef["key"])
			if err != nil {
				return Selector{}, err
			}
			if key == "" {
				return Selector{}, w.errf(val{it.n, it.field("key")}, "missing: name the label key the expression tests")
			}
			op, err := w.str(ef["operator"])
			if err != nil {
				return Selector{}, err
			}
			values, _, err := w.strs(ef["values"])
			if err != nil {
				return Selector{}, err
			}
			opPath := val{it.n, it.field("operator")}
			switch Operator(op) {
			case OpIn, OpNotIn:
				if len(values) == 0 {
					return Selector{}, w.errf(val{it.n, it.field("values")}, "operator %s needs at least one value: list them, or use Exists/DoesNotExist", op)
				}
			case OpExists, OpDoesNotExist:
				if len(values) != 0 {
					return Selector{}, w.errf(val{it.n, it.field("values")}, "operator %s takes no values: remove them, or use In/NotIn", op)
				}
			case "":
				return Selector{}, w.errf(opPath, "missing: use In, NotIn, Exists or DoesNotExist")
			default:
				return Selector{}, w.errf(opPath, "%q is not an operator: use In, NotIn, Exists or DoesNotExist", op)
			}
			slices.Sort(values)
			s.Requirements = append(s.Requirements, Requirement{Key: normKey(keyMap(key)), Op: Operator(op), Values: slices.Compact(values)})
		}
	}
	s.sort()
	return s, nil
}
