// Package ssh reaches real VPS servers over SSH with golang.org/x/crypto/ssh:
// Probe implements drivers.HealthProbe, and Provisioner (NewProvisioner)
// implements drivers.Provisioner, drivers.BackupSource, drivers.UsageProbe
// (metering: a `find` of the document root, and the access logs streamed
// through drivers.ScanAccessLog) and drivers.TLSDeployer (tls.go: ACME HTTP-01
// tokens served by the site's nginx, certificates deployed root-only and the
// HTTPS block checked with nginx -t; docs/operations.md, TLS on the server).
//
// # Provisioner
//
// The Provisioner sends only the fixed scripts of scripts.go, as
// `sh -c SCRIPT chom ARG…`: values reach them as positional parameters, each
// single-quoted by quote, and file contents come on stdin, so nothing from a
// request is ever parsed as shell syntax (specs pass
// drivers.ValidateSiteSpec first, and every derived path is checked to lie
// directly inside its Layout directory). Where a site's parts live and which
// commands check and reload nginx, php-fpm and MariaDB is the Layout,
// operator configuration with Debian 12 defaults. It connects, pins host keys
// (drivers.Server.HostKey) and pools connections exactly as the Probe does
// (connect in dial.go is shared), in a pool of its own.
//
// Restores extract tenant archives as root, so the archive is checked as it
// streams to the server (checkArchive: the local driver's rules) and one with
// an absolute link, a link leaving the site, a files member that is a link,
// an entry through a link, a hard link or a device is never extracted;
// chown -R -P does not follow links. The isolation model of a shared server
// (who owns which directory, the pool's disable_functions, nginx's
// disable_symlinks) is in docs/operations.md, Isolation.
//
// # Probe
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
