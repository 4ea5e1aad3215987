package integration

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/internal/stack/stacktest"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// EnvBackupRSS turns on TestBackupOneGiBFlatMemory (scripts/backup-rss.sh sets it).
const EnvBackupRSS = "CHOM_TEST_BACKUP_RSS"

// vmHWM reads the peak resident set size of process pid (VmHWM, in bytes).
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read worker status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// A 1 GiB site backs up with flat memory: `chom worker`, built and run as its
// own process against real PostgreSQL and Redis with the local driver and the
// filesystem store, streams a site of 1 GiB of incompressible files into the
// store, and its peak RSS stays far below the archive's size.
func TestBackupOneGiBFlatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB backup: not under -short")
	}
	if os.Getenv(EnvBackupRSS) == "" {
		t.Skipf("set %s=1 (or run scripts/backup-rss.sh) to back up a 1 GiB site", EnvBackupRSS)
	}
	const siteBytes = 1 << 30
	const limit = 200 << 20
	ctx := context.Background()
	work := t.TempDir()
	bin, err := testenv.BuildChom(work, false)
	if err != nil {
		t.Fatal(err)
	}
	dsn := testenv.PostgresDSN(t)
	db, err := models.Open(ctx, dsn, models.PoolConfig{MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() }) // after the kit's roles have stopped
	root := filepath.Join(work, "vps")
	backupDir := filepath.Join(work, "backups")
	// The production wiring, not running its worker: the site is provisioned
	// here by its provision handler; the backup runs in the chom worker below.
	kit := stacktest.Start(t, stacktest.Options{DB: db, NoWorker: true,
		Env: map[string]string{"CHOM_LOCAL_ROOT": root, "CHOM_BACKUP_DIR": backupDir}})
	store, rdb := kit.Store, kit.Redis
	ten, err := store.EnsureTenant(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	vps, _, err := store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{Hostname: "big.test.example", IPAddress: "127.0.0.1",
		SSHPort: 22, Provider: "local", Region: "test", Allocation: models.AllocationShared, SiteCapacity: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Provision the site in this process with the same driver the worker uses.
	acc, err := store.CreateSite(ctx, models.CreateSiteParams{Accept: models.Accept{TenantID: ten.ID}, Domain: "big.example", SiteType: "html"})
	if err != nil {
		t.Fatal(err)
	}
	ph := kit.Worker.Provision
	if err := runTask(t, ph, queue.TypeSiteProvision, ingress.OperationView{ID: acc.Operation.ID}, ten.ID); err != nil {
		t.Fatal(err)
	}
	// 1 GiB of incompressible files: 16 × 64 MiB from a seeded ChaCha8 stream.
	docRoot := filepath.Join(root, vps.ID, "sites", "big.example", "public")
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 1<<20)
	for i := range 16 {
		f, err := os.Create(filepath.Join(docRoot, fmt.Sprintf("blob-%02d.bin", i)))
		if err != nil {
			t.Fatal(err)
		}
		for range siteBytes / 16 / len(buf) {
			_, _ = rng.Read(buf)
			if _, err := f.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}

	worker := exec.Command(bin, "worker")
	worker.Env = append(os.Environ(), "CHOM_DATABASE_URL="+dsn, "CHOM_REDIS_URL="+rdb.URL, "CHOM_LOCAL_ROOT="+root,
		"CHOM_BACKUP_DIR="+backupDir, "CHOM_WORKER_CONCURRENCY=4", "CHOM_METRICS_LISTEN=off", "CHOM_LOG_LEVEL=warn")
	logPath := filepath.Join(work, "worker.log")
	logs, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	worker.Stdout, worker.Stderr = logs, logs
	defer func() {
		if t.Failed() {
			t.Logf("worker log:\n%s", testenv.Tail(logPath, 40))
		}
	}()
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = worker.Process.Signal(os.Interrupt); _ = worker.Wait() })
	time.Sleep(2 * time.Second) // started and connected
	before := vmHWM(t, worker.Process.Pid)

	bacc, err := store.CreateBackup(ctx, models.CreateBackupParams{Accept: models.Accept{TenantID: ten.ID}, SiteID: acc.Operation.TargetID,
		BackupType: "files", RetentionDays: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.NewEnqueuer(rdb.Client(t)).EnqueueOperation(ctx, bacc.Operation); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var op *models.Operation
	for deadline := start.Add(10 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if op, err = store.OperationByID(ctx, bacc.Operation.ID); err != nil {
			t.Fatal(err)
		}
		if op.Terminal() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backup still %s after 10 minutes", op.Status)
		}
	}
	took := time.Since(start)
	after := vmHWM(t, worker.Process.Pid)
	if op.Status != models.OpSucceeded {
		t.Fatalf("backup %s: %v %v", op.Status, deref(op.ErrorCode), deref(op.ErrorMessage))
	}
	b, err := store.BackupByID(ctx, bacc.Operation.TargetID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("1 GiB site: archive %d bytes (%.1f MiB) in %s (%.0f MiB/s); worker peak RSS (VmHWM) %.1f MiB before, %.1f MiB after",
		b.SizeBytes, float64(b.SizeBytes)/(1<<20), took.Round(time.Millisecond), float64(b.SizeBytes)/(1<<20)/took.Seconds(),
		float64(before)/(1<<20), float64(after)/(1<<20))
	if b.SizeBytes < siteBytes {
		t.Fatalf("archive of %d bytes is smaller than the %d-byte site: the data was not incompressible", b.SizeBytes, siteBytes)
	}
	if after >= limit {
		t.Fatalf("worker peak RSS %d MiB, want < %d MiB for a %d MiB archive", after>>20, limit>>20, b.SizeBytes>>20)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
