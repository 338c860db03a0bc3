//go:build race

package main

// raceEnabled builds the handoff binary under test with -race too.
const raceEnabled = true
