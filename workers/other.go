//go:build !linux

package workers

import (
	"errors"
	"fmt"
	"os"

	"github.com/hashicorp/go-hclog"
)

// Workers run on Linux only (pidfds, Pdeathsig, cgroups, the exec shim);
// elsewhere the package builds, so that its logic and its tests on
// simulated processes run on a developer's machine, and starting a real
// worker fails with this error.
var errNotLinux = errors.New("handoff runs workers on Linux only")

type noStarter struct{}

func (noStarter) start(procSpec) (process, error) { return nil, errNotLinux }
func (noStarter) close()                          {}

func newProcs(hclog.Logger, func(int, exitInfo)) starter { return noStarter{} }

func treeUsage(process) (int64, float64) { return 0, 0 }

func makeRuntimeDir() (string, error) {
	dir, err := os.MkdirTemp("", "handoff-")
	if err != nil {
		return "", fmt.Errorf("runtime directory: %w", err)
	}
	return dir, nil
}

func pipe() (*os.File, int, error) { return nil, -1, errNotLinux }
