package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fabric-net/fabric/fabric/lab"
	"github.com/fabric-net/fabric/fabric/lab/labtest"
)

// Workloads reach addresses outside the cluster through their node, which
// masquerades them: the lab's router knows no route to the pod pools, so
// only the node's own address can get an answer.
func TestLabMasquerade(t *testing.T) {
	labtest.SkipUnlessAvailable(t)
	labtest.SkipUnlessCNI(t, labtest.Binary(t))
	for _, mode := range []string{"vxlan", "native"} {
		t.Run(mode, func(t *testing.T) {
			l := labtest.New(t, lab.Spec{Clusters: 1, Nodes: 2, Mode: mode})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			for _, node := range []string{"c1-n1", "c1-n2"} {
				name := "out-" + node
				if _, err := l.AddWorkload(ctx, node, name, "app=out"); err != nil {
					t.Fatal(err)
				}
				out, err := l.Exec(ctx, name, "ping", "-c", "2", "-W", "1", "10.99.1.1")
				if err != nil {
					t.Errorf("%s on %s → router 10.99.1.1: %v\n%s", name, node, err, out)
				}
			}
			// The router saw the nodes' addresses, never a pod's.
			out, err := l.Exec(ctx, lab.RouterMember, "ip", "-4", "neigh")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(out), "10.201.") {
				t.Errorf("the router resolved a pod address: %s", out)
			}
		})
	}
}
