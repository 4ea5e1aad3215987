package jobs

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// Retention defaults (CHOM_OPERATION_RETENTION, CHOM_AUDIT_RETENTION).
const (
	// DefaultOperationRetention keeps a finished operation 30 days after it
	// finished: a caller polling it gets its outcome for a month (AIP-151 asks
	// for at least days), then 404.
	DefaultOperationRetention = 30 * 24 * time.Hour
	// DefaultAuditRetention keeps audit rows 400 days: a year of audit trail
	// plus a month, longer than the operations they name.
	DefaultAuditRetention = 400 * 24 * time.Hour
	// DefaultPrunePause is the pause between two batch deletes, so a prune
	// takes a bounded share of the database and the accept path runs between
	// its statements.
	DefaultPrunePause = 50 * time.Millisecond
	// DefaultPruneMaxRun bounds one run; the next period goes on from there.
	DefaultPruneMaxRun = 10 * time.Minute
)

// RetentionStore is the part of models.Store the prune uses.
type RetentionStore interface {
	PruneOperations(ctx context.Context, cutoff time.Time, batch int) (int64, error)
	PruneAuditLogs(ctx context.Context, cutoff time.Time, batch int) (int64, error)
}

var _ RetentionStore = (*models.Store)(nil)

// RetentionConfig configures the prune.
type RetentionConfig struct {
	Store  RetentionStore
	Logger *slog.Logger
	// Operations is how long a finished operation is kept after it finished;
	// 0 keeps them all.
	Operations time.Duration
	// Audit is how long an audit row is kept; 0 keeps them all.
	Audit time.Duration
	// Batch is the most rows one statement deletes; default
	// models.DefaultPruneBatch.
	Batch int
	// Pause is the wait between two statements; default DefaultPrunePause.
	Pause time.Duration
	// MaxRun bounds one run; default DefaultPruneMaxRun.
	MaxRun time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// PruneOperations handles operations:prune: it deletes finished operations
// older than the retention, then audit rows older than theirs, each in
// batches of at most Batch rows with Pause between statements, so no
// statement holds locks for long and the accept path and polls run between
// them. What must be kept (unfinished operations, operations a live row
// names) is decided by models.Store.PruneOperations.
type PruneOperations struct{ cfg RetentionConfig }

// NewPruneOperations validates cfg and returns the handler.
func NewPruneOperations(cfg RetentionConfig) (*PruneOperations, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("jobs: prune Store is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("jobs: prune Logger is required"))
	}
	if cfg.Operations < 0 || cfg.Audit < 0 || cfg.Batch < 0 || cfg.Pause < 0 || cfg.MaxRun < 0 {
		errs = append(errs, errors.New("jobs: prune retentions, batch, pause and max run must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Batch == 0 {
		cfg.Batch = models.DefaultPruneBatch
	}
	if cfg.Pause == 0 {
		cfg.Pause = DefaultPrunePause
	}
	if cfg.MaxRun == 0 {
		cfg.MaxRun = DefaultPruneMaxRun
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &PruneOperations{cfg: cfg}, nil
}

// Routes is operations:prune.
func (p *PruneOperations) Routes() []Route { return []Route{{queue.TypeOperationsPrune, p}} }

// PruneReport is what one run did, per table.
type PruneReport struct {
	Operations, Audit PruneTableReport
}

// PruneTableReport is one table's share of a run: rows deleted, statements
// run, the longest single statement and the time spent (pauses included).
type PruneTableReport struct {
	Deleted    int64
	Statements int
	Longest    time.Duration
	Elapsed    time.Duration
	// Complete is false when the run stopped (MaxRun, ctx) before the table
	// had nothing left older than its retention.
	Complete bool
}

// RowsPerSecond is the deletion rate over the run's wall time, pauses included.
func (r PruneTableReport) RowsPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Deleted) / r.Elapsed.Seconds()
}

// ProcessTask runs one prune.
func (p *PruneOperations) ProcessTask(ctx context.Context, _ *asynq.Task) error {
	_, err := p.Run(ctx)
	return err
}

// Run prunes operations, then audit rows, until nothing is left older than
// the retentions, MaxRun passes or ctx ends; it logs what it did. A run cut
// short is not an error: the next one goes on where it stopped.
func (p *PruneOperations) Run(ctx context.Context) (PruneReport, error) {
	var rep PruneReport
	deadline := time.Now().Add(p.cfg.MaxRun)
	now := p.cfg.Now()
	var errs []error
	if p.cfg.Operations > 0 {
		var err error
		rep.Operations, err = p.batches(ctx, deadline, now.Add(-p.cfg.Operations), p.cfg.Store.PruneOperations)
		errs = append(errs, err)
		p.log(ctx, "operations", p.cfg.Operations, rep.Operations)
	}
	if p.cfg.Audit > 0 {
		var err error
		rep.Audit, err = p.batches(ctx, deadline, now.Add(-p.cfg.Audit), p.cfg.Store.PruneAuditLogs)
		errs = append(errs, err)
		p.log(ctx, "audit_logs", p.cfg.Audit, rep.Audit)
	}
	return rep, errors.Join(errs...)
}

// batches runs prune until it deletes fewer than Batch rows, the deadline
// passes or ctx ends, pausing between statements.
func (p *PruneOperations) batches(ctx context.Context, deadline, cutoff time.Time,
	prune func(context.Context, time.Time, int) (int64, error)) (PruneTableReport, error) {
	var r PruneTableReport
	start := time.Now()
	for {
		t0 := time.Now()
		n, err := prune(ctx, cutoff, p.cfg.Batch)
		d := time.Since(t0)
		r.Statements++
		r.Longest = max(r.Longest, d)
		r.Deleted += n
		if err != nil {
			r.Elapsed = time.Since(start)
			return r, err
		}
		if n < int64(p.cfg.Batch) {
			r.Complete = true
			r.Elapsed = time.Since(start)
			return r, nil
		}
		if time.Now().After(deadline) {
			r.Elapsed = time.Since(start)
			return r, nil
		}
		select {
		case <-ctx.Done():
			r.Elapsed = time.Since(start)
			return r, nil
		case <-time.After(p.cfg.Pause):
		}
	}
}

func (p *PruneOperations) log(ctx context.Context, table string, retention time.Duration, r PruneTableReport) {
	if r.Deleted == 0 && r.Complete {
		return
	}
	p.cfg.Logger.InfoContext(ctx, "pruned rows older than the retention", "table", table,
		"retention", retention.String(), "deleted", r.Deleted, "statements", r.Statements,
		"longest_statement", r.Longest.String(), "rows_per_second", int64(r.RowsPerSecond()), "complete", r.Complete)
}
