// Command handoff runs a network server as one master process and a
// generation of worker processes, and replaces the workers (or itself)
// with zero downtime. See README.md.
//
// This file is the entry point and nothing else: the command line is
// internal/cli, the master's wiring internal/master, the supervisor
// workers/.
package main

import (
	"os"

	"github.com/handoff-dev/handoff/internal/cli"
	"github.com/handoff-dev/handoff/workers"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
// Without it, handoff reports the module's build information.
var version string

func main() {
	// A worker being started passes through here on its way to exec the
	// real command: nothing may run before this. (Package initialisation
	// does: keep it cheap, no init() here.)
	workers.ExecShim()
	os.Exit(cli.Main(version, os.Args[1:], os.Stdout, os.Stderr))
}
