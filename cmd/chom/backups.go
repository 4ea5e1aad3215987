package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/fsstore"
	"github.com/chomhq/chom/drivers/s3store"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/queue"
	"github.com/chomhq/chom/workers"
)

// backupDir is where the filesystem backup store keeps archives:
// CHOM_BACKUP_DIR, else <root>/backups under the local driver's root (`chom
// dev` sets <data-dir>/backups). Empty when neither is known.
func backupDir(c config, root string) string {
	switch {
	case c.BackupDir != "":
		return c.BackupDir
	case root != "":
		return filepath.Join(root, "backups")
	}
	return ""
}

// newBackupStore opens the backup store CHOM_BACKUP_STORE names (fs: a
// directory; s3: the CHOM_S3_* bucket). It returns nil, nil when no directory is configured, for
// processes that can run without one (the ingress then answers archive
// downloads with 503).
func newBackupStore(c config, root string) (drivers.BackupStore, error) {
	if c.BackupStore == "s3" {
		return s3store.New(s3store.Config{Endpoint: c.S3Endpoint, Bucket: c.S3Bucket, AccessKey: c.S3AccessKey,
			SecretKey: c.S3SecretKey, Region: c.S3Region, UseTLS: c.S3TLS, Prefix: c.S3Prefix})
	}
	dir := backupDir(c, root)
	if dir == "" {
		return nil, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("CHOM_BACKUP_DIR: %w", err)
	}
	return fsstore.New(fsstore.Config{Dir: abs})
}

// newBackupJobs builds the backup handlers over the store and src (the
// driver's BackupSource, already behind the jobs' guard). A driver without one (src nil) gets no backup
// handlers: the worker then leaves backup tasks to workers that have them.
func newBackupJobs(c config, b *backends, log *slog.Logger, src drivers.BackupSource, root string) (*jobs.Backups, error) {
	if src == nil {
		log.Warn("the driver cannot make backups; backup tasks are not handled by this worker")
		return nil, nil
	}
	store, err := newBackupStore(c, root)
	if err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("backups need CHOM_BACKUP_DIR (or CHOM_LOCAL_ROOT)")
	}
	return jobs.NewBackups(jobs.BackupConfig{Store: b.store, Source: src, Backups: store,
		Enqueuer: queue.NewEnqueuer(b.redis), Notifier: queue.NewNotifier(b.redis), Logger: log.With("component", "backups")})
}

// backupAPIConfig is the ingress's backup settings: signing key, link TTL,
// default retention and, when a backup directory is configured, the store
// downloads stream from.
//
// Without CHOM_BACKUP_SIGNING_KEY the key is random per process: fine for one
// ingress (`chom dev`, a single replica), but behind a load balancer a link
// signed by one replica is refused (403) by the others, so production sets it.
func backupAPIConfig(c config, root string) (ingress.BackupConfig, error) {
	store, err := newBackupStore(c, root)
	if err != nil {
		return ingress.BackupConfig{}, err
	}
	cfg := ingress.BackupConfig{SigningKey: []byte(c.BackupSigningKey), LinkTTL: c.BackupLinkTTL,
		DefaultRetentionDays: c.BackupRetention, IsNotFound: func(err error) bool { return errors.Is(err, drivers.ErrNotFound) }}
	if store != nil {
		cfg.Archives = store
	}
	return cfg, nil
}

// backupSchedule is the scheduler's backup rows: prune (expired backups and
// those beyond a schedule's keep-N) and the booking of due scheduled backups.
func backupSchedule(c config) []workers.Periodic {
	return []workers.Periodic{
		{Name: "backup_prune", Every: c.BackupPruneEvery, NewTask: func(time.Time) (*asynq.Task, error) { return queue.NewBackupPruneTask(), nil }},
		{Name: "backup_schedules", Every: c.BackupScheduleEvery, NewTask: func(time.Time) (*asynq.Task, error) {
			return queue.NewBackupSchedulesTask(), nil
		}},
	}
}
