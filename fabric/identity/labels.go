package identity

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Label is one key=value label, with an optional source ("k8s" in
// "k8s:app=web") that keeps labels from different origins apart.
type Label struct {
	Source string
	Key    string
	Value  string
}

// Name is the label's key with its source, "k8s:app" or "app".
func (l Label) Name() string {
	if l.Source == "" {
		return l.Key
	}
	return l.Source + ":" + l.Key
}

func (l Label) String() string {
	if l.Source == SourceReserved {
		return l.Name()
	}
	return l.Name() + "=" + l.Value
}

// Labels is a validated label set in canonical order. The zero value is the
// empty set. Two sets are equal when their String forms are equal.
type Labels struct {
	list []Label // sorted by Name, names unique
}

// Limits keep the canonical form well inside a store key.
const (
	maxNameLen   = 253
	maxValueLen  = 253
	maxCanonical = 2048
)

// ParseLabels parses labels as the CLI and the CNI arguments give them:
// "k=v,k2=v2" (';' also separates, so the canonical form parses back), each
// key optionally with a source ("k8s:app=web"). Spaces around labels are
// ignored and empty elements skipped. "reserved:<name>" needs no value.
func ParseLabels(s string) (Labels, error) {
	var list []Label
	for elem := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ',' || r == ';' }) {
		elem = strings.TrimSpace(elem)
		if elem == "" {
			continue
		}
		name, value, found := strings.Cut(elem, "=")
		if !found && !strings.HasPrefix(name, SourceReserved+":") {
			return Labels{}, fmt.Errorf("label %q: '=' missing; write key=value, e.g. app=web", elem)
		}
		l, err := makeLabel(name, value)
		if err != nil {
			return Labels{}, err
		}
		list = append(list, l)
	}
	return newLabels(list)
}

// LabelsFromMap builds a set from name → value, names optionally with a source.
func LabelsFromMap(m map[string]string) (Labels, error) {
	list := make([]Label, 0, len(m))
	for name, value := range m {
		l, err := makeLabel(name, value)
		if err != nil {
			return Labels{}, err
		}
		list = append(list, l)
	}
	return newLabels(list)
}

// MustParseLabels is ParseLabels for constants in tests and code; it panics on error.
func MustParseLabels(s string) Labels {
	l, err := ParseLabels(s)
	if err != nil {
		panic(err)
	}
	return l
}

func makeLabel(name, value string) (Label, error) {
	var l Label
	if src, key, ok := strings.Cut(name, ":"); ok {
		l.Source, l.Key = src, key
		if src == "" {
			return Label{}, fmt.Errorf("label %q: empty source before ':'; write source:key=value or drop the ':'", name)
		}
		if i := strings.IndexFunc(src, func(r rune) bool { return !isSourceChar(r) }); i >= 0 {
			return Label{}, fmt.Errorf("label %q: source %q has invalid character %q; use lowercase letters, digits and '-'", name, src, src[i])
		}
	} else {
		l.Key = name
	}
	l.Value = value
	if l.Key == "" {
		return Label{}, fmt.Errorf("label %q=%q: empty key; write key=value, e.g. app=web", name, value)
	}
	if len(name) > maxNameLen {
		return Label{}, fmt.Errorf("label %.40q...: name is %d bytes; keep it to %d", name, len(name), maxNameLen)
	}
	if len(value) > maxValueLen {
		return Label{}, fmt.Errorf("label %q: value is %d bytes; keep it to %d", name, len(value), maxValueLen)
	}
	if i := strings.IndexFunc(l.Key, func(r rune) bool { return !isKeyChar(r) }); i >= 0 {
		return Label{}, fmt.Errorf("label %q: key has invalid character %q; use letters, digits, '.', '_', '-' and '/'", name, l.Key[i])
	}
	if i := strings.IndexFunc(value, func(r rune) bool { return !isValueChar(r) }); i >= 0 {
		return Label{}, fmt.Errorf("label %q: value %q has invalid character %q; use letters, digits, '.', '_', '-', '/', ':', '@' and '+'", name, value, value[i])
	}
	if l.Source == SourceReserved {
		if _, ok := reserved[l.Key]; !ok {
			return Label{}, fmt.Errorf("label %q: unknown reserved identity %q; use one of %s", name, l.Key, reservedNames())
		}
		if value != "" {
			return Label{}, fmt.Errorf("label %q: reserved labels take no value; write %s", name, name)
		}
	}
	return l, nil
}

func newLabels(list []Label) (Labels, error) {
	slices.SortFunc(list, func(a, b Label) int {
		if c := strings.Compare(a.Name(), b.Name()); c != 0 {
			return c
		}
		return strings.Compare(a.Value, b.Value)
	})
	out := list[:0]
	for i, l := range list {
		if i > 0 && list[i-1].Name() == l.Name() {
			if list[i-1].Value != l.Value {
				return Labels{}, fmt.Errorf("label %q given twice with different values %q and %q; keep one", l.Name(), list[i-1].Value, l.Value)
			}
			continue
		}
		out = append(out, l)
	}
	ls := Labels{list: out}
	for _, l := range out {
		if l.Source == SourceReserved && len(out) > 1 {
			return Labels{}, fmt.Errorf("label %q: a reserved label must be alone in its set, found %d labels; drop the others", l.Name(), len(out))
		}
	}
	if n := len(ls.String()); n > maxCanonical {
		return Labels{}, fmt.Errorf("label set is %d bytes in canonical form; keep it to %d (fewer or shorter labels)", n, maxCanonical)
	}
	return ls, nil
}

// String is the canonical form: labels sorted by name, "name=value" joined by
// ';'. It is the store key of the set, so it must never change for a set.
func (l Labels) String() string {
	var b strings.Builder
	for i, lab := range l.list {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(lab.String())
	}
	return b.String()
}

// Map returns name → value.
func (l Labels) Map() map[string]string {
	m := make(map[string]string, len(l.list))
	for _, lab := range l.list {
		m[lab.Name()] = lab.Value
	}
	return m
}

// List returns the labels in canonical order (a copy).
func (l Labels) List() []Label { return slices.Clone(l.list) }

// Len is the number of labels.
func (l Labels) Len() int { return len(l.list) }

// Equal reports whether l and o are the same set.
func (l Labels) Equal(o Labels) bool { return slices.Equal(l.list, o.list) }

// reservedID returns the reserved identity the set stands for, if it is one.
func (l Labels) reservedID() (ID, bool) {
	if len(l.list) == 1 && l.list[0].Source == SourceReserved {
		return reserved[l.list[0].Key], true
	}
	return 0, false
}

func isSourceChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-'
}

func isKeyChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '.' || r == '_' || r == '-' || r == '/'
}

func isValueChar(r rune) bool {
	return isKeyChar(r) || r == ':' || r == '@' || r == '+'
}

func reservedNames() string {
	names := make([]string, 0, len(reserved))
	for n := range reserved {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

var errEmptyLabels = errors.New("label set is empty; give at least one label, e.g. app=web")
