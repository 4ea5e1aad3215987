package jobs_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chomhq/chom/jobs"
)

// fakeRetention deletes from two counters of rows older than any cutoff,
// recording each statement's cutoff and batch.
type fakeRetention struct {
	ops, audit int64
	calls      []string
	cutoffs    map[string]time.Time
}

func (f *fakeRetention) take(table string, left *int64, cutoff time.Time, batch int) int64 {
	f.calls = append(f.calls, table)
	f.cutoffs[table] = cutoff
	n := min(*left, int64(batch))
	*left -= n
	return n
}

func (f *fakeRetention) PruneOperations(_ context.Context, cutoff time.Time, batch int) (int64, error) {
	return f.take("operations", &f.ops, cutoff, batch), nil
}

func (f *fakeRetention) PruneAuditLogs(_ context.Context, cutoff time.Time, batch int) (int64, error) {
	return f.take("audit", &f.audit, cutoff, batch), nil
}

// A run deletes in batches until a statement deletes fewer than the batch,
// operations first then audit rows, each at its own cutoff; MaxRun cuts a
// long run short without an error, and the report says it is incomplete.
func TestPruneOperationsBatches(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name               string
		ops, audit         int64
		opsRet, auditRet   time.Duration
		maxRun             time.Duration
		wantCalls          []string
		wantOps, wantAudit int64
		wantComplete       bool
	}{
		{name: "both", ops: 25, audit: 10, opsRet: 30 * 24 * time.Hour, auditRet: 400 * 24 * time.Hour, maxRun: time.Minute,
			wantCalls: []string{"operations", "operations", "operations", "audit", "audit"}, wantOps: 25, wantAudit: 10, wantComplete: true},
		{name: "exact multiple takes one more statement", ops: 20, opsRet: 30 * 24 * time.Hour, maxRun: time.Minute,
			wantCalls: []string{"operations", "operations", "operations"}, wantOps: 20, wantComplete: true},
		{name: "audit kept forever", ops: 5, audit: 10, opsRet: 30 * 24 * time.Hour, maxRun: time.Minute,
			wantCalls: []string{"operations"}, wantOps: 5, wantComplete: true},
		{name: "max run", ops: 1000, opsRet: 30 * 24 * time.Hour, maxRun: time.Nanosecond,
			wantCalls: []string{"operations"}, wantOps: 10, wantComplete: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRetention{ops: tc.ops, audit: tc.audit, cutoffs: map[string]time.Time{}}
			p, err := jobs.NewPruneOperations(jobs.RetentionConfig{Store: f, Logger: slog.New(slog.DiscardHandler),
				Operations: tc.opsRet, Audit: tc.auditRet, Batch: 10, Pause: time.Millisecond, MaxRun: tc.maxRun,
				Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := p.Run(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.wantCalls, f.calls); diff != "" {
				t.Errorf("statements (-want +got):\n%s", diff)
			}
			if rep.Operations.Deleted != tc.wantOps || rep.Audit.Deleted != tc.wantAudit || rep.Operations.Complete != tc.wantComplete {
				t.Errorf("report = %+v; want %d operations, %d audit rows, complete %v", rep, tc.wantOps, tc.wantAudit, tc.wantComplete)
			}
			if got := f.cutoffs["operations"]; !got.Equal(now.Add(-tc.opsRet)) {
				t.Errorf("operations cutoff %s; want %s", got, now.Add(-tc.opsRet))
			}
			if got, ok := f.cutoffs["audit"]; ok && !got.Equal(now.Add(-tc.auditRet)) {
				t.Errorf("audit cutoff %s; want %s", got, now.Add(-tc.auditRet))
			}
		})
	}
}
