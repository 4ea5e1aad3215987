package jobs

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/chomhq/chom/drivers"
)

// progressEvery is how often, at most, a provision records its driver's
// progress and looks for a cancel between steps. A driver over SSH takes
// seconds per step, so every step is recorded as it ends; one whose steps
// take microseconds (a converged site) would otherwise spend a committed
// write and a read per step that no poller can see. A step ended sooner
// than this after the last record is recorded later, when this time has
// passed, if the job is still at work then (so a job stuck at a step shows
// how far it got), and never if the job finished first: its success writes
// 100. A cancel not seen between steps is still honoured: the success
// refuses to commit when one was asked (models.ErrCancelRequested).
const progressEvery = 250 * time.Millisecond

// progressRecorder is the ProgressFunc of one provision delivery.
type progressRecorder struct {
	ctx  context.Context
	d    Deps
	log  *slog.Logger
	opID string

	mu      sync.Mutex
	last    time.Time   // last record or cancel check (the start's)
	pending int         // progress not yet recorded; 0 for none
	timer   *time.Timer // records pending once progressEvery has passed
	stopped bool
	flushes sync.WaitGroup // a timer that may still run
}

// newProgressRecorder returns the recorder of a delivery that has just read
// the operation (its cancel state) and recorded its start.
func newProgressRecorder(ctx context.Context, d Deps, log *slog.Logger, opID string) *progressRecorder {
	return &progressRecorder{ctx: ctx, d: d, log: log, opID: opID, last: time.Now()}
}

// step is called by the driver after each step: it records the step's
// progress and returns errCancelled when a cancel was asked, unless the last
// record is younger than progressEvery (then the progress waits for the
// timer, see progressEvery).
func (r *progressRecorder) step(ctx context.Context, step drivers.Step) error {
	pct := placementProgress + step.Progress*(100-placementProgress)/100
	if pct >= 100 {
		pct = 99 // 100 is written with the success itself
	}
	r.log.DebugContext(ctx, "provision step done", "step", step.Name, "progress", pct)
	r.mu.Lock()
	if wait := progressEvery - time.Since(r.last); wait > 0 {
		r.pending = max(r.pending, pct)
		if r.timer == nil && !r.stopped {
			r.flushes.Add(1)
			r.timer = time.AfterFunc(wait, r.flush)
		}
		r.mu.Unlock()
		return nil
	}
	r.pending = 0 // pct is at least what waits
	r.last = time.Now()
	r.mu.Unlock()
	cancelled, err := r.d.Store.CancelRequested(ctx, r.opID)
	if err != nil {
		return err
	}
	if cancelled {
		return errCancelled
	}
	if err := r.d.Store.SetProgress(ctx, r.opID, pct); err != nil {
		return err
	}
	r.d.Notifier.OperationChanged(ctx, r.opID)
	return nil
}

// flush records the progress that waited, if the delivery is still at work.
// Progress only grows (Store.SetProgress), so it may race with step.
func (r *progressRecorder) flush() {
	defer r.flushes.Done()
	r.mu.Lock()
	pct := r.pending
	r.pending, r.timer = 0, nil
	if r.stopped || pct == 0 {
		r.mu.Unlock()
		return
	}
	r.last = time.Now()
	r.mu.Unlock()
	if err := r.d.Store.SetProgress(r.ctx, r.opID, pct); err != nil {
		r.log.DebugContext(r.ctx, "could not record provision progress", "progress", pct, "error", err)
		return
	}
	r.d.Notifier.OperationChanged(r.ctx, r.opID)
}

// stop ends the recording when the driver returned: progress that still
// waits is dropped (the success or failure that follows says more), and a
// record under way is waited for, so nothing writes after the delivery.
func (r *progressRecorder) stop() {
	r.mu.Lock()
	r.stopped = true
	if r.timer != nil && r.timer.Stop() {
		r.flushes.Done() // it will never run
	}
	r.timer = nil
	r.mu.Unlock()
	r.flushes.Wait()
}
