package drivers

import "errors"

// ErrDeferred is wrapped by the error of a call that a protection layer refused
// to run now: the server's circuit breaker is open (the error then also wraps
// ErrUnreachable), or the server or the tenant already runs as many jobs as it
// may. The call was not attempted and nothing changed on the server, so it is
// not a failure of the job: job code returns it as is (no compensation, no
// failed operation) and the worker reschedules the task after a short delay
// without counting a retry.
var ErrDeferred = errors.New("drivers: call deferred, retry later")
