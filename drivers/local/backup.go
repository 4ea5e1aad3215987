package local

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/chomhq/chom/drivers"
)

var _ drivers.BackupSource = (*Provisioner)(nil)

// Names inside an archive (drivers.ArchiveFormat).
const (
	archiveFilesDir = drivers.ArchiveFilesDir
	archiveDatabase = drivers.ArchiveDatabase
)

// Hidden directories beside a site's document root while a restore runs.
const (
	restoreStagePrefix = ".restore-stage-"
	restoreOldPrefix   = ".restore-old-"
)

// archiveCompression is the gzip level of an archive: the fastest, because a
// worker's cores are shared by every job and a site's bulk (images, archives,
// vendor trees already shipped compressed) gains little from more effort.
const archiveCompression = gzip.BestSpeed

// Archive writes a drivers.ArchiveFormat stream of the site's document root to
// w, streaming file by file (its memory does not grow with the site).
//
// The document root's tree goes under "files/": directories, regular files and
// symbolic links (as links, never followed). A link whose target is absolute or
// climbs out of the document root is left out, with a warning in the log: it
// could not be restored (Restore refuses such links), and the archive must stay
// restorable. Other file types (sockets, FIFOs, devices) are left out too.
//
// The local driver runs no database server, so no archive it writes holds a
// database.sql: BackupFull is the files alone, and BackupDatabase of a
// wordpress or laravel site is an archive with no entries. BackupDatabase of a
// site type that has no database (php, html) is refused with an error wrapping
// drivers.ErrInvalidSpec, as an unknown kind is, and writes nothing.
//
// A server marked down fails with drivers.ErrUnreachable. An error (a file
// vanishing or growing while it is read, ctx ending) stops the stream half-way:
// the caller must throw away what w received.
func (p *Provisioner) Archive(ctx context.Context, site drivers.SiteSpec, kind string, w io.Writer) error {
	sp, err := p.backupPaths(site, kind)
	if err != nil {
		return fmt.Errorf("local: archive: %w", err)
	}
	log := p.logger.With("vps_id", site.Server.ID, "site_id", site.ID, "tenant_id", site.TenantID, "domain", site.Domain)
	if err := checkUp(sp.server); err != nil {
		return fmt.Errorf("local: archive %s: %w", site.Domain, err)
	}
	if _, err := os.Stat(sp.docRoot); err != nil {
		return fmt.Errorf("local: archive %s: document root: %w", site.Domain, err)
	}

	gz, err := gzip.NewWriterLevel(w, archiveCompression)
	if err != nil {
		return fmt.Errorf("local: archive %s: %w", site.Domain, err)
	}
	tw := tar.NewWriter(gz)
	var st archiveStats
	if kind != drivers.BackupDatabase {
		if err := writeTree(ctx, tw, sp.docRoot, &st); err != nil {
			return fmt.Errorf("local: archive %s: %w", site.Domain, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("local: archive %s: finish tar: %w", site.Domain, err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("local: archive %s: finish gzip: %w", site.Domain, err)
	}
	if st.skipped > 0 {
		log.WarnContext(ctx, "archive left out entries it could not restore",
			"skipped", st.skipped, "first_skipped", st.firstSkipped)
	}
	log.InfoContext(ctx, "site archived", "kind", kind, "entries", st.entries, "file_bytes", st.bytes)
	return nil
}

// backupPaths validates site and kind and returns the site's paths.
func (p *Provisioner) backupPaths(site drivers.SiteSpec, kind string) (sitePaths, error) {
	if err := drivers.ValidateSiteSpec(site); err != nil {
		return sitePaths{}, err
	}
	switch kind {
	case drivers.BackupFull, drivers.BackupFiles:
	case drivers.BackupDatabase:
		if !site.HasDatabase() {
			return sitePaths{}, fmt.Errorf("%w: kind %q: site type %s has no database", drivers.ErrInvalidSpec, kind, site.SiteType)
		}
	default:
		return sitePaths{}, fmt.Errorf("%w: kind %q: must be one of full, files, database", drivers.ErrInvalidSpec, kind)
	}
	sp, err := p.paths(site)
	if err != nil {
		return sitePaths{}, fmt.Errorf("%s: %w", site.Domain, err)
	}
	return sp, nil
}

type archiveStats struct {
	entries      int
	bytes        int64
	skipped      int
	firstSkipped string
}

func (st *archiveStats) skip(rel string) {
	if st.skipped == 0 {
		st.firstSkipped = rel
	}
	st.skipped++
}

// writeTree writes root's tree into tw under archiveFilesDir. WalkDir does not
// follow symbolic links, and visits in lexical order, so an archive of the same
// tree is the same entries in the same order.
func writeTree(ctx context.Context, tw *tar.Writer, root string, st *archiveStats) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		name := archiveFilesDir
		if rel != "." {
			name += rel
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed since the directory was read
		}
		if err != nil {
			return err
		}
		var link string
		switch mode := info.Mode(); {
		case mode.IsDir():
			name += "/"
			if rel == "." {
				name = archiveFilesDir
			}
		case mode.IsRegular():
		case mode&fs.ModeSymlink != 0:
			link, err = os.Readlink(p)
			if err != nil {
				return err
			}
			if !drivers.LinkStaysInside(rel, link) {
				st.skip(rel)
				return nil
			}
		default:
			st.skip(rel)
			return nil
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		hdr.Name = name
		hdr.Format = tar.FormatPAX
		// Owners mean nothing on another server: the restoring driver sets them.
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		st.entries++
		if !info.Mode().IsRegular() {
			return nil
		}
		n, err := copyFile(ctx, tw, p, hdr.Size)
		st.bytes += n
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		return nil
	})
}

// copyFile copies exactly size bytes of the file at p into w. A file that
// changed size since it was stat'ed is an error: its tar entry would be wrong.
func copyFile(ctx context.Context, w io.Writer, p string, size int64) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := io.CopyN(w, ctxReader{ctx: ctx, r: f}, size)
	if errors.Is(err, io.EOF) {
		return n, fmt.Errorf("shrank to %d bytes while archived (was %d)", n, size)
	}
	return n, err
}

// Restore replaces the site's document root with the tree an archive read from
// r holds (for BackupFiles and BackupFull; for BackupDatabase it only checks the
// stream, as there is no database to load: a database.sql entry, from an
// archive another driver made, is read and ignored, with a warning).
//
// The tree is unpacked into a staging directory beside the document root, and
// only once r has been read to its EOF without error (the end of the tar
// archive, of the gzip stream, and of r: drivers.VerifyReader reports a
// checksum mismatch only there) is it swapped in: the old root is renamed away,
// the stage renamed in, the old root removed. Any error before that leaves the
// live site as it was and the stage removed. What a restore killed mid-way
// left is repaired first (recoverInterrupted).
//
// Entries are refused, and the restore fails with an error wrapping
// drivers.ErrCorruptArchive, when their name is absolute, holds "..", lies
// outside "files/" (but for "database.sql"), is a hard link or a device, or is
// a symbolic link whose target escapes the document root; every file is
// created through an os.Root on the stage, so no entry can write outside it,
// even through a link an earlier entry made. Owners are not restored; modes
// keep their permission bits only (no setuid, setgid or sticky).
func (p *Provisioner) Restore(ctx context.Context, site drivers.SiteSpec, kind string, r io.Reader) error {
	sp, err := p.backupPaths(site, kind)
	if err != nil {
		return fmt.Errorf("local: restore: %w", err)
	}
	log := p.logger.With("vps_id", site.Server.ID, "site_id", site.ID, "tenant_id", site.TenantID, "domain", site.Domain)
	if err := checkUp(sp.server); err != nil {
		return fmt.Errorf("local: restore %s: %w", site.Domain, err)
	}
	if _, err := os.Stat(sp.siteDir); err != nil {
		return fmt.Errorf("local: restore %s: site directory (is the site provisioned?): %w", site.Domain, err)
	}
	wantFiles := kind != drivers.BackupDatabase
	if err := p.recoverInterrupted(ctx, log, site.Server.ID, sp.siteDir, sp.docRoot); err != nil {
		return fmt.Errorf("local: restore %s: %w", site.Domain, err)
	}

	var stage string
	var stageRoot *os.Root
	if wantFiles {
		stage, err = makeHiddenDir(sp.siteDir, restoreStagePrefix)
		if err != nil {
			return fmt.Errorf("local: restore %s: %w", site.Domain, err)
		}
		defer func() {
			if stageRoot != nil {
				_ = stageRoot.Close()
			}
			_ = os.RemoveAll(stage) // gone already when swapped in
		}()
		stageRoot, err = os.OpenRoot(stage)
		if err != nil {
			return fmt.Errorf("local: restore %s: %w", site.Domain, err)
		}
	}

	st, err := extract(ctx, r, stageRoot)
	if err != nil {
		return fmt.Errorf("local: restore %s: %w", site.Domain, err)
	}
	if st.database {
		log.WarnContext(ctx, "archive holds a database dump; the local driver has no database to load it into")
	}
	if !wantFiles {
		log.InfoContext(ctx, "site restored", "kind", kind, "entries", st.entries)
		return nil
	}
	if !st.filesRoot {
		return fmt.Errorf("local: restore %s: %w: no %q entry (kind %s needs the files)", site.Domain, drivers.ErrCorruptArchive, archiveFilesDir, kind)
	}
	if err := stageRoot.Close(); err != nil {
		return fmt.Errorf("local: restore %s: %w", site.Domain, err)
	}
	stageRoot = nil

	unlock, err := p.locks.Lock(ctx, site.Server.ID)
	if err != nil {
		return fmt.Errorf("local: restore %s: wait for server %s: %w", site.Domain, site.Server.ID, err)
	}
	defer unlock()
	if err := swapIn(sp.siteDir, sp.docRoot, stage); err != nil {
		return fmt.Errorf("local: restore %s: %w", site.Domain, err)
	}
	log.InfoContext(ctx, "site restored", "kind", kind, "entries", st.entries, "file_bytes", st.bytes)
	return nil
}

// swapIn makes stage the document root: the old root is renamed away, the
// stage renamed in (the old root put back if that fails), the old one removed.
// Both renames stay inside siteDir, one filesystem, so each is atomic.
func swapIn(siteDir, docRoot, stage string) error {
	old := ""
	if _, err := os.Lstat(docRoot); err == nil {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		old = filepath.Join(siteDir, restoreOldPrefix+hex.EncodeToString(b[:]))
		if err := os.Rename(docRoot, old); err != nil {
			return fmt.Errorf("move the live document root away: %w", err)
		}
	}
	if err := os.Rename(stage, docRoot); err != nil {
		if old != "" {
			if rerr := os.Rename(old, docRoot); rerr != nil {
				return fmt.Errorf("move the restored tree in: %w (and putting the old root back failed: %v; it is %s)", err, rerr, old)
			}
		}
		return fmt.Errorf("move the restored tree in: %w", err)
	}
	if d, err := os.Open(siteDir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	if old != "" {
		// The restore is done; a failure here leaves a hidden directory only.
		_ = os.RemoveAll(old)
	}
	return nil
}

// staleRestore is the age past which a restore's hidden directory is taken
// for the leftover of an interrupted restore (a worker killed mid-restore):
// restores of one site never overlap, and none takes this long to unpack.
const staleRestore = time.Hour

// recoverInterrupted repairs what a restore killed mid-way left in siteDir,
// under the server's lock. Killed between its two renames, it left no document
// root and the live one under .restore-old-*: that one is put back, so a
// failed retry leaves the site as it was. Stage and old directories older
// than staleRestore are removed.
func (p *Provisioner) recoverInterrupted(ctx context.Context, log *slog.Logger, serverID, siteDir, docRoot string) error {
	unlock, err := p.locks.Lock(ctx, serverID)
	if err != nil {
		return fmt.Errorf("wait for server %s: %w", serverID, err)
	}
	defer unlock()
	entries, err := os.ReadDir(siteDir)
	if err != nil {
		return fmt.Errorf("list site directory: %w", err)
	}
	var olds []os.DirEntry
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), restoreOldPrefix) && e.IsDir() {
			olds = append(olds, e)
		}
	}
	if _, err := os.Lstat(docRoot); errors.Is(err, fs.ErrNotExist) && len(olds) > 0 {
		newest, newestAt := "", time.Time{}
		for _, e := range olds {
			if info, err := e.Info(); err == nil && (newest == "" || info.ModTime().After(newestAt)) {
				newest, newestAt = e.Name(), info.ModTime()
			}
		}
		if newest != "" {
			if err := os.Rename(filepath.Join(siteDir, newest), docRoot); err != nil {
				return fmt.Errorf("put back the document root an interrupted restore moved away: %w", err)
			}
			log.WarnContext(ctx, "put back the document root an interrupted restore had moved away", "from", newest)
		}
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, restoreStagePrefix) && !strings.HasPrefix(name, restoreOldPrefix) {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < staleRestore {
			continue // gone already, or too young to be a leftover
		}
		if err := os.RemoveAll(filepath.Join(siteDir, name)); err != nil {
			log.WarnContext(ctx, "could not remove an interrupted restore's directory", "dir", name, "error", err)
			continue
		}
		log.InfoContext(ctx, "removed an interrupted restore's directory", "dir", name)
	}
	return nil
}

// makeHiddenDir creates a new directory prefix+random in dir.
func makeHiddenDir(dir, prefix string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	p := filepath.Join(dir, prefix+hex.EncodeToString(b[:]))
	if err := os.Mkdir(p, dirPerm); err != nil {
		return "", fmt.Errorf("create staging directory: %w", err)
	}
	return p, nil
}

type extractStats struct {
	entries   int
	bytes     int64
	filesRoot bool // the "files/" entry was seen
	database  bool // a database.sql entry was seen
}

// extract reads the whole archive from r, unpacking "files/…" into stage (when
// stage is nil, files are only checked and read past), and reads r to its EOF.
func extract(ctx context.Context, r io.Reader, stage *os.Root) (extractStats, error) {
	var st extractStats
	src := &source{ctx: ctx, r: r}
	gz, err := gzip.NewReader(src)
	if err != nil {
		return st, src.fail("gzip header", err)
	}
	tr := tar.NewReader(gz)
	type dirTime struct {
		name  string
		mtime time.Time
	}
	var dirs []dirTime
	// Links made so far: an entry below one (or replacing one) would be
	// created wherever it points, so it is refused.
	links := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, src.fail("tar", err)
		}
		st.entries++
		if hdr.Name == archiveDatabase && hdr.Typeflag == tar.TypeReg {
			st.database = true
			if _, err := io.Copy(io.Discard, tr); err != nil {
				return st, src.fail(archiveDatabase, err)
			}
			continue
		}
		rel, err := drivers.ArchiveEntryName(hdr.Name)
		if err != nil {
			return st, err
		}
		if rel == "." {
			if hdr.Typeflag != tar.TypeDir {
				return st, fmt.Errorf("%w: entry %q is not a directory", drivers.ErrCorruptArchive, hdr.Name)
			}
			st.filesRoot = true
			continue
		}
		for p := rel; p != "."; p = path.Dir(p) {
			if links[p] {
				return st, fmt.Errorf("%w: entry %q lies in or replaces the symbolic link %q", drivers.ErrCorruptArchive, hdr.Name, archiveFilesDir+p)
			}
		}
		mode := fs.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if stage != nil {
				if err := stage.MkdirAll(rel, dirPerm); err != nil {
					return st, fmt.Errorf("%s: %w", hdr.Name, err)
				}
				if err := stage.Chmod(rel, mode|0o700); err != nil {
					return st, fmt.Errorf("%s: %w", hdr.Name, err)
				}
				dirs = append(dirs, dirTime{rel, hdr.ModTime})
			}
		case tar.TypeReg:
			if stage == nil {
				if _, err := io.Copy(io.Discard, tr); err != nil {
					return st, src.fail(hdr.Name, err)
				}
				continue
			}
			body := &trackReader{r: tr}
			n, err := writeEntry(stage, rel, mode, body)
			st.bytes += n
			if err != nil && body.err != nil {
				return st, src.fail(hdr.Name, err)
			}
			if err != nil {
				return st, fmt.Errorf("%s: %w", hdr.Name, err)
			}
			_ = stage.Chtimes(rel, hdr.ModTime, hdr.ModTime)
		case tar.TypeSymlink:
			if !drivers.LinkStaysInside(rel, hdr.Linkname) {
				return st, fmt.Errorf("%w: entry %q links to %q, outside the document root", drivers.ErrCorruptArchive, hdr.Name, hdr.Linkname)
			}
			links[rel] = true
			if stage != nil {
				if dir := path.Dir(rel); dir != "." {
					if err := stage.MkdirAll(dir, dirPerm); err != nil {
						return st, fmt.Errorf("%s: %w", hdr.Name, err)
					}
				}
				if err := stage.Symlink(hdr.Linkname, rel); err != nil {
					return st, fmt.Errorf("%s: %w", hdr.Name, err)
				}
			}
		default:
			return st, fmt.Errorf("%w: entry %q has type %q (only directories, regular files and symbolic links are restored)", drivers.ErrCorruptArchive, hdr.Name, hdr.Typeflag)
		}
	}
	// The tar archive ended; the gzip stream and r must end too, or a
	// VerifyReader's verdict (given at r's EOF) would never be heard.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return st, src.fail("gzip trailer", err)
	}
	if err := gz.Close(); err != nil {
		return st, src.fail("gzip trailer", err)
	}
	if _, err := io.Copy(io.Discard, src); err != nil {
		return st, src.fail("end of stream", err)
	}
	// Directory times last: creating entries inside changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = stage.Chtimes(dirs[i].name, dirs[i].mtime, dirs[i].mtime)
	}
	return st, nil
}

// writeEntry creates the regular file rel in stage with what r yields.
func writeEntry(stage *os.Root, rel string, mode fs.FileMode, r io.Reader) (int64, error) {
	if dir := path.Dir(rel); dir != "." {
		if err := stage.MkdirAll(dir, dirPerm); err != nil {
			return 0, err
		}
	}
	f, err := stage.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err != nil {
		_ = f.Close()
		return n, err
	}
	if err := f.Close(); err != nil {
		return n, err
	}
	return n, nil
}

// source is the archive stream as Restore reads it: it stops when ctx ends
// and remembers the last error of the underlying reader, so a failure can be
// told apart: the reader's own (a VerifyReader's ErrCorruptArchive, a broken
// connection, ctx ending) is kept as it is, while a tar or gzip error over a
// stream that read fine means the archive itself is damaged.
type source struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (s *source) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		s.err = err
		return 0, err
	}
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		s.err = err
	}
	return n, err
}

// fail wraps err, met where, as described on source.
func (s *source) fail(where string, err error) error {
	switch {
	case s.err == nil:
		return fmt.Errorf("%w: %s: %w", drivers.ErrCorruptArchive, where, err)
	case errors.Is(err, s.err):
		return fmt.Errorf("%s: %w", where, err)
	default:
		return fmt.Errorf("%s: %w (reading the archive: %w)", where, err, s.err)
	}
}

// trackReader remembers whether reading failed.
type trackReader struct {
	r   io.Reader
	err error
}

func (t *trackReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		t.err = err
	}
	return n, err
}

// ctxReader stops a stream when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
