package drainbench

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"path"
	"sync/atomic"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/internal/stack"
)

// noopSteps are the steps the local driver reports, in its order and with its
// progress, so a job over NoopDriver does the same bookkeeping per step as
// over a real driver, only without the work between the steps.
var noopSteps = []drivers.Step{
	{Name: drivers.StepSiteRoot, Progress: 20},
	{Name: drivers.StepIndexPage, Progress: 40},
	{Name: drivers.StepPHPPool, Progress: 60},
	{Name: drivers.StepNginxConfig, Progress: 80},
	{Name: drivers.StepReload, Progress: 100},
}

// NoopDriver provisions, deprovisions, backs up and restores instantly and
// always succeeds: what is left of a job over it is the job's own work (its
// database statements, its Redis calls, the guard) and the queue's. It
// validates the spec as every driver does, and counts its calls.
type NoopDriver struct {
	provisions, deprovisions, archives, restores atomic.Int64
}

var (
	_ drivers.Provisioner  = (*NoopDriver)(nil)
	_ drivers.BackupSource = (*NoopDriver)(nil)
)

// Driver returns the driver as the stack's test hook takes it
// (stack.Hooks.Driver): provisioner and backup source, nothing else.
func (d *NoopDriver) Driver() *stack.Driver {
	return &stack.Driver{Provisioner: d, Backups: d}
}

// Provision reports the local driver's steps at once and returns the result a
// provisioned site has. An invalid spec is an error wrapping
// drivers.ErrInvalidSpec; an error from progress (a cancel) is returned.
func (d *NoopDriver) Provision(ctx context.Context, s drivers.SiteSpec, progress drivers.ProgressFunc) (drivers.Result, error) {
	if err := drivers.ValidateSiteSpec(s); err != nil {
		return drivers.Result{}, fmt.Errorf("noop: provision: %w", err)
	}
	d.provisions.Add(1)
	for _, st := range noopSteps {
		if progress == nil {
			break
		}
		if err := progress(ctx, st); err != nil {
			return drivers.Result{}, fmt.Errorf("noop: provision %s: progress after step %s: %w", s.Domain, st.Name, err)
		}
	}
	root := path.Join("/srv/sites", s.ID, "public")
	return drivers.Result{DocumentRoot: root, SystemUser: "site_" + s.ID,
		NginxConfig: path.Join("/etc/nginx/sites-enabled", s.ID+".conf")}, nil
}

// Deprovision does nothing and succeeds.
func (d *NoopDriver) Deprovision(_ context.Context, s drivers.SiteSpec) error {
	if err := drivers.ValidateSiteSpec(s); err != nil {
		return fmt.Errorf("noop: deprovision: %w", err)
	}
	d.deprovisions.Add(1)
	return nil
}

// Archive writes a valid, empty archive (drivers.ArchiveFormat: the files
// directory and nothing in it).
func (d *NoopDriver) Archive(_ context.Context, s drivers.SiteSpec, _ string, w io.Writer) error {
	if err := drivers.ValidateSiteSpec(s); err != nil {
		return fmt.Errorf("noop: archive: %w", err)
	}
	d.archives.Add(1)
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Name: drivers.ArchiveFilesDir, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
		return fmt.Errorf("noop: archive %s: %w", s.Domain, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("noop: archive %s: %w", s.Domain, err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("noop: archive %s: %w", s.Domain, err)
	}
	return nil
}

// Restore reads the archive to its end (so a verifying reader sees all of
// it and can fail) and changes nothing.
func (d *NoopDriver) Restore(_ context.Context, s drivers.SiteSpec, _ string, r io.Reader) error {
	if err := drivers.ValidateSiteSpec(s); err != nil {
		return fmt.Errorf("noop: restore: %w", err)
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("noop: restore %s: %w", s.Domain, err)
	}
	d.restores.Add(1)
	return nil
}

// Provisions returns how many provisions the driver ran.
func (d *NoopDriver) Provisions() int64 { return d.provisions.Load() }
