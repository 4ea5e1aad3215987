package queue

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// maxPipeline is the most scripts one pipeline carries: the whole batch the
// ingress's group commit answers at once (models.DefaultAcceptBatch) fits.
const maxPipeline = 256

// scriptPipe is the Redis client asynq's enqueue runs on: the client it wraps,
// except that scripts (EVALSHA and EVAL, all an asynq enqueue sends after its
// first SADD of the queue's name) wait their turn and go to Redis together, in
// one pipeline, with whatever other scripts were submitted meanwhile. The
// ingress answers a whole group-committed batch of requests at once, and each
// request enqueues its task: one round trip per task cost the ingress a write
// and a read system call each, and Redis as many, which was a quarter of the
// ingress's CPU on the accept path (profile in docs/performance.md).
//
// A pipeline is not a transaction: each script runs and answers alone, as it
// would have without the pipe (a conflict, an error, a NOSCRIPT that Script.Run
// answers with EVAL, all per command). When the connection fails, every command
// of the pipeline gets the error, as a lone command would have, and its caller
// treats it as any failed enqueue (queue.Backlog retries it, the reconciler
// after that); a script that did run before the failure makes the retry a
// task-ID conflict, which Enqueue counts as done.
//
// Batching needs no timer and no goroutine of its own: the caller that finds no
// pipeline in flight starts one (a goroutine that sends whatever is waiting,
// then whatever arrived meanwhile, until nothing is); everyone else waits for
// the pipeline their command went into. One pipeline is in flight at a time:
// Redis runs scripts one after the other anyway.
type scriptPipe struct {
	redis.UniversalClient
	max int

	mu      sync.Mutex
	waiting []*pipedScript
	sending bool // a goroutine is sending pipelines
}

// pipedScript is one EVALSHA or EVAL waiting for its pipeline.
type pipedScript struct {
	ctx    context.Context
	sha    bool   // EVALSHA (else EVAL)
	script string // the script, or its SHA1
	keys   []string
	args   []any
	cmd    *redis.Cmd    // its result, set by the pipeline
	done   chan struct{} // closed when cmd is set
}

func newScriptPipe(rc redis.UniversalClient, max int) *scriptPipe {
	return &scriptPipe{UniversalClient: rc, max: max}
}

// EvalSha runs a script by its SHA1 in the next pipeline.
func (p *scriptPipe) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.submit(ctx, true, sha1, keys, args)
}

// Eval runs a script in the next pipeline.
func (p *scriptPipe) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.submit(ctx, false, script, keys, args)
}

// submit queues one script and waits for its pipeline. Once queued it waits
// for the answer even if ctx ends (the script may be running): the pipeline
// is bounded by the client's read and write timeouts.
func (p *scriptPipe) submit(ctx context.Context, sha bool, script string, keys []string, args []any) *redis.Cmd {
	if err := ctx.Err(); err != nil {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(err)
		return cmd
	}
	s := &pipedScript{ctx: ctx, sha: sha, script: script, keys: keys, args: args, done: make(chan struct{})}
	p.mu.Lock()
	p.waiting = append(p.waiting, s)
	start := !p.sending
	p.sending = true
	p.mu.Unlock()
	if start {
		go p.send()
	}
	<-s.done
	return s.cmd
}

// send sends pipelines until nothing waits.
func (p *scriptPipe) send() {
	for {
		p.mu.Lock()
		n := min(len(p.waiting), p.max)
		if n == 0 {
			p.sending = false
			p.mu.Unlock()
			return
		}
		batch := make([]*pipedScript, n)
		copy(batch, p.waiting)
		p.waiting = append(p.waiting[:0], p.waiting[n:]...)
		p.mu.Unlock()
		p.exec(batch)
	}
}

// exec sends one pipeline and hands each script its result. The pipeline
// runs under the first script's context, detached from its cancellation:
// the others' callers are waiting on it too.
func (p *scriptPipe) exec(batch []*pipedScript) {
	ctx := context.WithoutCancel(batch[0].ctx)
	// Errors are per command (cmd.Err); Pipelined's own is the first of them.
	_, _ = p.UniversalClient.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, s := range batch {
			if s.sha {
				s.cmd = pipe.EvalSha(s.ctx, s.script, s.keys, s.args...)
			} else {
				s.cmd = pipe.Eval(s.ctx, s.script, s.keys, s.args...)
			}
		}
		return nil
	})
	for _, s := range batch {
		close(s.done)
	}
}
