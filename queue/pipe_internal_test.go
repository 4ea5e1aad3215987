package queue

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// pipelineLog is a go-redis hook that records the size of every pipeline
// the client sends and, while hold is set, keeps the next one from leaving
// until hold(its size) returns.
type pipelineLog struct {
	mu    sync.Mutex
	sizes []int
	hold  func(size int)
}

func (l *pipelineLog) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *pipelineLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (l *pipelineLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		l.mu.Lock()
		l.sizes = append(l.sizes, len(cmds))
		hold := l.hold
		l.hold = nil
		l.mu.Unlock()
		if hold != nil {
			hold(len(cmds))
		}
		return next(ctx, cmds)
	}
}

func (l *pipelineLog) Sizes() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.sizes)
}

// waitFor polls until p has n scripts waiting (the first pipeline is held
// meanwhile, so they can only pile up) or fails the test.
func waitFor(t *testing.T, p *scriptPipe, n int) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := p.batch.Pending()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d scripts waiting behind the held pipeline, want %d", got, n)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func pendingIDs(t *testing.T, rc *redis.Client) []string {
	t.Helper()
	ids, err := rc.LRange(t.Context(), "asynq:{"+QueueDefault+"}:pending", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(ids)
	return ids
}

// Concurrent enqueues share pipelines: while one pipeline is in flight the
// others wait and leave together, at most max to a pipeline, and each caller
// still gets its own task's answer: every task is queued once, and a second
// enqueue of the same operation in the same pipeline is a conflict counted as
// done.
func TestEnqueuesShareAPipeline(t *testing.T) {
	t.Parallel()
	db := testenv.Redis(t)
	direct := db.Client(t)
	rc := redis.NewClient(&redis.Options{Addr: db.Addr, DB: db.DB, PoolSize: 8})
	defer rc.Close()
	log := &pipelineLog{}
	rc.AddHook(log)
	const n, max = 200, 64
	pipe := newScriptPipe(rc, max)
	e := &Enqueuer{client: asynq.NewClientFromRedisClient(pipe)}
	// asynq's first enqueue of a queue adds its name to a set, a lone command
	// before its script: do it here so every caller below sends only its script.
	if err := e.EnqueueOperation(t.Context(), &models.Operation{ID: "op_first", TenantID: "ten_1", Type: models.OpTypeSiteProvision}); err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	log.sizes = nil
	ops := make([]*models.Operation, n)
	for i := range ops {
		ops[i] = &models.Operation{ID: fmt.Sprintf("op_pipe_%03d", i), TenantID: "ten_1", Type: models.OpTypeSiteProvision}
	}
	ops = append(ops, ops[7]) // the same operation twice: one task
	// The first pipeline (whatever had arrived when it left) is held until
	// every other script waits behind it.
	log.hold = func(size int) { waitFor(t, pipe, len(ops)-size) }
	log.mu.Unlock()

	errs := make([]error, len(ops))
	var wg sync.WaitGroup
	for i, op := range ops {
		wg.Go(func() { errs[i] = e.EnqueueOperation(t.Context(), op) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("enqueue %s (caller %d): %v", ops[i].ID, i, err)
		}
	}
	queued := []string{"op_first"}
	for _, op := range ops[:n] {
		queued = append(queued, op.ID)
	}
	sort.Strings(queued)
	if diff := cmp.Diff(queued, pendingIDs(t, direct)); diff != "" {
		t.Errorf("pending tasks (-want +got):\n%s", diff)
	}
	// The held pipeline, then the scripts that waited behind it in full
	// pipelines of max, and the rest.
	sizes := log.Sizes()
	if len(sizes) == 0 {
		t.Fatal("no pipeline sent")
	}
	rest := len(ops) - sizes[0]
	want := []int{sizes[0]}
	for ; rest > max; rest -= max {
		want = append(want, max)
	}
	if rest > 0 {
		want = append(want, rest)
	}
	if diff := cmp.Diff(want, sizes); diff != "" || sizes[0] > max {
		t.Errorf("pipeline sizes (-want +got), at most %d each:\n%s", max, diff)
	}
	t.Logf("%d concurrent enqueues went to Redis in %d pipelines: %v", len(ops), len(log.Sizes()), log.Sizes())
}

// A script Redis does not know (after a restart or SCRIPT FLUSH) is sent
// again in full by go-redis's Script.Run; through the pipe too.
func TestEnqueueAfterScriptFlush(t *testing.T) {
	t.Parallel()
	db := testenv.Redis(t)
	direct := db.Client(t)
	e := NewEnqueuer(direct)
	for i, flush := range []bool{false, true} {
		if flush {
			if err := direct.ScriptFlush(t.Context()).Err(); err != nil {
				t.Fatal(err)
			}
		}
		op := &models.Operation{ID: fmt.Sprintf("op_flush_%d", i), TenantID: "ten_1", Type: models.OpTypeSiteProvision}
		if err := e.EnqueueOperation(t.Context(), op); err != nil {
			t.Fatalf("enqueue (scripts flushed: %v): %v", flush, err)
		}
	}
	if diff := cmp.Diff([]string{"op_flush_0", "op_flush_1"}, pendingIDs(t, direct)); diff != "" {
		t.Errorf("pending tasks (-want +got):\n%s", diff)
	}
}

// When Redis does not answer, every caller of the pipeline gets an error
// (none waits forever, none is told its task is queued), and the next
// enqueues work once Redis is back.
func TestPipelineFailsEveryCaller(t *testing.T) {
	t.Parallel()
	db := testenv.Redis(t)
	direct := db.Client(t)
	proxy := testenv.NewProxy(t, db.Addr)
	rc := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: db.DB, MaxRetries: -1,
		DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second})
	defer rc.Close()
	e := NewEnqueuer(rc)
	if err := e.EnqueueOperation(t.Context(), &models.Operation{ID: "op_before", TenantID: "ten_1", Type: models.OpTypeSiteProvision}); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	const n = 50
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			errs[i] = e.EnqueueOperation(ctx, &models.Operation{ID: fmt.Sprintf("op_cut_%02d", i), TenantID: "ten_1", Type: models.OpTypeSiteProvision})
		})
	}
	wg.Wait()
	t.Logf("Redis cut: %d concurrent enqueues all answered within %s", n, time.Since(start).Round(time.Millisecond))
	for i, err := range errs {
		if err == nil {
			t.Errorf("enqueue %d with Redis cut: no error", i)
		}
	}
	t.Logf("the error: %v", errs[0])
	proxy.Restore()
	if err := e.EnqueueOperation(t.Context(), &models.Operation{ID: "op_after", TenantID: "ten_1", Type: models.OpTypeSiteProvision}); err != nil {
		t.Fatalf("enqueue after Redis came back: %v", err)
	}
	for _, id := range pendingIDs(t, direct) {
		if id != "op_before" && id != "op_after" {
			t.Errorf("task %s queued although its enqueue failed", id)
		}
	}
}

// A caller behind a pipeline that does not come back (Redis away: dial and
// retries) gets its answer when its own context ends, not when the pipeline
// does, and its script, not yet sent, is dropped rather than sent late.
func TestEnqueueBehindAStuckPipelineKeepsItsTimeout(t *testing.T) {
	t.Parallel()
	db := testenv.Redis(t)
	direct := db.Client(t)
	rc := redis.NewClient(&redis.Options{Addr: db.Addr, DB: db.DB})
	defer rc.Close()
	log := &pipelineLog{}
	rc.AddHook(log)
	pipe := newScriptPipe(rc, maxPipeline)
	e := &Enqueuer{client: asynq.NewClientFromRedisClient(pipe)}
	if err := e.EnqueueOperation(t.Context(), &models.Operation{ID: "op_first", TenantID: "ten_1", Type: models.OpTypeSiteProvision}); err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	log.mu.Lock()
	log.sizes = nil
	log.hold = func(int) { close(held); <-release }
	log.mu.Unlock()
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	time.AfterFunc(3*time.Second, free) // so that a caller stuck behind it fails the test instead of hanging it

	stuck := make(chan error, 1)
	go func() {
		stuck <- e.EnqueueOperation(t.Context(), &models.Operation{ID: "op_stuck", TenantID: "ten_1", Type: models.OpTypeSiteProvision})
	}()
	<-held // op_stuck's pipeline has left and is held
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := e.EnqueueOperation(ctx, &models.Operation{ID: "op_behind", TenantID: "ten_1", Type: models.OpTypeSiteProvision})
	waited := time.Since(start)
	if err == nil {
		t.Error("enqueue behind a held pipeline, past its deadline: no error")
	}
	t.Logf("behind a held pipeline, a 200ms enqueue answered after %s: %v", waited.Round(time.Millisecond), err)
	if waited > 2*time.Second {
		t.Errorf("the enqueue waited %s for the pipeline ahead of it; its own timeout was 200ms", waited)
	}
	free()
	if err := <-stuck; err != nil {
		t.Fatalf("the held enqueue: %v", err)
	}
	if diff := cmp.Diff([]string{"op_first", "op_stuck"}, pendingIDs(t, direct)); diff != "" {
		t.Errorf("pending tasks (-want +got): the enqueue that gave up must not be sent\n%s", diff)
	}
	// Let the pipe go idle: the given-up script is dropped, nothing else is sent.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, committers := pipe.batch.Pending()
		if committers == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if diff := cmp.Diff([]int{1}, log.Sizes()); diff != "" {
		t.Errorf("pipelines sent (-want +got):\n%s", diff)
	}
}
