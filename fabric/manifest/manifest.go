// Package manifest reads Kubernetes-shaped YAML manifests strictly, node by
// node, so that every mistake is reported with its document, line and field
// path and what to write instead, and all mistakes of a document are
// reported together. It owns the walking and the wording of errors; the
// packages that own a kind (lbipam's pools, l2announce's policies) own its
// schema and call it.
package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/fabric-net/fabric/fabric/suggest"
)

// Reader collects the errors of one document. Prefix names the reading
// package in each error ("lbipam"); Doc is the document's 1-based number
// in its stream.
type Reader struct {
	Prefix string
	Doc    int
	Errs   []error
}

// Errorf records an error about node n at path ("spec.blocks[0].cidr").
func (r *Reader) Errorf(n *yaml.Node, path, format string, args ...any) {
	where := fmt.Sprintf("document %d", r.Doc)
	if n != nil && n.Line > 0 {
		where += fmt.Sprintf(", line %d", n.Line)
	}
	if path != "" {
		path += ": "
	}
	r.Errs = append(r.Errs, fmt.Errorf("%s: %s: %s%s", r.Prefix, where, path, fmt.Sprintf(format, args...)))
}

// Deref follows aliases a bounded number of times: readers descend only
// into known fields of shallow schemas, so recursive anchors cannot loop.
func Deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// IsNull reports whether n is absent or an explicit null.
func IsNull(n *yaml.Node) bool {
	n = Deref(n)
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// Fields returns mapping n's values by key. A key in neither known nor
// ignored is an error with a did-you-mean hint, and so is a key given
// twice.
func (r *Reader) Fields(n *yaml.Node, path string, known, ignored []string) map[string]*yaml.Node {
	n = Deref(n)
	out := map[string]*yaml.Node{}
	if IsNull(n) {
		return out
	}
	if n.Kind != yaml.MappingNode {
		r.Errorf(n, path, "is a %s, not a mapping; write it as key: value lines", KindName(n))
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := Deref(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			r.Errorf(n.Content[i], path, "has a key that is not a plain name; use field names as keys")
			continue
		}
		switch {
		case slices.Contains(known, k.Value):
			if _, dup := out[k.Value]; dup {
				r.Errorf(k, Join(path, k.Value), "is given twice; keep one")
			}
			out[k.Value] = v
		case slices.Contains(ignored, k.Value):
		default:
			msg := fmt.Sprintf("unknown field %q; known fields are %s", k.Value, strings.Join(known, ", "))
			if s := suggest.Closest(k.Value, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			r.Errorf(k, Join(path, k.Value), "%s", msg)
		}
	}
	return out
}

// ServerMetadata are the metadata fields a Kubernetes API server fills in
// (or that mean nothing to Fabric): a manifest exported from a cluster
// carries them, and readers accept and ignore them.
var ServerMetadata = []string{
	"namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
	"deletionTimestamp", "deletionGracePeriodSeconds", "managedFields",
	"finalizers", "ownerReferences", "generateName", "selfLink",
}

// Metadata reads the metadata of the object n at prefix, whose top-level
// fields are f: its name, which it requires ("give the <what> a name"), and
// its labels, checked as a string map. It returns the name and the fields,
// for a reader that wants annotations.
func (r *Reader) Metadata(n *yaml.Node, f map[string]*yaml.Node, prefix, what string) (string, map[string]*yaml.Node) {
	meta := r.Fields(f["metadata"], prefix+"metadata", []string{"name", "labels", "annotations"}, ServerMetadata)
	var name string
	if v, ok := meta["name"]; ok {
		name, _ = r.Str(v, prefix+"metadata.name")
	} else {
		r.Errorf(Deref(n), prefix+"metadata.name", "is missing; give the %s a name", what)
	}
	r.StringMap(meta["labels"], prefix+"metadata.labels") // checked, not used
	return name, meta
}

// Str reads a scalar as a string.
func (r *Reader) Str(n *yaml.Node, path string) (string, bool) {
	n = Deref(n)
	if n == nil || n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		r.Errorf(n, path, "is a %s; give a string", KindName(n))
		return "", false
	}
	return n.Value, true
}

// Bool reads true or false.
func (r *Reader) Bool(n *yaml.Node, path string) bool {
	d := Deref(n)
	var b bool
	if d == nil || d.Kind != yaml.ScalarNode || d.ShortTag() != "!!bool" || d.Decode(&b) != nil {
		r.Errorf(n, path, "is a %s, not a boolean; write true or false", KindName(d))
		return false
	}
	return b
}

// List returns a sequence's items; absent or null is an empty list.
func (r *Reader) List(n *yaml.Node, path string) []*yaml.Node {
	n = Deref(n)
	if IsNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		r.Errorf(n, path, "is a %s, not a list; write one \"- \" item per line", KindName(n))
		return nil
	}
	return n.Content
}

// StringMap reads a mapping of strings to strings (labels, annotations).
func (r *Reader) StringMap(n *yaml.Node, path string) map[string]string {
	n = Deref(n)
	if IsNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		r.Errorf(n, path, "is a %s, not a mapping; write key: value lines", KindName(n))
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, ok := r.Str(n.Content[i], path+" key")
		if !ok {
			continue
		}
		if v, ok := r.Str(n.Content[i+1], Join(path, k)); ok {
			out[k] = v
		}
	}
	return out
}

// Join extends a field path: Join("spec", "blocks") is "spec.blocks".
func Join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// KindName describes what a node is, for errors.
func KindName(n *yaml.Node) string {
	switch {
	case n == nil || n.Kind == 0:
		return "missing value"
	case n.Kind == yaml.MappingNode:
		return "mapping"
	case n.Kind == yaml.SequenceNode:
		return "list"
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null":
		return "empty value"
	case n.Kind == yaml.ScalarNode:
		return fmt.Sprintf("value %q", n.Value)
	default:
		return "alias"
	}
}

// Parse reads every document of a YAML stream and hands each object to
// object: the document itself, or each item of a "kind: List" (or
// "<kind>List", as kubectl prints). object gets the Reader of its document,
// the object's node and its path prefix ("" or "items[2]."), records its
// errors on the Reader and says whether it produced a value. Parse returns
// the values in the order written and every error of every document; a
// YAML syntax error ends the stream, since the decoder cannot resume.
func Parse[T any](data []byte, prefix, kind string, object func(r *Reader, n *yaml.Node, path string) (T, bool)) ([]T, []error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var (
		out  []T
		errs []error
	)
	for doc := 1; ; doc++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d: %w; fix the YAML syntax", prefix, doc, err))
			break
		}
		r := &Reader{Prefix: prefix, Doc: doc}
		for _, o := range r.objects(&n, kind) {
			if v, ok := object(r, o.n, o.path); ok {
				out = append(out, v)
			}
		}
		errs = append(errs, r.Errs...)
	}
	return out, errs
}

type object struct {
	n    *yaml.Node
	path string
}

// objects returns the objects of document n.
func (r *Reader) objects(n *yaml.Node, kind string) []object {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	if IsNull(n) {
		return nil // an empty document, as "---" at the end of a file makes
	}
	top := r.Fields(n, "", []string{"apiVersion", "kind", "metadata", "spec", "items"}, []string{"status"})
	if len(r.Errs) > 0 {
		return nil
	}
	k := ""
	if kn, ok := top["kind"]; ok {
		k, _ = r.Str(kn, "kind")
	}
	if k == "List" || k == kind+"List" {
		var out []object
		for i, item := range r.List(top["items"], "items") {
			out = append(out, object{item, fmt.Sprintf("items[%d].", i)})
		}
		return out
	}
	if _, ok := top["items"]; ok {
		r.Errorf(top["items"], "items", "only a kind: List has items; remove items or set kind: List")
		return nil
	}
	return []object{{n, ""}}
}

// Object reads the top level of one object at prefix ("" or "items[2]."):
// its apiVersion, kind, metadata and spec (status is ignored), requiring
// apiVersion and kind; the error says to start the object with apiVersion
// and kind as given. It reports false when the object has errors.
func (r *Reader) Object(n *yaml.Node, prefix, apiVersion, kind string) (map[string]*yaml.Node, bool) {
	before := len(r.Errs)
	f := r.Fields(n, strings.TrimSuffix(prefix, "."), []string{"apiVersion", "kind", "metadata", "spec"}, []string{"status"})
	if len(r.Errs) > before {
		return nil, false
	}
	for _, k := range []string{"apiVersion", "kind"} {
		if _, ok := f[k]; !ok {
			r.Errorf(Deref(n), prefix+k, "is missing; start the object with apiVersion: %s and kind: %s", apiVersion, kind)
		}
	}
	return f, len(r.Errs) == before
}
