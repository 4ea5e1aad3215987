package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// recorder is a Commit that records its batches and may be held.
type recorder struct {
	mu      sync.Mutex
	batches [][]int
	hold    chan struct{} // when set, each Commit waits on it
	entered chan int      // when set, told each Commit's size on entry
	fail    func([]int) error
}

func (r *recorder) commit(ctx context.Context, batch []int) ([]Result[string], error) {
	if r.entered != nil {
		r.entered <- len(batch)
	}
	if r.hold != nil {
		select {
		case <-r.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r.mu.Lock()
	r.batches = append(r.batches, slices.Clone(batch))
	r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(batch); err != nil {
			return nil, err
		}
	}
	out := make([]Result[string], len(batch))
	for i, v := range batch {
		out[i].Value = fmt.Sprint("v", v)
	}
	return out, nil
}

func (r *recorder) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []int
	for _, b := range r.batches {
		s = append(s, len(b))
	}
	return s
}

func newBatcher(t *testing.T, cfg Config[int, string]) *Batcher[int, string] {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// idle waits until every committer of b has ended.
func idle(t *testing.T, b *Batcher[int, string]) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		n, w := b.running, len(b.waiting)
		b.mu.Unlock()
		if n == 0 && w == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("batcher not idle: %d committers, %d waiting", n, w)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLoneItemCommitsAtOnce(t *testing.T) {
	r := &recorder{}
	b := newBatcher(t, Config[int, string]{Commit: r.commit})
	v, err := b.Submit(context.Background(), 7)
	if err != nil || v != "v7" {
		t.Fatalf("Submit = %q, %v; want v7", v, err)
	}
	idle(t, b)
	if got := r.sizes(); !slices.Equal(got, []int{1}) {
		t.Fatalf("batches %v, want [1]", got)
	}
}

// What arrives while a commit is in flight forms the next batch, at most
// MaxBatch at a time, and every caller gets its own answer.
func TestItemsArrivingDuringACommitShareTheNext(t *testing.T) {
	r := &recorder{hold: make(chan struct{}), entered: make(chan int, 10)}
	b := newBatcher(t, Config[int, string]{Commit: r.commit, MaxBatch: 4})
	var wg sync.WaitGroup
	answers := make([]string, 11)
	submit := func(i int) {
		defer wg.Done()
		v, err := b.Submit(context.Background(), i)
		if err != nil {
			t.Errorf("Submit(%d): %v", i, err)
		}
		answers[i] = v
	}
	wg.Add(1)
	go submit(0)
	if n := <-r.entered; n != 1 {
		t.Fatalf("first commit took %d items, want 1", n)
	}
	for i := 1; i <= 10; i++ {
		wg.Add(1)
		go submit(i)
	}
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.waiting) == 10 })
	close(r.hold)
	wg.Wait()
	idle(t, b)
	if got := r.sizes(); !slices.Equal(got, []int{1, 4, 4, 2}) {
		t.Fatalf("batches %v, want [1 4 4 2]", got)
	}
	for i, v := range answers {
		if v != fmt.Sprint("v", i) {
			t.Fatalf("item %d answered %q", i, v)
		}
	}
}

// A batch that fails as a whole is committed item by item, so one bad item
// fails alone.
func TestFailedBatchIsCommittedItemByItem(t *testing.T) {
	bad := errors.New("item 3 is bad")
	r := &recorder{hold: make(chan struct{}), entered: make(chan int, 10), fail: func(batch []int) error {
		if slices.Contains(batch, 3) {
			return bad
		}
		return nil
	}}
	var failed []int
	var one []int
	var mu sync.Mutex
	b := newBatcher(t, Config[int, string]{Commit: r.commit,
		CommitOne: func(_ context.Context, v int) (string, error) {
			mu.Lock()
			one = append(one, v)
			mu.Unlock()
			if v == 3 {
				return "", bad
			}
			return fmt.Sprint("alone", v), nil
		},
		OnBatchError: func(size int, err error) { failed = append(failed, size) },
	})
	var wg sync.WaitGroup
	got := map[int]string{}
	errs := map[int]error{}
	var gmu sync.Mutex
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := b.Submit(context.Background(), i)
			gmu.Lock()
			got[i], errs[i] = v, err
			gmu.Unlock()
		}()
		if i == 0 {
			<-r.entered // the others queue behind the first commit
		}
	}
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.waiting) == 4 })
	close(r.hold)
	wg.Wait()
	if !errors.Is(errs[3], bad) {
		t.Fatalf("item 3: %v, want its own error", errs[3])
	}
	for _, i := range []int{1, 2, 4} {
		if errs[i] != nil || got[i] != fmt.Sprint("alone", i) {
			t.Fatalf("item %d: %q, %v; want committed alone", i, got[i], errs[i])
		}
	}
	if got[0] != "v0" || !slices.Equal(failed, []int{4}) {
		t.Fatalf("item 0 %q, failed batches %v; want v0 and [4]", got[0], failed)
	}
	slices.Sort(one)
	if !slices.Equal(one, []int{1, 2, 3, 4}) {
		t.Fatalf("committed alone: %v", one)
	}
}

// A caller whose context ends before a committer takes its item gets the
// context's error, and its item is never committed.
func TestCallerLeavingBeforeItsBatchCommitsNothing(t *testing.T) {
	r := &recorder{hold: make(chan struct{}), entered: make(chan int, 10)}
	b := newBatcher(t, Config[int, string]{Commit: r.commit})
	first := make(chan error, 1)
	go func() { _, err := b.Submit(context.Background(), 1); first <- err }()
	<-r.entered
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() { _, err := b.Submit(ctx, 2); left <- err }()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.waiting) == 1 })
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("left caller: %v, want context.Canceled", err)
	}
	close(r.hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	idle(t, b)
	if got := r.sizes(); !slices.Equal(got, []int{1}) {
		t.Fatalf("batches %v: the left item was committed", got)
	}
	if _, err := b.Submit(ctx, 3); !errors.Is(err, context.Canceled) {
		t.Fatalf("Submit with an ended context: %v", err)
	}
}

// Once taken, a caller waits for the commit whatever its context does,
// unless Detach.
func TestTakenItemIsWaitedForUnlessDetached(t *testing.T) {
	for _, detach := range []bool{false, true} {
		t.Run(fmt.Sprint("detach=", detach), func(t *testing.T) {
			r := &recorder{hold: make(chan struct{}), entered: make(chan int, 10)}
			b := newBatcher(t, Config[int, string]{Commit: r.commit, Detach: detach})
			ctx, cancel := context.WithCancel(context.Background())
			type answer struct {
				v   string
				err error
			}
			got := make(chan answer, 1)
			go func() { v, err := b.Submit(ctx, 5); got <- answer{v, err} }()
			<-r.entered
			cancel()
			if detach {
				select {
				case a := <-got:
					if !errors.Is(a.err, context.Canceled) {
						t.Fatalf("detached caller: %q, %v; want context.Canceled", a.v, a.err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("a detached caller still waits for its commit after its context ended")
				}
				close(r.hold)
			} else {
				select {
				case a := <-got:
					t.Fatalf("caller left a committing item: %q, %v", a.v, a.err)
				case <-time.After(50 * time.Millisecond):
				}
				close(r.hold)
				if a := <-got; a.err != nil || a.v != "v5" {
					t.Fatalf("caller: %q, %v; want v5", a.v, a.err)
				}
			}
			idle(t, b)
			if got := r.sizes(); !slices.Equal(got, []int{1}) {
				t.Fatalf("batches %v, want the item committed once", got)
			}
		})
	}
}

func TestCommittersRunInParallel(t *testing.T) {
	r := &recorder{hold: make(chan struct{}), entered: make(chan int, 10)}
	b := newBatcher(t, Config[int, string]{Commit: r.commit, Committers: 2})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = b.Submit(context.Background(), i) }()
		if i < 2 {
			<-r.entered // two commits in flight at once
		}
	}
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.waiting) == 1 })
	close(r.hold)
	wg.Wait()
	idle(t, b)
	if got := r.sizes(); !slices.Equal(got, []int{1, 1, 1}) {
		t.Fatalf("batches %v, want [1 1 1]", got)
	}
}

// MaxWait gathers items that arrive within it; a full batch does not wait.
func TestMaxWaitGathersAndAFullBatchGoesAtOnce(t *testing.T) {
	r := &recorder{}
	b := newBatcher(t, Config[int, string]{Commit: r.commit, MaxWait: time.Hour, MaxBatch: 3})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = b.Submit(context.Background(), i) }()
	}
	wg.Wait() // would hang for an hour if a full batch waited
	idle(t, b)
	if got := r.sizes(); !slices.Equal(got, []int{3}) {
		t.Fatalf("batches %v, want [3]", got)
	}

	// A lone item waits (here up to an hour) for the batch to fill.
	r2 := &recorder{}
	b2 := newBatcher(t, Config[int, string]{Commit: r2.commit, MaxWait: time.Hour, MaxBatch: 2})
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = b2.Submit(context.Background(), 1) }()
	waitFor(t, func() bool { b2.mu.Lock(); defer b2.mu.Unlock(); return b2.running == 1 })
	time.Sleep(20 * time.Millisecond)
	if got := r2.sizes(); len(got) != 0 {
		t.Fatalf("batches %v before the wait ended or the batch filled", got)
	}
	go func() { defer wg.Done(); _, _ = b2.Submit(context.Background(), 2) }()
	wg.Wait()
	if got := r2.sizes(); !slices.Equal(got, []int{2}) {
		t.Fatalf("batches %v, want [2]", got)
	}
}

func TestCommitAnsweringTheWrongCountFailsTheBatch(t *testing.T) {
	b := newBatcher(t, Config[int, string]{Commit: func(context.Context, []int) ([]Result[string], error) {
		return nil, nil
	}})
	if _, err := b.Submit(context.Background(), 1); err == nil {
		t.Fatal("a Commit that answered no item: no error")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config[int, string]{}); err == nil {
		t.Fatal("no Commit: no error")
	}
	r := &recorder{}
	if _, err := New(Config[int, string]{Commit: r.commit, MaxWait: -time.Second}); err == nil {
		t.Fatal("negative MaxWait: no error")
	}
}

// Many callers at once: every item answered once, its own answer, and no
// committer left running.
func TestManyCallers(t *testing.T) {
	var committed sync.Map
	b := newBatcher(t, Config[int, string]{MaxBatch: 16, Committers: 2,
		Commit: func(_ context.Context, batch []int) ([]Result[string], error) {
			out := make([]Result[string], len(batch))
			for i, v := range batch {
				if _, dup := committed.LoadOrStore(v, true); dup {
					return nil, fmt.Errorf("item %d committed twice", v)
				}
				out[i].Value = fmt.Sprint("v", v)
			}
			return out, nil
		}})
	var wg sync.WaitGroup
	for i := 0; i < 2000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := b.Submit(context.Background(), i)
			if err != nil || v != fmt.Sprint("v", i) {
				t.Errorf("item %d: %q, %v", i, v, err)
			}
		}()
	}
	wg.Wait()
	idle(t, b)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// Send returns before its item is committed, even from a cancelled context,
// and the items sent while a commit is in flight go together in the next.
func TestSendDoesNotWait(t *testing.T) {
	r := &recorder{hold: make(chan struct{}), entered: make(chan int, 10)}
	b := newBatcher(t, Config[int, string]{Commit: r.commit})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.Send(ctx, 1) // returns although its commit is held
	if n := <-r.entered; n != 1 {
		t.Fatalf("first commit took %d items, want 1", n)
	}
	for i := 2; i <= 4; i++ {
		b.Send(context.Background(), i)
	}
	if w, c := b.Pending(); w != 3 || c != 1 {
		t.Fatalf("Pending = %d waiting, %d committers; want 3, 1", w, c)
	}
	close(r.hold)
	idle(t, b)
	if got := r.sizes(); !slices.Equal(got, []int{1, 3}) {
		t.Fatalf("batches %v, want [1 3]", got)
	}
}
