// Command dispatcher is Kiln's service: the build API, River workers and
// migrations. See 'dispatcher help'.
package main

import (
	"os"

	"github.com/kilnbuild/kiln/dispatcher/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
