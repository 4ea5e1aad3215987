// Package ssh measures a real VPS over SSH: Probe implements
// drivers.HealthProbe with golang.org/x/crypto/ssh.
//
// A check connects (or reuses the pooled connection of that server), runs the
// single fixed command ProbeCommand, parses its output with ParseOutput, and
// GETs the server's nginx meanwhile. The pool keeps one *ssh.Client per server,
// shared by concurrent checks, drops it as soon as the connection ends,
// redials once when a pooled connection turns out broken, closes connections
// idle for Config.IdleTimeout and keeps at most Config.MaxConns.
//
// Host keys are pinned: a server must present exactly the pinned key
// (compared on the wire form, comment ignored), else the check fails with an
// error wrapping drivers.ErrHostKeyMismatch and the connection is dropped
// before authentication. With no pin the key is accepted and returned in
// HealthReport.HostKey for the caller to record (trust on first use). The
// client's private key is read once by New; it never reaches an error or a log
// line. Every wait honours the caller's context: the dial uses DialContext,
// the handshake is bounded by a deadline and cut by a context.AfterFunc, and
// a running session is closed when the context ends.
//
// Per-server circuit breakers are not here but in drivers/breaker, which wraps
// any drivers.HealthProbe.
package ssh
