package local

import (
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chomhq/chom/drivers"
)

// combined is one access-log line in nginx's combined format.
func combined(at time.Time, bytes int64) string {
	return fmt.Sprintf(`198.51.100.4 - - [%s] "GET /p HTTP/1.1" 200 %d "-" "curl/8.5.0"`+"\n",
		at.Format("02/Jan/2006:15:04:05 -0700"), bytes)
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDiskBytes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	site := spec(drivers.SiteTypeHTML, "disk.example")

	// Before provisioning there is no document root: nothing on disk.
	if n, err := b.prov.DiskBytes(t.Context(), site); err != nil || n != 0 {
		t.Fatalf("DiskBytes of an unprovisioned site = %d, %v; want 0, nil", n, err)
	}
	res, err := b.prov.Provision(t.Context(), site, nil)
	if err != nil {
		t.Fatal(err)
	}
	index, err := os.Stat(filepath.Join(res.DocumentRoot, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(res.DocumentRoot, "a.bin"), make([]byte, 1000))
	writeFile(t, filepath.Join(res.DocumentRoot, "deep", "er", "b.bin"), make([]byte, 12345))
	writeFile(t, filepath.Join(res.DocumentRoot, "empty"), nil)
	// A link to something big outside the document root is not the site's bytes.
	big := filepath.Join(t.TempDir(), "big")
	writeFile(t, big, make([]byte, 1<<20))
	if err := os.Symlink(big, filepath.Join(res.DocumentRoot, "link")); err != nil {
		t.Fatal(err)
	}
	// Files beside the document root (logs, tmp) are not in it.
	writeFile(t, filepath.Join(filepath.Dir(res.DocumentRoot), "logs", "access.log"), make([]byte, 777))

	got, err := b.prov.DiskBytes(t.Context(), site)
	if err != nil {
		t.Fatal(err)
	}
	if want := index.Size() + 1000 + 12345; got != want {
		t.Errorf("DiskBytes = %d, want %d", got, want)
	}

	bad := site
	bad.Domain = "../etc"
	if _, err := b.prov.DiskBytes(t.Context(), bad); !errors.Is(err, drivers.ErrInvalidSpec) {
		t.Errorf("DiskBytes of a bad spec = %v, want ErrInvalidSpec", err)
	}
}

func TestBandwidth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	site := spec(drivers.SiteTypePHP, "traffic.example")
	start := time.Now().UTC().Truncate(time.Hour)
	end := start.Add(time.Hour)

	if bw, err := b.prov.Bandwidth(t.Context(), site, start, end); err != nil || bw != (drivers.Bandwidth{}) {
		t.Fatalf("Bandwidth with no log directory = %+v, %v; want zero, nil", bw, err)
	}
	res, err := b.prov.Provision(t.Context(), site, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := filepath.Join(filepath.Dir(res.DocumentRoot), "logs")

	// access.log.1 (rotated) holds the period's first requests and earlier ones;
	// access.log the rest and one after the end.
	writeFile(t, filepath.Join(logs, "access.log.1"), []byte(
		combined(start.Add(-time.Minute), 5000)+combined(start, 100)+combined(start.Add(10*time.Minute), 200)))
	writeFile(t, filepath.Join(logs, "access.log"), []byte(
		combined(start.Add(20*time.Minute), 300)+"not a log line\n"+combined(end.Add(-time.Second), 400)+combined(end, 6000)))
	// An older rotation, compressed, with one line in the period.
	var gz strings.Builder
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write([]byte(combined(start.Add(time.Second), 50) + combined(start.Add(-2*time.Hour), 9000))); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(logs, "access.log.2.gz"), []byte(gz.String()))
	// A file last written before the period cannot hold any of its lines, even
	// a bogus one like this: it is not read.
	stale := filepath.Join(logs, "access.log.3")
	writeFile(t, stale, []byte(combined(start.Add(time.Minute), 1<<30)))
	if err := os.Chtimes(stale, start.Add(-time.Hour), start.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Not access logs: ignored.
	writeFile(t, filepath.Join(logs, "error.log"), []byte(combined(start.Add(time.Minute), 1<<20)))
	writeFile(t, filepath.Join(logs, "access.log.bak"), []byte(combined(start.Add(time.Minute), 1<<20)))
	// A second name of a file already read (a rotation during the scan looks
	// like this) is read once.
	if err := os.Link(filepath.Join(logs, "access.log"), filepath.Join(logs, "access.log.4")); err != nil {
		t.Fatal(err)
	}

	// A corrupt compressed rotation is refused and counted, never billed as
	// zero without a word; the others are still read.
	writeFile(t, filepath.Join(logs, "access.log.5.gz"), []byte("\x1f\x8bnot really gzip"))

	got, err := b.prov.Bandwidth(t.Context(), site, start, end)
	if err != nil {
		t.Fatal(err)
	}
	want := drivers.Bandwidth{Bytes: 100 + 200 + 300 + 400 + 50, Requests: 5, Skipped: 1, Files: 3, RefusedFiles: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Bandwidth (-want +got):\n%s", diff)
	}
}
