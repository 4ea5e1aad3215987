//go:build pprof

package main

import (
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
)

// A binary built with `-tags pprof` (scripts/load/poll.sh PROFILE=DIR does)
// serves net/http/pprof on PPROF_LISTEN, for profiling a load run with
// `go tool pprof`. The production binary has none of it.
func init() {
	if addr := os.Getenv("PPROF_LISTEN"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
