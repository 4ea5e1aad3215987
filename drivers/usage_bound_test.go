package drivers_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
)

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A rotated log is read up to its bound and no further: a gzip bomb (a few KiB
// that decompress to far more than the bound) and a corrupt or truncated file
// are refused with ErrLogRefused, never scanned for ever nor billed as zero
// without a word; a file of exactly the bound is read whole.
func TestScanAccessLogFileBounds(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	start, end := at.Add(-time.Hour), at.Add(time.Hour)
	line := logLine(at, "GET / HTTP/1.1", 200, 123)
	exact := []byte(strings.Repeat(line, 100))
	limit := int64(len(exact))

	bw, err := drivers.ScanAccessLogFile(ctx, bytes.NewReader(gzipped(t, exact)), "access.log.2.gz", start, end, limit)
	if err != nil || bw.Requests != 100 || bw.Bytes != 12300 || bw.Files != 1 {
		t.Errorf("file of exactly the bound: %+v, %v; want 100 requests, 12300 bytes", bw, err)
	}
	over := append(bytes.Clone(exact), line...)
	if bw, err := drivers.ScanAccessLogFile(ctx, bytes.NewReader(gzipped(t, over)), "access.log.2.gz", start, end, limit); !errors.Is(err, drivers.ErrLogRefused) {
		t.Errorf("one line past the bound: %+v, %v; want ErrLogRefused", bw, err)
	}

	// A bomb: 64 MiB of zeros in some 64 KiB, against a 1 MiB bound.
	bomb := gzipped(t, make([]byte, 64<<20))
	t0 := time.Now()
	_, err = drivers.ScanAccessLogFile(ctx, bytes.NewReader(bomb), "access.log.9.gz", start, end, 1<<20)
	if !errors.Is(err, drivers.ErrLogRefused) || !strings.Contains(err.Error(), "more than 1048576 bytes") {
		t.Errorf("gzip bomb (%d bytes compressed): %v; want ErrLogRefused for the size", len(bomb), err)
	}
	t.Logf("gzip bomb of %d compressed bytes refused after %v", len(bomb), time.Since(t0))

	good := gzipped(t, exact)
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)/2] ^= 0xff
	for name, data := range map[string][]byte{
		"not gzip":  []byte(line),
		"corrupt":   corrupt,
		"truncated": good[:len(good)-10],
		"bad crc":   append(bytes.Clone(good[:len(good)-8]), 0, 0, 0, 0, good[len(good)-4], good[len(good)-3], good[len(good)-2], good[len(good)-1]),
	} {
		if bw, err := drivers.ScanAccessLogFile(ctx, bytes.NewReader(data), "access.log.3.gz", start, end, 0); !errors.Is(err, drivers.ErrLogRefused) {
			t.Errorf("%s .gz: %+v, %v; want ErrLogRefused", name, bw, err)
		}
	}
	// A plain file is not bounded (its size on disk is): the same bytes are read.
	if bw, err := drivers.ScanAccessLogFile(ctx, bytes.NewReader(over), "access.log", start, end, limit); err != nil || bw.Requests != 101 {
		t.Errorf("plain file past the bound: %+v, %v; want 101 requests", bw, err)
	}
}
