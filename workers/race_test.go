//go:build race

package workers

// raceEnabled: the race detector slows the simulator tenfold.
const raceEnabled = true
