package stack

import (
	"context"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/queue"
	"github.com/chomhq/chom/workers"
)

// Scheduler is the periodic-task role: it enqueues each tick of the schedule
// once, whatever the number of schedulers running.
type Scheduler struct {
	sched *workers.Scheduler
	log   *slog.Logger
	every time.Duration
}

// NewScheduler builds the scheduler for c's Redis and Schedule(c).
func NewScheduler(c Config, log *slog.Logger) (*Scheduler, error) {
	redisOpt, err := queue.RedisOptions(c.RedisURL)
	if err != nil {
		return nil, err
	}
	s, err := workers.NewScheduler(workers.SchedulerConfig{Redis: redisOpt, Logger: log, Table: Schedule(c)})
	if err != nil {
		return nil, err
	}
	return &Scheduler{sched: s, log: log, every: c.ReconcileEvery}, nil
}

// Run enqueues every tick until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	s.log.Info("scheduler started", "reconcile_every", s.every.String())
	return s.sched.Run(ctx)
}

// Schedule is the scheduler's table: every periodic task and its interval,
// each a CHOM_* setting.
func Schedule(c Config) []workers.Periodic {
	p := []workers.Periodic{
		{Name: "reconcile", Every: c.ReconcileEvery, NewTask: func(time.Time) (*asynq.Task, error) { return queue.NewReconcileTask(), nil }},
		{Name: "health_sweep", Every: c.HealthInterval, NewTask: func(p time.Time) (*asynq.Task, error) {
			return queue.NewHealthSweepTask(p, c.HealthInterval)
		}},
		// The tick at period start p meters the period [p-interval, p) that just ended.
		{Name: "metering", Every: c.MeteringEvery, NewTask: func(p time.Time) (*asynq.Task, error) {
			return queue.NewUsageMeterSweepTask(p, c.MeteringEvery)
		}},
		// Prune: expired backups and those beyond a schedule's keep-N.
		{Name: "backup_prune", Every: c.BackupPruneEvery, NewTask: func(time.Time) (*asynq.Task, error) { return queue.NewBackupPruneTask(), nil }},
		// Every active site's layout brought to the current one (a no-op for
		// a converged fleet), so sites provisioned before an upgrade converge.
		{Name: "layout_migration", Every: c.LayoutMigrateEvery, NewTask: func(time.Time) (*asynq.Task, error) {
			return queue.NewSiteMigrateLayoutSweepTask(), nil
		}},
		// The booking of due scheduled backups.
		{Name: "backup_schedules", Every: c.BackupScheduleEvery, NewTask: func(time.Time) (*asynq.Task, error) {
			return queue.NewBackupSchedulesTask(), nil
		}},
	}
	if c.OperationRetention > 0 || c.AuditRetention > 0 {
		// Retention: finished operations and audit rows past theirs, in
		// bounded batches (jobs.PruneOperations).
		p = append(p, workers.Periodic{Name: "operations_prune", Every: c.OperationPruneEvery, NewTask: func(time.Time) (*asynq.Task, error) {
			return queue.NewOperationsPruneTask(), nil
		}})
	}
	if c.ACME.EncryptionKeys != "" {
		// Certificates (on only with CHOM_CERT_ENCRYPTION_KEYS, as the
		// worker's certificate jobs): the CA asked about them (ARI),
		// renewals started for those due.
		p = append(p, workers.Periodic{Name: "certificate_renewal", Every: c.Renewal.Every, NewTask: func(time.Time) (*asynq.Task, error) {
			return queue.NewCertificateRenewSweepTask(c.Renewal.Every), nil
		}})
	}
	return p
}
