// Command fabric is the single binary of Fabric: the node agent, the CLI
// that talks to it, the lab, and the CNI plugin (when invoked as fabric-cni).
package main

import (
	"os"
	"path/filepath"

	"github.com/fabric-net/fabric/fabric/cli"
	"github.com/fabric-net/fabric/fabric/cni"
)

func main() {
	// Runtimes run the plugin named by the network config's "type", so a
	// link named fabric-cni makes this binary the plugin.
	if filepath.Base(os.Args[0]) == "fabric-cni" {
		os.Exit(cni.Main())
	}
	os.Exit(cli.Main(os.Args[1:]))
}
