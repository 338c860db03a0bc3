package workers

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// The test binary is /proc/self/exe for workers started without the
	// built-in shim (TestProcsShimSetsListenPID): it must act as
	// handoff's binary does. TestExecShimHelper calls ExecShim itself.
	if os.Getenv(shimTestEnv) == "" {
		ExecShim()
	}
	os.Exit(m.Run())
}
