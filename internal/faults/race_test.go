//go:build race

package faults

// The test binary was built with -race: build chom with it too, so the
// processes under fault are checked for data races and share the build cache.
func init() { raceEnabled = true }
