package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"

	gossh "golang.org/x/crypto/ssh"

	"github.com/chomhq/chom/drivers"
)

// maxStderrBytes is how much of a command's stderr goes into an error.
const maxStderrBytes = 4 << 10

// remote runs the fixed scripts of this package on servers over a pool of SSH
// connections.
type remote struct {
	cfg    Config
	signer gossh.Signer
	log    *slog.Logger
	pool   *pool
}

// runOpts are the streams of one command; nil ones are empty / discarded.
type runOpts struct {
	stdin  io.Reader
	stdout io.Writer
}

// run runs `sh -c script chom args…` on the server at ep and returns what it
// wrote to stdout (when o.stdout is nil, up to 64 kB of it) and the host key
// the server presented. A pooled connection that turns out broken before the
// session starts is redialled once; a session is never retried once started,
// because its stdin may be half consumed.
//
// Errors wrap drivers.ErrUnreachable when the server could not be reached,
// drivers.ErrHostKeyMismatch when it presented another key, and otherwise say
// which command failed with its exit status and stderr.
func (r *remote) run(ctx context.Context, ep endpoint, script string, args []string, o runOpts) (string, string, error) {
	line, err := command(script, args...)
	if err != nil {
		return "", "", err
	}
	log := r.log.With("vps_id", ep.key, "addr", ep.addr)
	for attempt := 0; ; attempt++ {
		c, reused, err := r.pool.get(ctx, ep.key, ep.addr, ep.pin, func(ctx context.Context) (*conn, error) {
			return connect(ctx, r.cfg, r.signer, ep.addr, ep.pin, log)
		})
		if err != nil {
			return "", "", err
		}
		sess, err := c.client.NewSession()
		if err != nil {
			r.pool.release(c, true)
			if reused && attempt == 0 && ctx.Err() == nil {
				log.Debug("pooled ssh connection broken; redialling", "error", err)
				continue
			}
			return "", c.hostTxt, fmt.Errorf("%w: open session: %w", drivers.ErrUnreachable, err)
		}
		out, err := r.session(ctx, sess, line, o)
		var (
			exit  *gossh.ExitError
			input *inputError
		)
		broken := err != nil && !errors.As(err, &exit) && !errors.As(err, &input) && ctx.Err() == nil
		r.pool.release(c, broken)
		if broken {
			err = fmt.Errorf("%w: %w", drivers.ErrUnreachable, err)
		}
		return out, c.hostTxt, err
	}
}

// session runs line on sess until it exits or ctx ends (which closes the
// session, and so the remote command's streams).
func (r *remote) session(ctx context.Context, sess *gossh.Session, line string, o runOpts) (string, error) {
	defer sess.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(ctx, func() { _ = sess.Close() })
	defer stop()

	var out bytes.Buffer
	stderr := &limitedBuffer{max: maxStderrBytes}
	sess.Stderr = stderr
	if o.stdout != nil {
		// A writer that fails would leave the remote command blocked on a full
		// channel; cancelling closes the session instead.
		sess.Stdout = &cancelWriter{w: o.stdout, cancel: cancel}
	} else {
		sess.Stdout = &limitedBuffer{max: 64 << 10, buf: &out}
	}
	if o.stdin != nil {
		sess.Stdin = o.stdin
	}
	err := sess.Run(line)
	if in, ok := o.stdin.(*eofReader); ok && in.err != nil {
		// The caller's reader failed (a VerifyReader at a bad checksum): the
		// connection is fine, the input is not.
		return out.String(), &inputError{err: in.err}
	}
	if cause := context.Cause(ctx); cause != nil && err != nil {
		return out.String(), cause
	}
	if err != nil {
		var exit *gossh.ExitError
		if errors.As(err, &exit) {
			return out.String(), &commandError{exit: exit, stderr: strings.TrimSpace(stderr.String())}
		}
		return out.String(), err
	}
	return out.String(), nil
}

// commandError is a remote command that exited non-zero. It unwraps to the
// *ssh.ExitError.
type commandError struct {
	exit   *gossh.ExitError
	stderr string
}

// secretPattern matches the database passwords scripts generate (64 hex
// digits), so that no error text can carry one even if a tool echoes it.
var secretPattern = regexp.MustCompile(`[0-9a-fA-F]{64}`)

func (e *commandError) Error() string {
	msg := fmt.Sprintf("exit status %d", e.exit.ExitStatus())
	if e.stderr != "" {
		msg += ": " + secretPattern.ReplaceAllString(truncateN(e.stderr, 1000), "[redacted]")
	}
	return msg
}

func (e *commandError) Unwrap() error { return e.exit }

// truncateN cuts s to n bytes.
func truncateN(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// limitedBuffer keeps the first max bytes written and discards the rest
// without failing the writer.
type limitedBuffer struct {
	max int
	buf *bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.buf == nil {
		b.buf = &bytes.Buffer{}
	}
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	if b.buf == nil {
		return ""
	}
	return b.buf.String()
}

// cancelWriter passes writes to w and cancels the session at w's first error.
type cancelWriter struct {
	w      io.Writer
	cancel context.CancelCauseFunc
}

func (c *cancelWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil {
		c.cancel(fmt.Errorf("write output: %w", err))
	}
	return n, err
}

// inputError is a failure of the reader a command's stdin came from.
type inputError struct{ err error }

func (e *inputError) Error() string { return "read input: " + e.err.Error() }
func (e *inputError) Unwrap() error { return e.err }

// eofReader records whether r ended with a clean io.EOF.
type eofReader struct {
	r   io.Reader
	eof bool
	err error
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	switch {
	case errors.Is(err, io.EOF):
		e.eof = true
	case err != nil:
		e.err = err
	}
	return n, err
}
