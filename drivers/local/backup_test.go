package local

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chomhq/chom/drivers"
)

// snapshot maps every path under dir (relative, slash-separated) to what it
// is: "dir 0755", "file 0644 <content>" or "link -> <target>". Links are not
// followed.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			got[rel] = "link -> " + target
		case info.IsDir():
			got[rel] = fmt.Sprintf("dir %04o", info.Mode().Perm())
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			got[rel] = fmt.Sprintf("file %04o %s", info.Mode().Perm(), b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return got
}

// provisioned provisions an html site and fills its document root with a
// nested tree; it returns the spec and the site's paths.
func provisioned(t *testing.T, b *testBundle, siteType, domain string) (drivers.SiteSpec, sitePaths) {
	t.Helper()
	site := spec(siteType, domain)
	if _, err := b.prov.Provision(t.Context(), site, nil); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	sp, err := b.prov.paths(site)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"css/site.css":                "body{}",
		"releases/v1/app/main.js":     "console.log(1)",
		"releases/v1/app/deep/x/y.md": "deep",
		"uploads/2026/12/photo.jpg":   strings.Repeat("\xff\xd8binary\x00", 5000),
		"private.txt":                 "0600",
	}
	for name, content := range files {
		p := filepath.Join(sp.docRoot, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(sp.docRoot, "private.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(sp.docRoot, "empty"), 0o750); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"current": "releases/v1", "releases/v1/app/up.css": "../../../css/site.css"} {
		if err := os.Symlink(target, filepath.Join(sp.docRoot, filepath.FromSlash(link))); err != nil {
			t.Fatal(err)
		}
	}
	return site, sp
}

func archive(t *testing.T, b *testBundle, site drivers.SiteSpec, kind string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := b.prov.Archive(t.Context(), site, kind, &buf); err != nil {
		t.Fatalf("Archive(%s): %v", kind, err)
	}
	return buf.Bytes()
}

// entries lists the names (and link targets) in an archive.
func entries(t *testing.T, archive []byte) []string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatalf("gzip: %v", err)
	}
	tr := tar.NewReader(gz)
	var out []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		if hdr.Linkname != "" {
			out = append(out, hdr.Name+" -> "+hdr.Linkname)
		} else {
			out = append(out, hdr.Name)
		}
	}
}

// leftovers lists the hidden restore directories left in a site directory.
func leftovers(t *testing.T, sp sitePaths) []string {
	t.Helper()
	des, err := os.ReadDir(sp.siteDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".restore-") {
			out = append(out, de.Name())
		}
	}
	return out
}

func TestBackupRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	site, sp := provisioned(t, b, drivers.SiteTypeHTML, "round.example.com")
	want := snapshot(t, sp.docRoot)

	arch := archive(t, b, site, drivers.BackupFiles)
	wantEntries := []string{
		"files/", "files/css/", "files/css/site.css", "files/current -> releases/v1", "files/empty/",
		"files/index.html", "files/private.txt", "files/releases/", "files/releases/v1/", "files/releases/v1/app/",
		"files/releases/v1/app/deep/", "files/releases/v1/app/deep/x/", "files/releases/v1/app/deep/x/y.md",
		"files/releases/v1/app/main.js", "files/releases/v1/app/up.css -> ../../../css/site.css",
		"files/uploads/", "files/uploads/2026/", "files/uploads/2026/12/", "files/uploads/2026/12/photo.jpg",
	}
	if diff := cmp.Diff(wantEntries, entries(t, arch)); diff != "" {
		t.Fatalf("archive entries (-want +got):\n%s", diff)
	}
	if full := archive(t, b, site, drivers.BackupFull); !bytes.Equal(full, arch) {
		t.Error("a full archive of an html site differs from its files archive")
	}

	// Change the site: modify, add, remove, replace a link.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(sp.docRoot, "css/site.css"), []byte("defaced"), 0o644))
	must(os.WriteFile(filepath.Join(sp.docRoot, "new.php"), []byte("<?php evil();"), 0o644))
	must(os.RemoveAll(filepath.Join(sp.docRoot, "uploads")))
	must(os.Remove(filepath.Join(sp.docRoot, "current")))
	must(os.Symlink("css", filepath.Join(sp.docRoot, "current")))
	if diff := cmp.Diff(want, snapshot(t, sp.docRoot)); diff == "" {
		t.Fatal("the changes did not change the site")
	}

	if err := b.prov.Restore(ctx, site, drivers.BackupFiles, bytes.NewReader(arch)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if diff := cmp.Diff(want, snapshot(t, sp.docRoot)); diff != "" {
		t.Errorf("restored site (-want +got):\n%s", diff)
	}
	if l := leftovers(t, sp); len(l) > 0 {
		t.Errorf("restore left %v", l)
	}
	// Restoring the same archive again changes nothing.
	if err := b.prov.Restore(ctx, site, drivers.BackupFull, bytes.NewReader(arch)); err != nil {
		t.Fatalf("Restore again: %v", err)
	}
	if diff := cmp.Diff(want, snapshot(t, sp.docRoot)); diff != "" {
		t.Errorf("site after a second restore (-want +got):\n%s", diff)
	}
}

func TestArchiveLeavesOutWhatCannotBeRestored(t *testing.T) {
	t.Parallel()
	b := setup(t)
	site, sp := provisioned(t, b, drivers.SiteTypePHP, "links.example.com")
	for link, target := range map[string]string{
		"passwd": "/etc/passwd", "logs": "../logs", "climb": "css/../../logs", "ok": "./css/site.css",
	} {
		if err := os.Symlink(target, filepath.Join(sp.docRoot, link)); err != nil {
			t.Fatal(err)
		}
	}
	arch := archive(t, b, site, drivers.BackupFull)
	for _, e := range entries(t, arch) {
		for _, bad := range []string{"files/passwd", "files/logs", "files/climb", "files/ok"} {
			if strings.HasPrefix(e, bad+" ") {
				t.Errorf("archive holds %q", e)
			}
		}
	}
	// And it restores.
	if err := b.prov.Restore(t.Context(), site, drivers.BackupFull, bytes.NewReader(arch)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(sp.docRoot, "passwd")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the absolute link came back: %v", err)
	}
}

func TestBackupKinds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	html, _ := provisioned(t, b, drivers.SiteTypeHTML, "kinds.example.com")
	wp, wpPaths := provisioned(t, b, drivers.SiteTypeWordPress, "wp.example.com")

	for _, tt := range []struct {
		site drivers.SiteSpec
		kind string
	}{{html, drivers.BackupDatabase}, {html, "snapshot"}, {wp, ""}} {
		var buf bytes.Buffer
		if err := b.prov.Archive(ctx, tt.site, tt.kind, &buf); !errors.Is(err, drivers.ErrInvalidSpec) {
			t.Errorf("Archive(%s, %q) = %v, want ErrInvalidSpec", tt.site.SiteType, tt.kind, err)
		}
		if buf.Len() != 0 {
			t.Errorf("Archive(%s, %q) wrote %d bytes", tt.site.SiteType, tt.kind, buf.Len())
		}
		if err := b.prov.Restore(ctx, tt.site, tt.kind, bytes.NewReader(nil)); !errors.Is(err, drivers.ErrInvalidSpec) {
			t.Errorf("Restore(%s, %q) = %v, want ErrInvalidSpec", tt.site.SiteType, tt.kind, err)
		}
	}
	bad := html
	bad.Domain = "a.com;touch /tmp/x"
	if err := b.prov.Archive(ctx, bad, drivers.BackupFiles, io.Discard); !errors.Is(err, drivers.ErrInvalidSpec) {
		t.Errorf("Archive of a hostile domain = %v, want ErrInvalidSpec", err)
	}

	// A wordpress site has a database, which the local driver does not run: its
	// database archive is empty, its full archive the files alone.
	db := archive(t, b, wp, drivers.BackupDatabase)
	if e := entries(t, db); len(e) != 0 {
		t.Errorf("database archive of a local wordpress site holds %v", e)
	}
	if e := entries(t, archive(t, b, wp, drivers.BackupFull)); len(e) == 0 || e[0] != "files/" || strings.Contains(strings.Join(e, "\n"), "database.sql") {
		t.Errorf("full archive of a local wordpress site: %v", e)
	}
	// Restoring a database archive (even one with a dump, made elsewhere) leaves
	// the files alone.
	before := snapshot(t, wpPaths.docRoot)
	withDump := buildArchive(t, []entry{{name: "database.sql", body: "CREATE TABLE wp_posts (id int);"}})
	for _, a := range [][]byte{db, withDump} {
		if err := b.prov.Restore(ctx, wp, drivers.BackupDatabase, bytes.NewReader(a)); err != nil {
			t.Fatalf("Restore(database): %v", err)
		}
	}
	if diff := cmp.Diff(before, snapshot(t, wpPaths.docRoot)); diff != "" {
		t.Errorf("database restore changed the files (-want +got):\n%s", diff)
	}
	// A files restore needs the files.
	if err := b.prov.Restore(ctx, wp, drivers.BackupFiles, bytes.NewReader(db)); !errors.Is(err, drivers.ErrCorruptArchive) {
		t.Errorf("files restore of a database archive = %v, want ErrCorruptArchive", err)
	}
	if diff := cmp.Diff(before, snapshot(t, wpPaths.docRoot)); diff != "" {
		t.Errorf("refused restore changed the files (-want +got):\n%s", diff)
	}
}

func TestBackupOnDownServer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	site, sp := provisioned(t, b, drivers.SiteTypeHTML, "down.example.com")
	arch := archive(t, b, site, drivers.BackupFiles)
	if err := os.WriteFile(filepath.Join(sp.server, DownMarker), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.prov.Archive(t.Context(), site, drivers.BackupFiles, io.Discard); !errors.Is(err, drivers.ErrUnreachable) {
		t.Errorf("Archive on a down server = %v, want ErrUnreachable", err)
	}
	if err := b.prov.Restore(t.Context(), site, drivers.BackupFiles, bytes.NewReader(arch)); !errors.Is(err, drivers.ErrUnreachable) {
		t.Errorf("Restore on a down server = %v, want ErrUnreachable", err)
	}
}

// TestFailedRestoreLeavesSiteUntouched: whatever goes wrong before the end of
// the stream, the live document root stays exactly as it was.
func TestFailedRestoreLeavesSiteUntouched(t *testing.T) {
	t.Parallel()
	b := setup(t)
	site, sp := provisioned(t, b, drivers.SiteTypePHP, "verify.example.com")
	arch := archive(t, b, site, drivers.BackupFull)
	sum := sha256.Sum256(arch)
	good := hex.EncodeToString(sum[:])
	if err := os.WriteFile(filepath.Join(sp.docRoot, "css/site.css"), []byte("changed after the backup"), 0o644); err != nil {
		t.Fatal(err)
	}
	live := snapshot(t, sp.docRoot)

	boom := errors.New("s3: connection reset")
	tests := []struct {
		name   string
		reader func(ctx context.Context, cancel context.CancelFunc) io.Reader
		want   error
	}{
		{"wrong sha256", func(context.Context, context.CancelFunc) io.Reader {
			return drivers.VerifyReader(bytes.NewReader(arch), int64(len(arch)), strings.Repeat("0", 64))
		}, drivers.ErrCorruptArchive},
		{"wrong size", func(context.Context, context.CancelFunc) io.Reader {
			return drivers.VerifyReader(bytes.NewReader(arch), int64(len(arch))+1, good)
		}, drivers.ErrCorruptArchive},
		{"truncated", func(context.Context, context.CancelFunc) io.Reader {
			return bytes.NewReader(arch[:len(arch)/2])
		}, drivers.ErrCorruptArchive},
		{"trailing garbage", func(context.Context, context.CancelFunc) io.Reader {
			return io.MultiReader(bytes.NewReader(arch), strings.NewReader("garbage"))
		}, drivers.ErrCorruptArchive},
		{"reader fails at the end", func(context.Context, context.CancelFunc) io.Reader {
			return io.MultiReader(bytes.NewReader(arch), errReader{boom})
		}, boom},
		{"not gzip", func(context.Context, context.CancelFunc) io.Reader {
			return strings.NewReader("<html>403 Forbidden</html>")
		}, drivers.ErrCorruptArchive},
		{"cancelled", func(_ context.Context, cancel context.CancelFunc) io.Reader {
			return io.MultiReader(bytes.NewReader(arch[:len(arch)/2]), readerFunc(func([]byte) (int, error) { cancel(); return 0, io.EOF }),
				bytes.NewReader(arch[len(arch)/2:]))
		}, context.Canceled},
	}
	// One flipped byte in the gzip header's magic, or in the trailer's CRC-32
	// or size. (A flip inside the deflate data is not always damage: a changed
	// distance into a repeating run can decode to the same bytes, which only
	// the recorded SHA-256, the VerifyReader cases, tells apart.)
	for _, at := range []int{0, len(arch) - 8, len(arch) - 5, len(arch) - 4, len(arch) - 1} {
		tests = append(tests, struct {
			name   string
			reader func(ctx context.Context, cancel context.CancelFunc) io.Reader
			want   error
		}{fmt.Sprintf("byte %d of %d flipped", at, len(arch)), func(context.Context, context.CancelFunc) io.Reader {
			bad := bytes.Clone(arch)
			bad[at] ^= 0x40
			return bytes.NewReader(bad)
		}, drivers.ErrCorruptArchive})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not parallel: the subtests restore onto one site.
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			err := b.prov.Restore(ctx, site, drivers.BackupFull, tt.reader(ctx, cancel))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Restore = %v, want an error wrapping %v", err, tt.want)
			}
			if diff := cmp.Diff(live, snapshot(t, sp.docRoot)); diff != "" {
				t.Errorf("live site changed (-want +got):\n%s", diff)
			}
			if l := leftovers(t, sp); len(l) > 0 {
				t.Errorf("restore left %v", l)
			}
		})
	}
	// The right checksum restores.
	if err := b.prov.Restore(t.Context(), site, drivers.BackupFull, drivers.VerifyReader(bytes.NewReader(arch), int64(len(arch)), good)); err != nil {
		t.Fatalf("Restore with the right checksum: %v", err)
	}
	if got := read(t, filepath.Join(sp.docRoot, "css/site.css")); got != "body{}" {
		t.Errorf("after restore css/site.css = %q", got)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// entry is one entry of a hand-made archive.
type entry struct {
	name     string
	typ      byte // tar.TypeReg when 0
	body     string
	linkname string
}

func buildArchive(t *testing.T, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range es {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), Linkname: e.linkname, Format: tar.FormatPAX}
		if e.typ == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Typeflag != tar.TypeReg {
			hdr.Size = 0
		}
		if hdr.Typeflag == tar.TypeDir {
			hdr.Mode = 0o755
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("header %q: %v", e.name, err)
		}
		if hdr.Size > 0 {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRestoreRefusesHostileArchives(t *testing.T) {
	t.Parallel()
	root := entry{name: "files/", typ: tar.TypeDir}
	tests := []struct {
		name    string
		entries []entry
	}{
		{"dot-dot at the top", []entry{root, {name: "../evil.php", body: "x"}}},
		{"dot-dot under files", []entry{root, {name: "files/../../evil.php", body: "x"}}},
		{"dot-dot in the middle", []entry{root, {name: "files/a/../../../evil.php", body: "x"}}},
		{"dot-dot directory", []entry{root, {name: "files/../", typ: tar.TypeDir}}},
		{"absolute path", []entry{root, {name: "/tmp/evil.php", body: "x"}}},
		{"absolute under files", []entry{root, {name: "files//tmp/evil.php", body: "x"}}},
		{"outside files", []entry{root, {name: "etc/cron.d/evil", body: "x"}}},
		{"backslash", []entry{root, {name: "files/..\\..\\evil.php", body: "x"}}},
		{"absolute symlink", []entry{root, {name: "files/l", typ: tar.TypeSymlink, linkname: "/etc"}}},
		{"symlink climbing out", []entry{root, {name: "files/l", typ: tar.TypeSymlink, linkname: "../../.."}}},
		{"symlink climbing after a name", []entry{root, {name: "files/d/", typ: tar.TypeDir}, {name: "files/d/l", typ: tar.TypeSymlink, linkname: "x/../.."}}},
		{"file through a symlink", []entry{root, {name: "files/l", typ: tar.TypeSymlink, linkname: "."}, {name: "files/l/evil.php", body: "x"}}},
		{"symlink through a symlink", []entry{root, {name: "files/d/", typ: tar.TypeDir}, {name: "files/d/l", typ: tar.TypeSymlink, linkname: ".."},
			{name: "files/d/l/x", typ: tar.TypeSymlink, linkname: "../y"}}},
		{"file replacing a symlink", []entry{root, {name: "files/l", typ: tar.TypeSymlink, linkname: "index.html"}, {name: "files/l", body: "x"}}},
		{"hard link", []entry{root, {name: "files/h", typ: tar.TypeLink, linkname: "/etc/shadow"}}},
		{"device", []entry{root, {name: "files/dev", typ: tar.TypeChar}}},
		{"fifo", []entry{root, {name: "files/fifo", typ: tar.TypeFifo}}},
		{"files is a file", []entry{{name: "files", body: "x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			site, sp := provisioned(t, b, drivers.SiteTypeHTML, "hostile.example.com")
			// Files outside the document root the archive must not reach.
			outside := filepath.Dir(b.root)
			before := snapshot(t, outside)

			err := b.prov.Restore(t.Context(), site, drivers.BackupFiles, bytes.NewReader(buildArchive(t, tt.entries)))
			if !errors.Is(err, drivers.ErrCorruptArchive) {
				t.Fatalf("Restore = %v, want ErrCorruptArchive", err)
			}
			if diff := cmp.Diff(before, snapshot(t, outside)); diff != "" {
				t.Errorf("files changed (-want +got):\n%s", diff)
			}
			if _, err := os.Lstat("/tmp/evil.php"); err == nil {
				t.Error("/tmp/evil.php exists")
			}
			if l := leftovers(t, sp); len(l) > 0 {
				t.Errorf("restore left %v", l)
			}
		})
	}
}

// A restore killed between its two renames left no document root and the
// live one under .restore-old-*, beside an old stage: the next restore puts
// the live root back before anything else (so even a failing one leaves the
// site as it was) and removes the stale directories; young ones are kept.
func TestRestoreRecoversAnInterruptedRestore(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	site, sp := provisioned(t, b, drivers.SiteTypeHTML, "interrupted.example.com")
	arch := archive(t, b, site, drivers.BackupFiles)
	if err := os.WriteFile(filepath.Join(sp.docRoot, "after-backup.txt"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	live := snapshot(t, sp.docRoot)

	// The crash: the live root moved away, the stage still there, both an hour old.
	old := filepath.Join(sp.siteDir, ".restore-old-0123456789abcdef")
	stale := filepath.Join(sp.siteDir, ".restore-stage-0123456789abcdef")
	young := filepath.Join(sp.siteDir, ".restore-stage-fedcba9876543210")
	if err := os.Rename(sp.docRoot, old); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{stale, young} {
		if err := os.MkdirAll(filepath.Join(d, "x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	for _, d := range []string{old, stale} {
		if err := os.Chtimes(d, past, past); err != nil {
			t.Fatal(err)
		}
	}

	// A failing restore (not an archive) still puts the live root back.
	if err := b.prov.Restore(ctx, site, drivers.BackupFiles, strings.NewReader("not an archive")); err == nil {
		t.Fatal("Restore of garbage succeeded")
	}
	if diff := cmp.Diff(live, snapshot(t, sp.docRoot)); diff != "" {
		t.Errorf("document root after the failed retry (-want the pre-crash live root +got):\n%s", diff)
	}
	if got := leftovers(t, sp); !slices.Equal(got, []string{filepath.Base(young)}) {
		t.Errorf("leftovers %v, want only the young stage %s", got, filepath.Base(young))
	}

	// And a good restore then restores.
	if err := b.prov.Restore(ctx, site, drivers.BackupFiles, bytes.NewReader(arch)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sp.docRoot, "after-backup.txt")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after-backup.txt after the restore: %v, want it gone", err)
	}
}
