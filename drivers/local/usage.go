package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/chomhq/chom/drivers"
)

var _ drivers.UsageProbe = (*Provisioner)(nil)

// DiskBytes returns the bytes of the site's document root: the sizes of the
// regular files under it, summed, without following symbolic links (a link is
// counted as nothing, so a link to / cannot inflate a bill). A missing document
// root holds 0 bytes. It stops with ctx's error when ctx ends.
func (p *Provisioner) DiskBytes(ctx context.Context, site drivers.SiteSpec) (int64, error) {
	if err := drivers.ValidateSiteSpec(site); err != nil {
		return 0, fmt.Errorf("local: disk bytes: %w", err)
	}
	sp, err := p.paths(site)
	if err != nil {
		return 0, fmt.Errorf("local: disk bytes of %s: %w", site.Domain, err)
	}
	var total int64
	var n int
	err = filepath.WalkDir(sp.docRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking, or no document root at all
			}
			return err
		}
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		total += info.Size()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("local: disk bytes of %s: %w", site.Domain, err)
	}
	return total, ctx.Err()
}

// Bandwidth sums the response sizes of the site's requests in [start, end)
// from its access.log and the rotated access.log.N (and access.log.N.gz)
// files, streaming each (drivers.ScanAccessLog). A file last written before
// start holds no line of the period and is not read: nginx stamps a line with
// the time it writes it. Missing logs mean no traffic.
func (p *Provisioner) Bandwidth(ctx context.Context, site drivers.SiteSpec, start, end time.Time) (drivers.Bandwidth, error) {
	if err := drivers.ValidateSiteSpec(site); err != nil {
		return drivers.Bandwidth{}, fmt.Errorf("local: bandwidth: %w", err)
	}
	sp, err := p.paths(site)
	if err != nil {
		return drivers.Bandwidth{}, fmt.Errorf("local: bandwidth of %s: %w", site.Domain, err)
	}
	entries, err := os.ReadDir(sp.logDir)
	if errors.Is(err, fs.ErrNotExist) {
		return drivers.Bandwidth{}, nil
	}
	if err != nil {
		return drivers.Bandwidth{}, fmt.Errorf("local: bandwidth of %s: %w", site.Domain, err)
	}
	var files []string
	for _, e := range entries {
		if e.Type().IsRegular() && drivers.IsAccessLog(e.Name()) {
			files = append(files, e.Name())
		}
	}
	sort.Strings(files)
	var total drivers.Bandwidth
	var seen []os.FileInfo
	for _, name := range files {
		bw, err := scanLogFile(ctx, filepath.Join(sp.logDir, name), start, end, &seen)
		if errors.Is(err, drivers.ErrLogRefused) {
			p.logger.WarnContext(ctx, "access log refused; its requests are not billed",
				"site_id", site.ID, "domain", site.Domain, "file", name, "error", err)
			total.RefusedFiles++
			continue
		}
		if err != nil {
			return drivers.Bandwidth{}, fmt.Errorf("local: bandwidth of %s: %w", site.Domain, err)
		}
		total = total.Add(bw)
	}
	return total, nil
}

// scanLogFile scans one access log, decompressing a .gz one on the fly. A file
// that vanished (rotated away between listing and opening) counts as empty;
// its lines are in the file it was renamed to. A file already scanned under
// another name (access.log renamed to access.log.1 by a rotation during the
// scan) is not scanned twice: seen holds the files scanned so far.
func scanLogFile(ctx context.Context, path string, start, end time.Time, seen *[]os.FileInfo) (drivers.Bandwidth, error) {
	// O_NOFOLLOW: a link is refused, not followed (as the ssh driver's
	// reader); O_NONBLOCK: a fifo cannot hang the scan.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return drivers.Bandwidth{}, nil
	}
	if errors.Is(err, syscall.ELOOP) {
		return drivers.Bandwidth{}, fmt.Errorf("%w: %s is a symbolic link", drivers.ErrLogRefused, path)
	}
	if err != nil {
		return drivers.Bandwidth{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return drivers.Bandwidth{}, fmt.Errorf("stat %s: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return drivers.Bandwidth{}, fmt.Errorf("%w: %s is not a regular file", drivers.ErrLogRefused, path)
	}
	for _, s := range *seen {
		if os.SameFile(s, info) {
			return drivers.Bandwidth{}, nil
		}
	}
	*seen = append(*seen, info)
	if info.ModTime().Before(start) {
		return drivers.Bandwidth{}, nil
	}
	return drivers.ScanAccessLogFile(ctx, f, path, start, end, 0)
}
