// Command history-prune runs the operation prune (jobs.PruneOperations, the
// code operations:prune runs) against the database in CHOM_PRUNE_DB and prints,
// per table, rows deleted, statements, the longest statement and rows per
// second. scripts/load/history.sh runs it with PRUNE=1 after loading history.
//
// Each table gets its own run bounded by CHOM_PRUNE_MAX_RUN (a Go duration,
// default 1h), operations first, then audit rows, so a bounded sample over a
// long history measures both; a run cut short says so ("incomplete"). Both
// retentions are the operations' default (30 days), so the audit rows of the
// loaded history are prunable too.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "history-prune:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	maxRun := time.Hour
	if v := os.Getenv("CHOM_PRUNE_MAX_RUN"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("CHOM_PRUNE_MAX_RUN %q: want a positive duration", v)
		}
		maxRun = d
	}
	db, err := models.Open(ctx, os.Getenv("CHOM_PRUNE_DB"), models.PoolConfig{})
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		return err
	}
	for _, t := range []struct {
		name              string
		operations, audit time.Duration
	}{
		{"operations", jobs.DefaultOperationRetention, 0},
		{"audit_logs", 0, jobs.DefaultOperationRetention},
	} {
		p, err := jobs.NewPruneOperations(jobs.RetentionConfig{Store: store, Logger: slog.New(slog.DiscardHandler),
			Operations: t.operations, Audit: t.audit, MaxRun: maxRun})
		if err != nil {
			return err
		}
		rep, err := p.Run(ctx)
		r := rep.Operations
		if t.audit > 0 {
			r = rep.Audit
		}
		state := "complete"
		if !r.Complete {
			state = "incomplete (max run " + maxRun.String() + ")"
		}
		fmt.Printf("prune %-10s: %d rows in %d statements of at most %d (50 ms apart), %.1f s, %.0f rows/s, longest statement %s; %s\n",
			t.name, r.Deleted, r.Statements, models.DefaultPruneBatch, r.Elapsed.Seconds(), r.RowsPerSecond(), r.Longest.Round(time.Millisecond), state)
		if err != nil {
			return fmt.Errorf("prune %s: %w", t.name, err)
		}
	}
	return nil
}
