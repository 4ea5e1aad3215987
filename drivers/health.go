package drivers

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrUnreachable is wrapped by a HealthProbe error when the server could not be
// reached at all (dial refused or timed out, handshake failed, breaker open). The
// health job counts it as an unhealthy result; it is not a job failure.
var ErrUnreachable = errors.New("drivers: server unreachable")

// ErrHostKeyMismatch is wrapped when a server presents a host key other than
// the pinned one. It is a security failure: never retried, never trusted.
var ErrHostKeyMismatch = errors.New("drivers: host key mismatch")

// ErrHostKeyUnpinned is wrapped when a server has no pinned host key and the
// host-key policy is strict: the server is refused before any connection.
// It wraps ErrHostKeyMismatch, so it is handled as one (never retried, never
// trusted, an unhealthy health check).
var ErrHostKeyUnpinned = fmt.Errorf("%w: no host key pinned", ErrHostKeyMismatch)

// HealthTarget is what a probe needs to find a server.
type HealthTarget struct {
	Server Server
	// HostKey is the pinned SSH host key in authorized_keys format ("ssh-ed25519
	// AAAA…"); empty means none is pinned yet (trust on first use: the probe
	// returns the key it saw in HealthReport.HostKey, and the caller records it).
	HostKey string
}

// HealthReport is what one probe measured on a server. Zero values mean "not
// measured" only where the field says so.
type HealthReport struct {
	// Reachable is true when the probe connected and ran its measurement.
	Reachable bool
	// ConnectLatency is the time to connect (and, over SSH, to authenticate), or
	// to reuse a pooled connection.
	ConnectLatency time.Duration
	// HostKey is the host key the server presented (authorized_keys format);
	// empty for drivers without one (local).
	HostKey string

	// Load1, Load5 and Load15 are the load averages; CPUs is the number of
	// online processors (so load can be judged per core).
	Load1, Load5, Load15 float64
	CPUs                 int
	// MemTotalBytes and MemAvailableBytes come from /proc/meminfo.
	MemTotalBytes, MemAvailableBytes uint64
	// DiskTotalBytes and DiskFreeBytes describe the filesystem holding the sites.
	DiskTotalBytes, DiskFreeBytes uint64

	// HTTPStatus is the status code of the server's nginx for a plain GET, 0 when
	// no answer came (HTTPError says why); HTTPLatency is how long it took.
	HTTPStatus  int
	HTTPLatency time.Duration
	HTTPError   string
	// HTTPSkipped is true when the driver has no web server to ask (the local
	// driver of `chom dev` without a configured URL): HTTPStatus is then 0 and
	// HTTPError says why, and the health job does not count the missing answer
	// against the server. The zero value (false) means HTTP was checked, so a
	// driver that always checks need not set it.
	HTTPSkipped bool

	// HostShared is true when the "server" is this machine, shared with CHOM
	// itself and with every other server of the driver (the local driver): load,
	// memory and disk are then CHOM's own host's, reported for information but
	// not judged, or a busy test run or a full laptop disk would mark every
	// local server unhealthy at once. Reachability and HTTP are still judged.
	HostShared bool
}

// HealthProbe measures a server's health. Implementations: local (this machine,
// for `chom dev`) and ssh (a real server).
type HealthProbe interface {
	// Probe measures target once, within ctx. An unreachable server is an error
	// wrapping ErrUnreachable (the report may still carry ConnectLatency); a
	// changed host key is an error wrapping ErrHostKeyMismatch.
	Probe(ctx context.Context, target HealthTarget) (HealthReport, error)
}
