//go:build race

package testutil

// RaceEnabled reports whether the race detector is on. Its shadow memory is
// never returned to the OS, so resident-memory checks do not hold under it.
const RaceEnabled = true
