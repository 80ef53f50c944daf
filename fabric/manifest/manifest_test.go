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
