package ssh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/chomhq/chom/drivers"
)

// connect dials addr, checks the host key against pin and authenticates as
// cfg.User with signer, within cfg.DialTimeout and ctx. The probe and the
// provisioner share it, so both apply one host-key policy: a key other than
// the pin is an error wrapping drivers.ErrHostKeyMismatch and the connection
// is dropped before authentication; with no pin, the server is refused
// before any dial (drivers.ErrHostKeyUnpinned) unless cfg.TrustOnFirstUse;
// any other failure wraps drivers.ErrUnreachable.
func connect(ctx context.Context, cfg Config, signer gossh.Signer, addr string, pin hostPin, log *slog.Logger) (*conn, error) {
	if pin.none() && !cfg.TrustOnFirstUse {
		return nil, fmt.Errorf("%w: %s (pin its key, or set trust on first use)", drivers.ErrHostKeyUnpinned, addr)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	nc, err := cfg.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %w", drivers.ErrUnreachable, addr, err)
	}
	// The handshake knows no context: a deadline bounds it and ctx closes the
	// socket on cancellation.
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })

	c := &conn{}
	ccfg := &gossh.ClientConfig{
		User: cfg.User,
		Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: func(_ string, _ net.Addr, k gossh.PublicKey) error {
			c.hostKey = k.Marshal()
			c.hostTxt = strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k)))
			if !pin.none() && !pin.matches(c.hostKey) {
				log.Error("ssh host key mismatch: refusing the server",
					"pinned_fingerprint", pin.fp, "seen_fingerprint", gossh.FingerprintSHA256(k))
				return fmt.Errorf("%w: %s presented %s, pinned %s", drivers.ErrHostKeyMismatch,
					addr, gossh.FingerprintSHA256(k), pin.fp)
			}
			return nil
		},
		HostKeyAlgorithms: pin.algorithms(),
		Timeout:           cfg.DialTimeout,
	}
	sc, chans, reqs, err := gossh.NewClientConn(nc, addr, ccfg)
	stopped := stop()
	if err != nil {
		_ = nc.Close()
		if errors.Is(err, drivers.ErrHostKeyMismatch) {
			return nil, err
		}
		if !stopped && ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("%w: ssh handshake with %s: %w", drivers.ErrUnreachable, addr, err)
	}
	if !stopped {
		// ctx ended just as the handshake finished: the socket is closed.
		_ = sc.Close()
		return nil, fmt.Errorf("%w: ssh handshake with %s: %w", drivers.ErrUnreachable, addr, ctx.Err())
	}
	_ = nc.SetDeadline(time.Time{})
	c.client = gossh.NewClient(sc, chans, reqs)
	return c, nil
}

// endpoint is where and how to reach one server: the pool key, the address
// and the pinned host key (none under trust on first use).
type endpoint struct {
	key  string
	addr string
	pin  hostPin
}

// serverEndpoint checks srv's address, port and pinned key and returns its
// endpoint. hostKey is the pin (see parsePin), "" for none.
func serverEndpoint(srv drivers.Server, hostKey string) (endpoint, error) {
	if net.ParseIP(srv.IPAddress) == nil {
		return endpoint{}, fmt.Errorf("IP address %q is not an IP", truncate(srv.IPAddress))
	}
	port := srv.SSHPort
	if port == 0 {
		port = 22
	}
	if port < 0 || port > 65535 {
		return endpoint{}, fmt.Errorf("SSH port %d out of range", port)
	}
	pin, err := parsePin(hostKey)
	if err != nil {
		return endpoint{}, err
	}
	addr := net.JoinHostPort(srv.IPAddress, strconv.Itoa(port))
	key := srv.ID
	if key == "" {
		key = addr
	}
	return endpoint{key: key, addr: addr, pin: pin}, nil
}
