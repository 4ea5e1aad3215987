package ssh_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/ssh"
	"github.com/chomhq/chom/internal/vpsenv"
)

// combinedLine is one nginx access-log line in the combined format.
func combinedLine(at time.Time, size int) string {
	return fmt.Sprintf("203.0.113.9 - - [%s] \"GET /x HTTP/1.1\" 200 %d \"-\" \"test\"\n", at.Format("02/Jan/2006:15:04:05 -0700"), size)
}

// testMetering provisions an html site on b's real servers and checks what
// DiskBytes and Bandwidth measure there: the document root's regular files
// (a symbolic link to / counts as nothing), and the requests nginx really
// served plus the rotated logs (plain and gzip) in the period, once each
// (a hard link to a rotated file is not counted twice), with lines outside
// the period or not in the combined format never billed.
func testMetering(t *testing.T, b *realBundle) {
	ctx := t.Context()
	v := b.vps
	site := b.spec("site_meter1", "meter1.example.com", drivers.SiteTypeHTML)
	if _, err := b.prov.Provision(ctx, site, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.prov.Deprovision(context.WithoutCancel(ctx), site) })
	_, body := b.eventually(t, site.Domain, func(s int, _ string) bool { return s == 200 })

	// Disk: the starter page, two files of ours, a link that must not count.
	docRoot := filepath.Join(v.WebRoot, site.Domain, "public")
	index, err := os.Stat(filepath.Join(docRoot, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(docRoot, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, size := range map[string]int{"a.bin": 1000, "sub/b.bin": 2345} {
		if err := os.WriteFile(filepath.Join(docRoot, name), bytes.Repeat([]byte("x"), size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/", filepath.Join(docRoot, "root-link")); err != nil {
		t.Fatal(err)
	}
	disk, err := b.prov.DiskBytes(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	if want := index.Size() + 1000 + 2345; disk != want {
		t.Errorf("DiskBytes = %d, want %d (index %d + 1000 + 2345)", disk, want, index.Size())
	}

	// Bandwidth: what nginx logged so far, then three more requests and the
	// rotated files.
	now := time.Now()
	start, end := now.Add(-2*time.Hour), now.Add(time.Hour)
	served := v.WaitAccessLog(t, site.Domain, 1)
	before, err := b.prov.Bandwidth(ctx, site, start, end)
	if err != nil {
		t.Fatal(err)
	}
	if before.Requests == 0 || before.Files != 1 {
		t.Fatalf("before: %+v, want nginx's requests from access.log", before)
	}
	for range 3 {
		if status, _, err := v.Get(ctx, site.Domain, "/"); err != nil || status != 200 {
			t.Fatalf("GET: %d %v", status, err)
		}
	}
	v.WaitAccessLog(t, site.Domain, served+3)
	logDir := filepath.Join(v.LogDir, site.Domain)
	in := now.Add(-30 * time.Minute)
	rotated := combinedLine(in, 100) + combinedLine(in, 200) + combinedLine(now.Add(-3*time.Hour), 5000) + "not a log line\n"
	if err := os.WriteFile(filepath.Join(logDir, "access.log.1"), []byte(rotated), 0o644); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(combinedLine(in, 300)))
	_ = zw.Close()
	if err := os.WriteFile(filepath.Join(logDir, "access.log.2.gz"), gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(logDir, "access.log.1"), filepath.Join(logDir, "access.log.3")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(logDir, "access.log.old"), []byte(combinedLine(in, 7000)), 0o644); err != nil {
		t.Fatal(err)
	}
	after, err := b.prov.Bandwidth(ctx, site, start, end)
	if err != nil {
		t.Fatal(err)
	}
	want := drivers.Bandwidth{
		Requests: before.Requests + 3 + 2 + 1,
		Bytes:    before.Bytes + 3*int64(len(body)) + 100 + 200 + 300,
		Skipped:  before.Skipped + 1,
		Files:    3, // access.log, access.log.1, access.log.2.gz; .3 is .1 again, .old is not ours
	}
	if after != want {
		t.Errorf("Bandwidth after 3 requests and the rotated logs = %+v, want %+v", after, want)
	}

	// A period nothing fell in.
	if got, err := b.prov.Bandwidth(ctx, site, now.Add(-10*time.Hour), now.Add(-9*time.Hour)); err != nil || got.Requests != 0 || got.Bytes != 0 {
		t.Errorf("Bandwidth of an empty period = %+v, %v; want nothing", got, err)
	}
}

// A server nobody answers on is unreachable for metering too, so the breaker
// counts it and the meter task backs off.
func TestUsageUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	signer, _ := genKey(t)
	p, err := ssh.NewProvisioner(ssh.Config{Signer: signer, DialTimeout: 2 * time.Second, TrustOnFirstUse: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	site := drivers.SiteSpec{ID: "site_u1", TenantID: "ten_1", Domain: "u1.example.com", SiteType: drivers.SiteTypeHTML,
		Server: drivers.Server{ID: "vps_closed", IPAddress: "127.0.0.1", SSHPort: port}}
	ctx := t.Context()
	if _, err := p.DiskBytes(ctx, site); !errors.Is(err, drivers.ErrUnreachable) {
		t.Errorf("DiskBytes on a closed port: %v, want ErrUnreachable", err)
	}
	if _, err := p.Bandwidth(ctx, site, time.Now().Add(-time.Hour), time.Now()); !errors.Is(err, drivers.ErrUnreachable) {
		t.Errorf("Bandwidth on a closed port: %v, want ErrUnreachable", err)
	}
}

// BenchmarkBandwidthOverSSH measures Bandwidth of one site whose access.log
// holds 64 MiB, streamed from the server over SSH (sub-benchmark ssh), against
// drivers.ScanAccessLog reading the same file straight from the disk (local),
// the baseline measured in the same run: the ratio is the cost of the SSH
// stream. Run: go test -run '^$' -bench BandwidthOverSSH -benchtime 5x ./drivers/ssh/
func BenchmarkBandwidthOverSSH(b *testing.B) {
	v := vpsenv.Start(b)
	rb := &realBundle{vps: v, prov: newProvisioner(b, v, nil)}
	site := rb.spec("site_bench1", "bench1.example.com", drivers.SiteTypeHTML)
	ctx := b.Context()
	if _, err := rb.prov.Provision(ctx, site, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rb.prov.Deprovision(context.WithoutCancel(ctx), site) })
	logPath := filepath.Join(v.LogDir, site.Domain, "access.log")
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	f, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var size int64
	var want drivers.Bandwidth
	for i := 0; size < 64<<20; i++ {
		line := combinedLine(start.Add(time.Duration(i)*time.Millisecond), 1000+i%5000)
		size += int64(len(line))
		want.Bytes += int64(1000 + i%5000)
		want.Requests++
		if _, err := w.WriteString(line); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	end := time.Now().Add(time.Minute)

	b.Run("local", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			f, err := os.Open(logPath)
			if err != nil {
				b.Fatal(err)
			}
			got, err := drivers.ScanAccessLog(ctx, f, start, end)
			f.Close()
			if err != nil || got.Bytes != want.Bytes {
				b.Fatalf("local scan: %+v, %v; want %d bytes", got, err, want.Bytes)
			}
		}
	})
	b.Run("ssh", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			got, err := rb.prov.Bandwidth(ctx, site, start, end)
			if err != nil || got.Bytes != want.Bytes || got.Requests != want.Requests {
				b.Fatalf("Bandwidth over SSH: %+v, %v; want %+v", got, err, want)
			}
		}
	})
}
