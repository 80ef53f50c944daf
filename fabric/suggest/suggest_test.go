package suggest

import "testing"

func TestClosest(t *testing.T) {
	known := []string{"ingress", "egress", "endpointSelector", "toPorts"}
	for name, want := range map[string]string{
		"ingres":           "ingress",
		"Egress":           "egress",
		"endpointselector": "endpointSelector",
		"toport":           "toPorts",
		"nothinglikeit":    "",
	} {
		if got := Closest(name, known); got != want {
			t.Errorf("Closest(%q) = %q, want %q", name, got, want)
		}
	}
}
