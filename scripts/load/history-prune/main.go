// Command history-prune runs the operation prune (jobs.PruneOperations, the
// code operations:prune runs) once against the database in CHOM_PRUNE_DB and
// prints rows deleted, statements, the longest statement and rows per second.
// scripts/load/history.sh runs it with PRUNE=1 after loading history.
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
	db, err := models.Open(ctx, os.Getenv("CHOM_PRUNE_DB"), models.PoolConfig{})
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		return err
	}
	p, err := jobs.NewPruneOperations(jobs.RetentionConfig{Store: store, Logger: slog.New(slog.DiscardHandler),
		Operations: jobs.DefaultOperationRetention, Audit: jobs.DefaultOperationRetention, MaxRun: time.Hour})
	if err != nil {
		return err
	}
	rep, err := p.Run(ctx)
	for _, t := range []struct {
		name string
		r    jobs.PruneTableReport
	}{{"operations", rep.Operations}, {"audit_logs", rep.Audit}} {
		fmt.Printf("prune %-10s: %d rows in %d statements of at most %d (50 ms apart), %.1f s, %.0f rows/s, longest statement %s\n",
			t.name, t.r.Deleted, t.r.Statements, models.DefaultPruneBatch, t.r.Elapsed.Seconds(), t.r.RowsPerSecond(), t.r.Longest.Round(time.Millisecond))
	}
	return err
}
