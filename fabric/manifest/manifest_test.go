package manifest

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestReader(t *testing.T) {
	var doc yaml.Node
	src := "spec:\n  blocks: [a, b]\n  sevriceSelector: {}\n  blocks: []\n  disabled: maybe\n  labels: {a: b}\n"
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	r := &Reader{Prefix: "test", Doc: 2}
	top := r.Fields(doc.Content[0], "", []string{"spec"}, nil)
	spec := r.Fields(top["spec"], "spec", []string{"blocks", "serviceSelector", "disabled", "labels"}, nil)
	if got := len(r.List(spec["blocks"], "spec.blocks")); got != 0 {
		t.Errorf("blocks: the last of the duplicates wins, got %d items", got)
	}
	r.Bool(spec["disabled"], "spec.disabled")
	if m := r.StringMap(spec["labels"], "spec.labels"); m["a"] != "b" {
		t.Errorf("labels = %v", m)
	}
	all := ""
	for _, e := range r.Errs {
		all += e.Error() + "\n"
	}
	for _, want := range []string{
		`test: document 2, line 3: spec.sevriceSelector: unknown field "sevriceSelector"`,
		`did you mean "serviceSelector"?`,
		"spec.blocks: is given twice",
		`spec.disabled: is a value "maybe", not a boolean`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("errors lack %q:\n%s", want, all)
		}
	}
	if len(r.Errs) != 3 {
		t.Errorf("%d errors, want 3:\n%s", len(r.Errs), all)
	}
	if Join("", "a") != "a" || Join("a", "b") != "a.b" || !IsNull(nil) || KindName(nil) != "missing value" {
		t.Error("Join, IsNull or KindName")
	}
}

func TestMetadata(t *testing.T) {
	read := func(src string) (string, []error) {
		t.Helper()
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
			t.Fatal(err)
		}
		r := &Reader{Prefix: "test", Doc: 1}
		n := doc.Content[0]
		f := r.Fields(n, "", []string{"metadata"}, nil)
		name, _ := r.Metadata(n, f, "", "pool")
		return name, r.Errs
	}
	// What a cluster's server fills in is accepted and ignored.
	if name, errs := read("metadata: {name: blue, uid: x, resourceVersion: '7', labels: {a: b}}"); name != "blue" || len(errs) != 0 {
		t.Errorf("exported object: name %q, errors %v", name, errs)
	}
	for src, want := range map[string]string{
		"metadata: {labels: {a: b}}":               "metadata.name: is missing; give the pool a name",
		"metadata: {name: blue, labels: [a]}":      "metadata.labels",
		"metadata: {name: blue, lables: {}}":       `unknown field "lables"`,
		"metadata: {name: blue, labels: {a: [b]}}": "metadata.labels",
	} {
		_, errs := read(src)
		if len(errs) == 0 || !strings.Contains(errs[0].Error(), want) {
			t.Errorf("%s: errors %v; want one naming %q", src, errs, want)
		}
	}
}
