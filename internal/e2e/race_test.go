//go:build race

package e2e

// raceEnabled builds the handoff binary under test with -race too.
const raceEnabled = true
