package local

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/fsstore"
)

// memoryBound is the most the Go heap and the process's peak RSS may grow
// while a 1 GiB site is archived into a store.
const memoryBound = 64 << 20

// TestArchiveOneGiBFlatMemory archives a 1 GiB site (15 sparse files of 64 MiB
// and one of 64 MiB of random bytes) through an io.Pipe into a filesystem
// store, as a backup job does, and checks that neither the peak Go heap
// (sampled every 2 ms) nor the process's peak RSS (VmHWM) grows by more than
// memoryBound; then reads the stored archive back through VerifyReader and
// checks every byte count. It is not parallel, so no other test's memory is
// counted, and skipped under -short (about 10 s).
func TestArchiveOneGiBFlatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB archive: skipped under -short")
	}
	b := setup(t)
	ctx := t.Context()
	site := spec(drivers.SiteTypeHTML, "big.example.com")
	if _, err := b.prov.Provision(ctx, site, nil); err != nil {
		t.Fatal(err)
	}
	sp, err := b.prov.paths(site)
	if err != nil {
		t.Fatal(err)
	}
	const fileSize = 64 << 20
	var total int64
	for i := range 16 {
		p := filepath.Join(sp.docRoot, "media", fmt.Sprintf("part-%02d.bin", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			rng := rand.NewChaCha8([32]byte{7})
			_, err = io.CopyN(f, rng, fileSize)
		} else {
			err = f.Truncate(fileSize) // sparse: reads as zeros, takes no disk
		}
		if cerr := f.Close(); err != nil || cerr != nil {
			t.Fatal(errors.Join(err, cerr))
		}
		total += fileSize
	}
	index, _ := os.Stat(sp.indexPage)
	total += index.Size()

	store, err := fsstore.New(fsstore.Config{Dir: filepath.Join(t.TempDir(), "store")})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	hwmBefore := procStatusKiB(t, "VmHWM")
	peakHeap := sampleHeap(t)

	start := time.Now()
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(b.prov.Archive(ctx, site, drivers.BackupFull, pw))
	}()
	size, sum, err := store.Put(ctx, "ten_1/site_big/bkp_1.tar.gz", pr)
	if err != nil {
		t.Fatalf("Archive → Put: %v", err)
	}
	elapsed := time.Since(start)
	heapPeak := peakHeap()
	hwmAfter := procStatusKiB(t, "VmHWM")

	heapGrowth := int64(heapPeak) - int64(before.HeapInuse)
	hwmGrowth := (hwmAfter - hwmBefore) << 10
	t.Logf("archived %d MiB of files into a %.1f MiB archive in %s (%.0f MiB/s)",
		total>>20, float64(size)/(1<<20), elapsed.Round(time.Millisecond), float64(total)/(1<<20)/elapsed.Seconds())
	t.Logf("Go heap in use: %.1f MiB before, peak %.1f MiB during (growth %.1f MiB); VmHWM %d KiB before, %d KiB after (growth %.1f MiB)",
		mib(before.HeapInuse), mib(heapPeak), float64(heapGrowth)/(1<<20), hwmBefore, hwmAfter, float64(hwmGrowth)/(1<<20))
	if heapGrowth > memoryBound {
		t.Errorf("Go heap grew by %.1f MiB while archiving, bound %d MiB", float64(heapGrowth)/(1<<20), memoryBound>>20)
	}
	if hwmGrowth > memoryBound {
		t.Errorf("peak RSS grew by %.1f MiB while archiving, bound %d MiB", float64(hwmGrowth)/(1<<20), memoryBound>>20)
	}

	// The stored archive is whole: every file's bytes, the recorded checksum.
	rc, err := store.Open(ctx, "ten_1/site_big/bkp_1.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	vr := drivers.VerifyReader(rc, size, sum)
	gz, err := gzip.NewReader(vr)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var read int64
	var names []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read back: %v", err)
		}
		names = append(names, hdr.Name)
		n, err := io.Copy(io.Discard, tr)
		if err != nil {
			t.Fatalf("read back %s: %v", hdr.Name, err)
		}
		read += n
	}
	if _, err := io.Copy(io.Discard, vr); err != nil {
		t.Fatalf("read back to EOF: %v", err)
	}
	if read != total || len(names) != 19 {
		t.Errorf("archive holds %d entries with %d file bytes, want 19 and %d: %s", len(names), read, total, strings.Join(names, " "))
	}
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// sampleHeap samples HeapInuse every 2 ms until the returned func is called,
// which returns the highest value seen.
func sampleHeap(t *testing.T) func() uint64 {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var peak uint64
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak
	}
}

// procStatusKiB returns a "kB" field of /proc/self/status (Linux).
func procStatusKiB(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		name, value, ok := strings.Cut(string(line), ":")
		if !ok || name != field {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("/proc/self/status %s: %v", field, err)
		}
		return n
	}
	t.Fatalf("/proc/self/status has no %s", field)
	return 0
}
