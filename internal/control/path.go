package control

import "os"

// Path is the control socket's path for a --control flag's value: the
// value itself, or else DefaultPath for this process's environment,
// user and temporary directory.
func Path(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return DefaultPath(os.Getenv, os.Geteuid(), os.TempDir())
}
