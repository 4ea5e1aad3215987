package ssh_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/ssh"
)

// hostile are values an attacker would like to see reach a shell.
var hostile = []string{
	"a.com;touch /tmp/x",
	"$(id)",
	"`id`",
	"../../etc",
	"a.com\ntouch /tmp/x",
	"it's",
	`"double"`,
	`back\slash`,
	"'; rm -rf / #",
	"a b\tc",
	"*",
	"~root",
	"$HOME ${PATH} $1 $@",
	"-n",
	"",
	"\x01\x7f\xff unicode é",
	"!event",
	"a||b&&c|d>e<f",
}

// TestQuoteRoundTrips proves the one quoting function hands any string
// (except a NUL) through a real shell as exactly one argument, unchanged: via
// sh -c, via bash -c (sshd runs the command line with the login shell, root's
// is bash), and through the full `sh -c SCRIPT chom ARG` line the driver sends.
func TestQuoteRoundTrips(t *testing.T) {
	t.Parallel()
	for _, s := range hostile {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			q, err := ssh.Quote(s)
			if err != nil {
				t.Fatal(err)
			}
			for _, shell := range []string{"sh", "bash"} {
				out, err := exec.Command(shell, "-c", "printf %s "+q).Output()
				if err != nil {
					t.Fatalf("%s -c: %v", shell, err)
				}
				if string(out) != s {
					t.Errorf("%s round trip of %q gave %q", shell, s, out)
				}
			}
			line, err := ssh.Command(`printf '%s|' "$#"; printf '%s' "$1"`, s)
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("bash", "-c", line).Output()
			if err != nil {
				t.Fatalf("bash -c %s: %v", line, err)
			}
			if want := "1|" + s; string(out) != want {
				t.Errorf("command line %s gave %q, want %q", line, out, want)
			}
		})
	}
	if _, err := ssh.Quote("a\x00b"); err == nil {
		t.Error("Quote accepted a NUL byte")
	}
	if _, err := ssh.Command("true", "a\x00b"); err == nil {
		t.Error("Command accepted a NUL byte")
	}
}

// TestHostileSpecsNeverReachAServer proves that every method refuses a spec
// with a hostile domain (or other field) before dialling anything: the error
// wraps drivers.ErrInvalidSpec and the dialler is never called.
func TestHostileSpecsNeverReachAServer(t *testing.T) {
	t.Parallel()
	var dials atomic.Int64
	signer, _ := genKey(t)
	p, err := ssh.NewProvisioner(ssh.Config{
		Signer:          signer,
		TrustOnFirstUse: true, // so a valid spec gets as far as the dialler
		Dial: func(context.Context, string, string) (net.Conn, error) {
			dials.Add(1)
			return nil, errors.New("no dialling in this test")
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	good := drivers.SiteSpec{ID: "site_1", TenantID: "ten_1", Domain: "ok.example.com", SiteType: drivers.SiteTypeHTML,
		Server: drivers.Server{ID: "vps_1", IPAddress: "127.0.0.1", SSHPort: 1}}
	var specs []drivers.SiteSpec
	for _, d := range append(hostile, "A.COM", "a.com.", "1.2.3.4", "a..com") {
		s := good
		s.Domain = d
		specs = append(specs, s)
	}
	for _, bad := range []func(*drivers.SiteSpec){
		func(s *drivers.SiteSpec) { s.ID = "site_1;id" },
		func(s *drivers.SiteSpec) { s.ID = "../x" },
		func(s *drivers.SiteSpec) { s.TenantID = "$(id)" },
		func(s *drivers.SiteSpec) { s.Server.ID = "vps 1" },
		func(s *drivers.SiteSpec) { s.SiteType = "php"; s.PHPVersion = "8.2;id" },
		func(s *drivers.SiteSpec) { s.SiteType = "perl" },
	} {
		s := good
		bad(&s)
		specs = append(specs, s)
	}
	ctx := t.Context()
	for _, s := range specs {
		_, err := p.Provision(ctx, s, nil)
		errs := []error{err, p.Deprovision(ctx, s), p.Archive(ctx, s, drivers.BackupFull, io.Discard),
			p.Restore(ctx, s, drivers.BackupFull, nil)}
		_, err = p.DiskBytes(ctx, s)
		errs = append(errs, err)
		_, err = p.Bandwidth(ctx, s, time.Now().Add(-time.Hour), time.Now())
		errs = append(errs, err)
		for i, err := range errs {
			if !errors.Is(err, drivers.ErrInvalidSpec) {
				t.Errorf("method %d with %+v: got %v, want ErrInvalidSpec", i, s, err)
			}
		}
	}
	if n := dials.Load(); n != 0 {
		t.Fatalf("%d dials for invalid specs, want 0", n)
	}
	// A valid spec does get as far as the dialler (so the counter is live).
	if _, err := p.Provision(ctx, good, nil); !errors.Is(err, drivers.ErrUnreachable) {
		t.Fatalf("valid spec: got %v, want ErrUnreachable", err)
	}
	if dials.Load() == 0 {
		t.Fatal("valid spec never dialled: the counter proves nothing")
	}
}

func TestLayoutValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		mod  func(*ssh.Layout)
		ok   bool
	}{
		{"defaults", func(*ssh.Layout) {}, true},
		{"relative web root", func(l *ssh.Layout) { l.WebRoot = "var/www" }, false},
		{"space in path", func(l *ssh.Layout) { l.LogDir = "/var/log/my logs" }, false},
		{"dotdot", func(l *ssh.Layout) { l.StateDir = "/var/lib/../etc" }, false},
		{"pool dir without version", func(l *ssh.Layout) { l.PHPPoolDir = "/etc/php/pool.d" }, false},
		{"listen with junk", func(l *ssh.Layout) { l.Listen = []string{"80; include /etc/passwd"} }, false},
		{"listen ipv4", func(l *ssh.Layout) { l.Listen = []string{"127.0.0.1:8080", "[::1]:8080"} }, true},
		{"empty command", func(l *ssh.Layout) { l.NginxCheck = []string{""} }, false},
		{"bad group", func(l *ssh.Layout) { l.WebGroup = "www data" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := ssh.DefaultLayout()
			tt.mod(&l)
			if err := l.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
