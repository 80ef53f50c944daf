package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/fabric-net/fabric/fabric/suggest"
)

// ParseError is a problem in a policy document, located by the field path
// inside the document ("spec.ingress[0].toPorts[0].ports[0].port").
type ParseError struct {
	Document int // 1-based position in a multi-document stream; 0 for a single document
	Line     int // 0 when unknown
	Path     string
	Msg      string
}

func (e *ParseError) Error() string {
	var loc []string
	if e.Document > 0 {
		loc = append(loc, fmt.Sprintf("document %d", e.Document))
	}
	if e.Line > 0 {
		loc = append(loc, fmt.Sprintf("line %d", e.Line))
	}
	var b strings.Builder
	if len(loc) > 0 {
		b.WriteString(strings.Join(loc, ", "))
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// maxSteps bounds the nodes one document may make the walker visit, so that
// aliases referring to aliases cannot make parsing exponential.
const maxSteps = 1 << 20

// walker reads one YAML document strictly, building errors with field paths.
type walker struct {
	doc   int
	steps int
}

// val is a YAML node and its field path in the document.
type val struct {
	n    *yaml.Node
	path string
}

func (v val) field(name string) string {
	if v.path == "" {
		return name
	}
	return v.path + "." + name
}

func (w *walker) errf(v val, format string, args ...any) error {
	line := 0
	if v.n != nil {
		line = v.n.Line
	}
	return &ParseError{Document: w.doc, Line: line, Path: v.path, Msg: fmt.Sprintf(format, args...)}
}

// deref follows aliases and counts the work done.
func (w *walker) deref(v val) (val, error) {
	if v.n == nil {
		return v, nil // an absent field
	}
	for range 64 {
		w.steps++
		if w.steps > maxSteps {
			return v, w.errf(v, "document too complex (more than %d nodes through aliases): write it out without nested aliases", maxSteps)
		}
		if v.n.Kind != yaml.AliasNode {
			return v, nil
		}
		if v.n.Alias == nil {
			return v, w.errf(v, "alias refers to nothing")
		}
		v.n = v.n.Alias
	}
	return v, w.errf(v, "alias chain too long")
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the scalar %q", n.Value)
	}
	return "an unexpected node"
}

// fields reads a mapping whose keys must be among allowed. Null values are
// left out, as if the field were absent; a null mapping is empty.
func (w *walker) fields(v val, allowed ...string) (map[string]val, error) {
	v, err := w.deref(v)
	if err != nil {
		return nil, err
	}
	out := map[string]val{}
	if isNull(v.n) {
		return out, nil
	}
	if v.n.Kind != yaml.MappingNode {
		return nil, w.errf(v, "expected a mapping of fields, found %s", kindName(v.n))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(v.n.Content); i += 2 {
		k, err := w.deref(val{v.n.Content[i], v.path})
		if err != nil {
			return nil, err
		}
		if k.n.Kind != yaml.ScalarNode {
			return nil, w.errf(k, "field names must be plain strings, found %s", kindName(k.n))
		}
		name := k.n.Value
		fv := val{v.n.Content[i+1], v.field(name)}
		if name == "<<" {
			return nil, w.errf(fv, "YAML merge keys (<<) are not supported in policies: write the fields out")
		}
		if seen[name] {
			return nil, w.errf(fv, "field given twice: keep one")
		}
		seen[name] = true
		if allowed != nil && !slices.Contains(allowed, name) {
			msg := fmt.Sprintf("unknown field %q", name)
			if s := suggest.Closest(name, allowed); s != "" {
				msg += fmt.Sprintf(": did you mean %q?", s)
			}
			return nil, w.errf(fv, "%s (fields here: %s); unknown fields are errors so a typo cannot widen the policy", msg, strings.Join(allowed, ", "))
		}
		fv, err = w.deref(fv)
		if err != nil {
			return nil, err
		}
		if isNull(fv.n) {
			continue
		}
		out[name] = fv
	}
	return out, nil
}

// at returns field name of a fields result, or a null value carrying the
// field's path when it is absent, so errors about it name the path.
func at(f map[string]val, parent val, name string) val {
	if v, ok := f[name]; ok {
		return v
	}
	return val{path: parent.field(name)}
}

// list reads a sequence; null is the empty list.
func (w *walker) list(v val) ([]val, error) {
	v, err := w.deref(v)
	if err != nil {
		return nil, err
	}
	if isNull(v.n) {
		return nil, nil
	}
	if v.n.Kind != yaml.SequenceNode {
		return nil, w.errf(v, "expected a list, found %s", kindName(v.n))
	}
	out := make([]val, len(v.n.Content))
	for i, n := range v.n.Content {
		out[i], err = w.deref(val{n, fmt.Sprintf("%s[%d]", v.path, i)})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// str reads a scalar as a string; null is "".
func (w *walker) str(v val) (string, error) {
	v, err := w.deref(v)
	if err != nil {
		return "", err
	}
	if isNull(v.n) {
		return "", nil
	}
	if v.n.Kind != yaml.ScalarNode {
		return "", w.errf(v, "expected a string, found %s", kindName(v.n))
	}
	return v.n.Value, nil
}

func (w *walker) strs(v val) ([]string, []val, error) {
	items, err := w.list(v)
	if err != nil {
		return nil, nil, err
	}
	out := make([]string, len(items))
	for i, it := range items {
		if out[i], err = w.str(it); err != nil {
			return nil, nil, err
		}
	}
	return out, items, nil
}

func (w *walker) boolean(v val) (bool, error) {
	s, err := w.str(v)
	if err != nil {
		return false, err
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, w.errf(v, "%q is not a boolean: use true or false", s)
	}
	return b, nil
}
