// Command fabric is the single binary of Fabric: the node agent, the CLI
// that talks to it, and the lab.
package main

import (
	"os"

	"github.com/fabric-net/fabric/fabric/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
