package drivers_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
)

// recording is a Provisioner, BackupSource and UsageProbe that records its
// calls and answers with fixed values.
type recording struct{ calls []string }

func (r *recording) Provision(context.Context, drivers.SiteSpec, drivers.ProgressFunc) (drivers.Result, error) {
	r.calls = append(r.calls, "Provision")
	return drivers.Result{DocumentRoot: "/srv/a"}, errors.New("half done")
}
func (r *recording) Deprovision(context.Context, drivers.SiteSpec) error {
	r.calls = append(r.calls, "Deprovision")
	return nil
}
func (r *recording) Archive(_ context.Context, _ drivers.SiteSpec, _ string, w io.Writer) error {
	r.calls = append(r.calls, "Archive")
	_, err := io.WriteString(w, "tar")
	return err
}
func (r *recording) Restore(_ context.Context, _ drivers.SiteSpec, _ string, rd io.Reader) error {
	r.calls = append(r.calls, "Restore")
	_, err := io.Copy(io.Discard, rd)
	return err
}
func (r *recording) DiskBytes(context.Context, drivers.SiteSpec) (int64, error) {
	r.calls = append(r.calls, "DiskBytes")
	return 42, nil
}
func (r *recording) Bandwidth(context.Context, drivers.SiteSpec, time.Time, time.Time) (drivers.Bandwidth, error) {
	r.calls = append(r.calls, "Bandwidth")
	return drivers.Bandwidth{Bytes: 7, Requests: 1, Files: 1}, nil
}

// A guard that lets calls through passes every result and error on, and sees
// each call's site; one that refuses keeps the inner driver untouched and its
// streams unread.
func TestGuards(t *testing.T) {
	ctx := t.Context()
	site := drivers.SiteSpec{ID: "site_a", Domain: "a.example", Server: drivers.Server{ID: "vps_a"}}
	inner := &recording{}
	var seen []string
	pass := func(_ context.Context, s drivers.SiteSpec, call func() error) error {
		seen = append(seen, s.Server.ID)
		return call()
	}
	p, b, u := drivers.GuardProvisioner(inner, pass), drivers.GuardBackupSource(inner, pass), drivers.GuardUsageProbe(inner, pass)
	if res, err := p.Provision(ctx, site, nil); res.DocumentRoot != "/srv/a" || err == nil || err.Error() != "half done" {
		t.Errorf("Provision = %+v, %v; want the inner result and error both", res, err)
	}
	if err := p.Deprovision(ctx, site); err != nil {
		t.Error(err)
	}
	var buf bytes.Buffer
	if err := b.Archive(ctx, site, drivers.BackupFull, &buf); err != nil || buf.String() != "tar" {
		t.Errorf("Archive: %v %q", err, buf.String())
	}
	if err := b.Restore(ctx, site, drivers.BackupFull, strings.NewReader("x")); err != nil {
		t.Error(err)
	}
	if n, err := u.DiskBytes(ctx, site); n != 42 || err != nil {
		t.Errorf("DiskBytes = %d, %v", n, err)
	}
	if bw, err := u.Bandwidth(ctx, site, time.Now().Add(-time.Hour), time.Now()); bw.Bytes != 7 || err != nil {
		t.Errorf("Bandwidth = %+v, %v", bw, err)
	}
	if len(inner.calls) != 6 || len(seen) != 6 || seen[0] != "vps_a" {
		t.Errorf("inner calls %v, guard saw %v; want 6 each", inner.calls, seen)
	}

	refused := errors.New("busy")
	refuse := func(context.Context, drivers.SiteSpec, func() error) error { return refused }
	inner.calls = nil
	p, b, u = drivers.GuardProvisioner(inner, refuse), drivers.GuardBackupSource(inner, refuse), drivers.GuardUsageProbe(inner, refuse)
	if res, err := p.Provision(ctx, site, nil); !errors.Is(err, refused) || res != (drivers.Result{}) {
		t.Errorf("refused Provision = %+v, %v", res, err)
	}
	buf.Reset()
	r := strings.NewReader("unread")
	_, diskErr := u.DiskBytes(ctx, site)
	_, bwErr := u.Bandwidth(ctx, site, time.Now(), time.Now())
	for _, err := range []error{p.Deprovision(ctx, site), b.Archive(ctx, site, drivers.BackupFull, &buf), b.Restore(ctx, site, drivers.BackupFull, r), diskErr, bwErr} {
		if !errors.Is(err, refused) {
			t.Errorf("refused call: %v", err)
		}
	}
	if len(inner.calls) != 0 || buf.Len() != 0 || r.Len() != len("unread") {
		t.Errorf("a refusing guard reached the driver: calls %v, wrote %q, read %d bytes", inner.calls, buf.String(), len("unread")-r.Len())
	}
}

// Chain asks its guards outermost first, and a refusal stops there.
func TestChain(t *testing.T) {
	var order []string
	guard := func(name string, refuse error) drivers.Guard {
		return func(_ context.Context, _ drivers.SiteSpec, call func() error) error {
			order = append(order, name)
			if refuse != nil {
				return refuse
			}
			return call()
		}
	}
	call := func() error { order = append(order, "call"); return nil }
	site := drivers.SiteSpec{ID: "site_a"}
	if err := drivers.Chain(guard("breaker", nil), guard("limits", nil))(t.Context(), site, call); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, ","); got != "breaker,limits,call" {
		t.Errorf("order %s, want breaker,limits,call", got)
	}
	order = nil
	open := errors.New("open")
	if err := drivers.Chain(guard("breaker", open), guard("limits", nil))(t.Context(), site, call); !errors.Is(err, open) {
		t.Errorf("refused chain: %v", err)
	}
	if got := strings.Join(order, ","); got != "breaker" {
		t.Errorf("order after a refusal %s, want breaker only", got)
	}
	order = nil
	if err := drivers.Chain()(t.Context(), site, call); err != nil || len(order) != 1 {
		t.Errorf("empty chain: %v, %v", err, order)
	}
}

// tlsRecording is a TLSDeployer that records its calls.
type tlsRecording struct{ calls []string }

func (r *tlsRecording) PutChallenge(context.Context, drivers.SiteSpec, string, string) error {
	r.calls = append(r.calls, "PutChallenge")
	return nil
}
func (r *tlsRecording) RemoveChallenge(context.Context, drivers.SiteSpec, string) error {
	r.calls = append(r.calls, "RemoveChallenge")
	return nil
}
func (r *tlsRecording) DeployCertificate(context.Context, drivers.SiteSpec, drivers.TLSCertificate, drivers.TLSOptions) error {
	r.calls = append(r.calls, "DeployCertificate")
	return errors.New("nginx -t failed")
}
func (r *tlsRecording) RemoveCertificate(context.Context, drivers.SiteSpec) error {
	r.calls = append(r.calls, "RemoveCertificate")
	return nil
}

// A guarded TLSDeployer runs every call under the guard: passed through, the
// inner error comes back; refused, the server is never reached.
func TestGuardTLSDeployer(t *testing.T) {
	ctx := t.Context()
	site := drivers.SiteSpec{ID: "site_a", Domain: "a.example", Server: drivers.Server{ID: "vps_a"}}
	inner := &tlsRecording{}
	var seen int
	d := drivers.GuardTLSDeployer(inner, func(_ context.Context, _ drivers.SiteSpec, call func() error) error {
		seen++
		return call()
	})
	errs := []error{d.PutChallenge(ctx, site, "t", "k"), d.RemoveChallenge(ctx, site, "t"),
		d.DeployCertificate(ctx, site, drivers.TLSCertificate{}, drivers.TLSOptions{}), d.RemoveCertificate(ctx, site)}
	if errs[2] == nil || errs[2].Error() != "nginx -t failed" || errs[0] != nil || errs[1] != nil || errs[3] != nil {
		t.Errorf("errors %v; want only the deploy's", errs)
	}
	if len(inner.calls) != 4 || seen != 4 {
		t.Errorf("inner calls %v, guard saw %d; want 4 each", inner.calls, seen)
	}
	refused := errors.New("breaker open")
	inner.calls = nil
	d = drivers.GuardTLSDeployer(inner, func(context.Context, drivers.SiteSpec, func() error) error { return refused })
	for _, err := range []error{d.PutChallenge(ctx, site, "t", "k"), d.RemoveChallenge(ctx, site, "t"),
		d.DeployCertificate(ctx, site, drivers.TLSCertificate{}, drivers.TLSOptions{}), d.RemoveCertificate(ctx, site)} {
		if !errors.Is(err, refused) {
			t.Errorf("refused call: %v", err)
		}
	}
	if len(inner.calls) != 0 {
		t.Errorf("a refusing guard reached the driver: %v", inner.calls)
	}
}
