//go:build gendocs

package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// manCommand writes handoff's man pages (section 1, one per command). It
// exists only in a build with -tags gendocs, so that the handoff binary
// does not carry a markdown renderer:
//
//	go run -tags gendocs . man DIR
func manCommand(version string) *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the man pages into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: commandRun(func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			header := &doc.GenManHeader{
				Title:   "HANDOFF",
				Section: "1",
				Source:  "handoff " + version,
				Manual:  "handoff manual",
			}
			// SOURCE_DATE_EPOCH (reproducible-builds.org) fixes the date.
			date := time.Now().UTC()
			if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
				var sec int64
				if _, err := fmt.Sscan(s, &sec); err != nil {
					return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
				}
				date = time.Unix(sec, 0).UTC()
			}
			header.Date = &date
			if err := doc.GenManTree(root, header, dir); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			return nil
		}),
	}
}
