//go:build !gendocs

package main

import "github.com/spf13/cobra"

// manCommand is nil in a normal build: the man page generator (and the
// markdown renderer it needs) is built only with -tags gendocs.
func manCommand() *cobra.Command { return nil }
