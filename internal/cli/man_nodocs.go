//go:build !gendocs

package cli

import "github.com/spf13/cobra"

// manCommand is nil in a normal build: the man page generator (and the
// markdown renderer it needs) is built only with -tags gendocs.
func manCommand(version string) *cobra.Command { return nil }
