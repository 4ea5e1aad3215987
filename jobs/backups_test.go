package jobs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/fsstore"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// fakeSource is a drivers.BackupSource over an in-memory "site": Archive writes
// its content (failing after failAfter bytes when set), Restore reads the
// archive to EOF and only then replaces the content, as the contract demands.
type fakeSource struct {
	mu        sync.Mutex
	content   []byte
	failAfter int
	archives  int
	restores  int
	// refuse, when set, is returned by Archive before it writes anything.
	refuse error
}

var errDiskGone = errors.New("disk gone")

func (f *fakeSource) Archive(ctx context.Context, _ drivers.SiteSpec, _ string, w io.Writer) error {
	f.mu.Lock()
	content, failAfter, refuse := bytes.Clone(f.content), f.failAfter, f.refuse
	f.archives++
	f.mu.Unlock()
	if refuse != nil {
		return refuse
	}
	if failAfter > 0 {
		if _, err := w.Write(content[:failAfter]); err != nil {
			return err
		}
		return errDiskGone
	}
	_, err := io.Copy(w, bytes.NewReader(content))
	return err
}

func (f *fakeSource) Restore(ctx context.Context, _ drivers.SiteSpec, _ string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.content = b
	f.restores++
	return nil
}

func (f *fakeSource) set(b []byte, failAfter int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.content, f.failAfter = b, failAfter
}

func (f *fakeSource) get() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Clone(f.content)
}

// opEnqueuer records the operations it is asked to enqueue, by ID.
type opEnqueuer struct {
	mu  sync.Mutex
	ops map[string]string // operation ID → type
}

func (e *opEnqueuer) EnqueueOperation(_ context.Context, op *models.Operation) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ops == nil {
		e.ops = map[string]string{}
	}
	e.ops[op.ID] = op.Type
	return nil
}

func (e *opEnqueuer) count(opType string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, t := range e.ops {
		if t == opType {
			n++
		}
	}
	return n
}

type backupBundle struct {
	store    *models.Store
	db       *bun.DB
	src      *fakeSource
	dir      string
	enq      *opEnqueuer
	h        *jobs.Backups
	tenantID string
	siteID   string
	now      time.Time
}

// setupBackups makes an active wordpress site on a registered server, a
// filesystem backup store in a temp dir and the backup handlers over them.
func setupBackups(t *testing.T, db *bun.DB) *backupBundle {
	t.Helper()
	ctx := t.Context()
	if _, err := models.MigrateUp(ctx, db); err != nil {
		t.Fatal(err)
	}
	b := &backupBundle{db: db, src: &fakeSource{content: []byte("hello, site")}, dir: t.TempDir(), enq: &opEnqueuer{},
		now: time.Now()}
	var err error
	b.store, err = models.New(models.Config{DB: db, Now: func() time.Time { return b.now }})
	if err != nil {
		t.Fatal(err)
	}
	ten, err := b.store.EnsureTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	b.tenantID = ten.ID
	if _, _, err := b.store.RegisterVPS(ctx, models.Accept{}, models.RegisterVPSParams{Hostname: "web1.example", IPAddress: "192.0.2.1",
		SSHPort: 22, Provider: "test", Region: "eu", Allocation: models.AllocationShared, SiteCapacity: 10}); err != nil {
		t.Fatal(err)
	}
	acc, err := b.store.CreateSite(ctx, models.CreateSiteParams{Accept: models.Accept{TenantID: ten.ID}, Domain: "shop.example",
		SiteType: "wordpress", PHPVersion: "8.3"})
	if err != nil {
		t.Fatal(err)
	}
	b.siteID = acc.Operation.TargetID
	if _, err := b.store.AssignVPS(ctx, b.siteID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.StartOperation(ctx, acc.Operation.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.CompleteProvision(ctx, acc.Operation.ID, b.siteID, models.ProvisionedSite{}, nil, nil); err != nil {
		t.Fatal(err)
	}
	fs, err := fsstore.New(fsstore.Config{Dir: b.dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fs.Close() })
	b.h, err = jobs.NewBackups(jobs.BackupConfig{Store: b.store, Source: b.src, Backups: fs, Enqueuer: b.enq,
		Notifier: jobs.NopNotifier{}, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return b.now }})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// objects lists the files of the backup store (temporary ones included).
func (b *backupBundle) objects(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(b.dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func task(t *testing.T, typ string, op *models.Operation) *asynq.Task {
	t.Helper()
	p, err := json.Marshal(queue.OperationPayload{OperationID: op.ID, TenantID: op.TenantID})
	if err != nil {
		t.Fatal(err)
	}
	return asynq.NewTask(typ, p)
}

func (b *backupBundle) backup(t *testing.T, retention int) *models.Operation {
	t.Helper()
	acc, err := b.store.CreateBackup(t.Context(), models.CreateBackupParams{Accept: models.Accept{TenantID: b.tenantID},
		SiteID: b.siteID, BackupType: drivers.BackupFull, RetentionDays: retention})
	if err != nil {
		t.Fatal(err)
	}
	return acc.Operation
}

func (b *backupBundle) op(t *testing.T, id string) *models.Operation {
	t.Helper()
	op, err := b.store.OperationByID(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return op
}

func TestCreateBackupRunTwiceStoresOneObject(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		b := setupBackups(t, db)
		content := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB, larger than any pipe buffer
		b.src.set(content, 0)
		op := b.backup(t, 7)
		for i := range 2 {
			if err := b.h.Create.ProcessTask(t.Context(), task(t, queue.TypeBackupCreate, op)); err != nil {
				t.Fatalf("run %d: %v", i+1, err)
			}
		}
		if b.src.archives != 1 {
			t.Fatalf("%d archives made, want 1 (a finished operation is not redone)", b.src.archives)
		}
		objs := b.objects(t)
		if len(objs) != 1 {
			t.Fatalf("objects %v, want one", objs)
		}
		stored, err := os.ReadFile(objs[0])
		if err != nil || !bytes.Equal(stored, content) {
			t.Fatalf("stored object differs from the archive (%d bytes, %v)", len(stored), err)
		}
		bk, _ := b.store.BackupByID(t.Context(), op.TargetID)
		sum := sha256.Sum256(content)
		if bk.Status != models.BackupStatusCompleted || bk.SizeBytes != int64(len(content)) || bk.SHA256 != hex.EncodeToString(sum[:]) ||
			bk.Format != drivers.ArchiveFormat || bk.ExpiresAt == nil {
			t.Fatalf("backup %+v", bk)
		}
		if got := b.op(t, op.ID); got.Status != models.OpSucceeded {
			t.Fatalf("operation %s", got.Status)
		}
		n, _ := db.NewSelect().Table("outbox_events").Where("event_type = ?", "backup.completed.v1").Count(t.Context())
		if n != 1 {
			t.Fatalf("%d backup.completed events, want 1", n)
		}
	})
}

func TestCreateBackupFailureCompensates(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		b := setupBackups(t, db)
		b.src.set(bytes.Repeat([]byte("x"), 256<<10), 100<<10) // fails after 100 KiB
		op := b.backup(t, 7)
		// Outside asynq every attempt is the last one: the failure is final.
		err := b.h.Create.ProcessTask(t.Context(), task(t, queue.TypeBackupCreate, op))
		if !errors.Is(err, asynq.SkipRetry) || !errors.Is(err, errDiskGone) {
			t.Fatalf("ProcessTask = %v, want the archive error with SkipRetry", err)
		}
		if objs := b.objects(t); len(objs) != 0 {
			t.Fatalf("objects left behind: %v", objs)
		}
		bk, _ := b.store.BackupByID(t.Context(), op.TargetID)
		if bk.Status != models.BackupStatusFailed || bk.SizeBytes != 0 || bk.OperationID != nil {
			t.Fatalf("backup %+v", bk)
		}
		got := b.op(t, op.ID)
		if got.Status != models.OpFailed || got.ErrorCode == nil || *got.ErrorCode != "backup_failed" {
			t.Fatalf("operation %+v", got)
		}
		if active, _ := b.store.ActiveMutation(t.Context(), b.tenantID, b.siteID); active != nil {
			t.Fatalf("site still locked by %s", active.ID)
		}
		n, _ := db.NewSelect().Table("outbox_events").Where("event_type = ?", "backup.failed.v1").Count(t.Context())
		if n != 1 {
			t.Fatalf("%d backup.failed events, want 1", n)
		}
	})
}

func TestRestoreVerifiesTheArchive(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		b := setupBackups(t, db)
		original := []byte("the original site")
		b.src.set(original, 0)
		op := b.backup(t, 0)
		if err := b.h.Create.ProcessTask(ctx, task(t, queue.TypeBackupCreate, op)); err != nil {
			t.Fatal(err)
		}
		b.src.set([]byte("changed"), 0)
		racc, err := b.store.RestoreBackup(ctx, models.Accept{TenantID: b.tenantID}, op.TargetID)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.h.Restore.ProcessTask(ctx, task(t, queue.TypeBackupRestore, racc.Operation)); err != nil {
			t.Fatal(err)
		}
		if got := b.src.get(); !bytes.Equal(got, original) {
			t.Fatalf("site after restore %q, want %q", got, original)
		}
		if got := b.op(t, racc.Operation.ID); got.Status != models.OpSucceeded {
			t.Fatalf("restore operation %s", got.Status)
		}

		// Damage the stored archive (same size, one byte flipped): the restore
		// fails for good and the site stays as it is.
		objs := b.objects(t)
		raw, _ := os.ReadFile(objs[0])
		raw[0] ^= 0xff
		if err := os.WriteFile(objs[0], raw, 0o600); err != nil {
			t.Fatal(err)
		}
		b.src.set([]byte("changed again"), 0)
		racc, err = b.store.RestoreBackup(ctx, models.Accept{TenantID: b.tenantID}, op.TargetID)
		if err != nil {
			t.Fatal(err)
		}
		err = b.h.Restore.ProcessTask(ctx, task(t, queue.TypeBackupRestore, racc.Operation))
		if !errors.Is(err, asynq.SkipRetry) || !errors.Is(err, drivers.ErrCorruptArchive) {
			t.Fatalf("restore of a damaged archive = %v", err)
		}
		if got := b.src.get(); string(got) != "changed again" {
			t.Fatalf("site changed by a failed restore: %q", got)
		}
		got := b.op(t, racc.Operation.ID)
		if got.Status != models.OpFailed || *got.ErrorCode != "corrupt_archive" {
			t.Fatalf("operation %+v", got)
		}
		if active, _ := b.store.ActiveMutation(ctx, b.tenantID, b.siteID); active != nil {
			t.Fatalf("site still locked by %s", active.ID)
		}
	})
}

func TestDeleteAndPruneBackups(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		b := setupBackups(t, db)
		keep := b.backup(t, 0)
		if err := b.h.Create.ProcessTask(ctx, task(t, queue.TypeBackupCreate, keep)); err != nil {
			t.Fatal(err)
		}
		expiring := b.backup(t, 1)
		if err := b.h.Create.ProcessTask(ctx, task(t, queue.TypeBackupCreate, expiring)); err != nil {
			t.Fatal(err)
		}
		if n := len(b.objects(t)); n != 2 {
			t.Fatalf("%d objects, want 2", n)
		}
		// Nothing has expired yet.
		if err := b.h.Prune.ProcessTask(ctx, asynq.NewTask(queue.TypeBackupPrune, nil)); err != nil {
			t.Fatal(err)
		}
		if n := b.enq.count(models.OpTypeBackupDelete); n != 0 {
			t.Fatalf("%d deletes before expiry", n)
		}
		b.now = b.now.Add(25 * time.Hour)
		for range 2 { // a second prune of the same backup records nothing new
			if err := b.h.Prune.ProcessTask(ctx, asynq.NewTask(queue.TypeBackupPrune, nil)); err != nil {
				t.Fatal(err)
			}
		}
		var opIDs []string
		for id := range b.enq.ops {
			if b.enq.ops[id] == models.OpTypeBackupDelete {
				opIDs = append(opIDs, id)
			}
		}
		if len(opIDs) != 1 {
			t.Fatalf("prune enqueued %v, want one delete", opIDs)
		}
		del := b.op(t, opIDs[0])
		if del.TargetID != expiring.TargetID || del.Status != models.OpPending {
			t.Fatalf("prune delete %+v, want a pending delete of %s", del, expiring.TargetID)
		}
		if err := b.h.Delete.ProcessTask(ctx, task(t, queue.TypeBackupDelete, del)); err != nil {
			t.Fatal(err)
		}
		if n := len(b.objects(t)); n != 1 {
			t.Fatalf("%d objects after the delete, want 1", n)
		}
		bk, _ := b.store.BackupByID(ctx, expiring.TargetID)
		if bk.Status != models.BackupStatusDeleted || bk.DeletedAt == nil {
			t.Fatalf("pruned backup %+v", bk)
		}
		if bk, _ := b.store.BackupByID(ctx, keep.TargetID); bk.Status != models.BackupStatusCompleted {
			t.Fatalf("a backup without expiry was pruned: %+v", bk)
		}
	})
}

func TestBookSchedulesOncePerDueTime(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		ctx := t.Context()
		b := setupBackups(t, db)
		if _, _, err := b.store.PutBackupSchedule(ctx, models.PutBackupScheduleParams{TenantID: b.tenantID, SiteID: b.siteID,
			Frequency: models.FrequencyDaily, Keep: 1, BackupType: drivers.BackupFiles}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := b.h.Schedules.ProcessTask(ctx, asynq.NewTask(queue.TypeBackupSchedules, nil)); err != nil {
				t.Fatal(err)
			}
		}
		if n := b.enq.count(models.OpTypeBackupCreate); n != 1 {
			t.Fatalf("%d scheduled backups enqueued for one due time, want 1", n)
		}
		b.now = b.now.Add(24*time.Hour + time.Minute)
		// The first is still running: the site is busy, the schedule stays due.
		if err := b.h.Schedules.ProcessTask(ctx, asynq.NewTask(queue.TypeBackupSchedules, nil)); err != nil {
			t.Fatal(err)
		}
		if n := b.enq.count(models.OpTypeBackupCreate); n != 1 {
			t.Fatalf("%d scheduled backups while the site is busy, want 1", n)
		}
		for id := range b.enq.ops {
			if err := b.h.Create.ProcessTask(ctx, task(t, queue.TypeBackupCreate, b.op(t, id))); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.h.Schedules.ProcessTask(ctx, asynq.NewTask(queue.TypeBackupSchedules, nil)); err != nil {
			t.Fatal(err)
		}
		if n := b.enq.count(models.OpTypeBackupCreate); n != 2 {
			t.Fatalf("%d scheduled backups after the next due time, want 2", n)
		}
	})
}

// A breaker or limit that defers the archive is not a failure: even on the
// last attempt nothing is compensated, and the next delivery completes it.
func TestCreateBackupDeferredIsNotAFailure(t *testing.T) {
	t.Parallel()
	testenv.Backends(t, func(t *testing.T, db *bun.DB) {
		b := setupBackups(t, db)
		b.src.mu.Lock()
		b.src.refuse = fmt.Errorf("vps busy: %w", drivers.ErrDeferred)
		b.src.mu.Unlock()
		op := b.backup(t, 1)
		err := b.h.Create.ProcessTask(t.Context(), task(t, queue.TypeBackupCreate, op))
		if !errors.Is(err, drivers.ErrDeferred) || errors.Is(err, asynq.SkipRetry) {
			t.Fatalf("deferred attempt = %v, want ErrDeferred without SkipRetry", err)
		}
		if got := b.op(t, op.ID); got.Status != models.OpRunning {
			t.Fatalf("operation %s after a deferred attempt, want running", got.Status)
		}
		n, _ := db.NewSelect().Table("outbox_events").Where("event_type = ?", "backup.failed.v1").Count(t.Context())
		if n != 0 {
			t.Fatalf("%d backup.failed events for a deferred attempt", n)
		}
		b.src.mu.Lock()
		b.src.refuse = nil
		b.src.mu.Unlock()
		if err := b.h.Create.ProcessTask(t.Context(), task(t, queue.TypeBackupCreate, op)); err != nil {
			t.Fatal(err)
		}
		if got := b.op(t, op.ID); got.Status != models.OpSucceeded {
			t.Fatalf("operation %s after the next delivery", got.Status)
		}
	})
}
