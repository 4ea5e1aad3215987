package tlsenv_test

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers/tlstest"
	"github.com/chomhq/chom/internal/tlsenv"
)

// server is an HTTPS test server whose certificate and answers a test
// changes while a Poller runs.
type server struct {
	srv  *httptest.Server
	cert atomic.Pointer[tls.Certificate]
	fail atomic.Bool
}

func newServer(t *testing.T, http2 bool, leaf tlstest.Leaf) *server {
	t.Helper()
	s := &server{}
	s.serve(t, leaf)
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if s.fail.Load() {
			http.Error(w, "planted failure", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	s.srv.EnableHTTP2 = http2
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	s.srv.TLS = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cert.Load(), nil }}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

// serve makes the server hand out leaf from the next handshake on.
func (s *server) serve(t *testing.T, leaf tlstest.Leaf) {
	t.Helper()
	c, err := tls.X509KeyPair(leaf.Cert.ChainPEM, leaf.Cert.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	s.cert.Store(&c)
}

// client reaches s for any URL, trusting ca, with a new connection per request.
func (s *server) client(ca *tlstest.CA) *http.Client {
	addr := s.srv.Listener.Addr().String()
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Roots}, ForceAttemptHTTP2: true, DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
}

func serial(l tlstest.Leaf) string { return hex.EncodeToString(l.X509.SerialNumber.Bytes()) }

// The poller records each failed request with its text, the serials in the
// order first served, and one switch for a clean replacement; WaitServed
// returns once the new serial has been served for the time asked.
func TestPoller(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	names := []string{"poll.test"}
	old, renewed := ca.Issue(t, names, tlstest.LeafOptions{}), ca.Issue(t, names, tlstest.LeafOptions{})
	s := newServer(t, true, old)
	p := tlsenv.StartPoller(t, s.client(ca), "https://poll.test/", tlsenv.PollOptions{})
	p.WaitServed(t, serial(old), 50*time.Millisecond)

	s.fail.Store(true)
	for deadline := time.Now().Add(10 * time.Second); len(p.Report().Errors) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the poller recorded no error while the server answered 503")
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.fail.Store(false)
	p.WaitServed(t, serial(old), 50*time.Millisecond)
	s.serve(t, renewed)
	p.WaitServed(t, serial(renewed), 100*time.Millisecond)
	r := p.Stop()
	t.Logf("%v", r)

	if got, want := r.SerialList(), []string{serial(old), serial(renewed)}; !slices.Equal(got, want) {
		t.Errorf("serials %v, want %v", got, want)
	}
	if r.Switches != 1 {
		t.Errorf("%d switches, want 1", r.Switches)
	}
	if len(r.Errors) == 0 || !strings.Contains(r.Errors[0].Err, "503") || r.Errors[0].At.Before(r.Started) {
		t.Errorf("errors %+v, want the 503s with their times", r.Errors)
	}
	ok := 0
	for _, s := range r.Serials {
		ok += s.Responses
	}
	if ok+len(r.Errors) != r.Requests {
		t.Errorf("%d responses and %d errors, %d requests", ok, len(r.Errors), r.Requests)
	}
	if again := p.Stop(); again.Requests != r.Requests {
		t.Errorf("a second Stop polled on: %d requests, then %d", r.Requests, again.Requests)
	}
}

// A certificate that does not verify against the client's roots, and an
// answer over HTTP/1.1, are errors.
func TestPollerErrors(t *testing.T) {
	t.Parallel()
	ca, other := tlstest.NewCA(t), tlstest.NewCA(t)
	leaf := ca.Issue(t, []string{"poll.test"}, tlstest.LeafOptions{})
	for _, c := range []struct {
		name   string
		http2  bool
		trust  *tlstest.CA
		opts   tlsenv.PollOptions
		errSub string
	}{
		{"untrusted root", true, other, tlsenv.PollOptions{}, "certificate signed by unknown authority"},
		{"http/1.1", false, ca, tlsenv.PollOptions{}, "served over HTTP/1.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, c.http2, leaf)
			p := tlsenv.StartPoller(t, s.client(c.trust), "https://poll.test/", c.opts)
			for deadline := time.Now().Add(10 * time.Second); p.Report().Requests < 3; {
				if time.Now().After(deadline) {
					t.Fatal("the poller sent fewer than 3 requests in 10s")
				}
				time.Sleep(5 * time.Millisecond)
			}
			r := p.Stop()
			if len(r.Errors) != r.Requests || len(r.Serials) != 0 || !strings.Contains(r.Errors[0].Err, c.errSub) {
				t.Errorf("%v; want every request an error with %q", r, c.errSub)
			}
		})
	}
	t.Run("http/1.1 allowed", func(t *testing.T) {
		t.Parallel()
		s := newServer(t, false, leaf)
		p := tlsenv.StartPoller(t, s.client(ca), "https://poll.test/", tlsenv.PollOptions{AllowHTTP1: true})
		p.WaitServed(t, serial(leaf), 20*time.Millisecond)
		if r := p.Stop(); len(r.Errors) != 0 {
			t.Errorf("%v; want no error", r)
		}
	})
}
