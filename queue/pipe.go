package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chomhq/chom/internal/groupcommit"
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
// Batching is internal/groupcommit's: no timer and no goroutine while idle;
// the caller that finds no pipeline in flight starts a committer (a goroutine
// that sends whatever is waiting, then whatever arrived meanwhile, until
// nothing is); everyone else waits for the pipeline their command went into,
// or for their own context to end (groupcommit's Detach): with Redis away a
// pipeline can take the client's whole dial and retry time, and a caller
// behind it must still get its answer within its own timeout (the ingress
// answers 202 within CHOM's enqueue timeout whatever Redis does). One pipeline
// is in flight at a time: Redis runs scripts one after the other anyway.
type scriptPipe struct {
	redis.UniversalClient
	batch *groupcommit.Batcher[*pipedScript, *redis.Cmd]
}

// pipedScript is one EVALSHA or EVAL waiting for its pipeline.
type pipedScript struct {
	ctx    context.Context
	sha    bool   // EVALSHA (else EVAL)
	script string // the script, or its SHA1
	keys   []string
	args   []any
}

func newScriptPipe(rc redis.UniversalClient, max int) *scriptPipe {
	p := &scriptPipe{UniversalClient: rc}
	var err error
	p.batch, err = groupcommit.New(groupcommit.Config[*pipedScript, *redis.Cmd]{
		Commit: p.exec, MaxBatch: max, Detach: true,
	})
	if err != nil {
		panic(fmt.Sprintf("queue: script pipe: %v", err)) // only a negative max, a programming error
	}
	return p
}

// EvalSha runs a script by its SHA1 in the next pipeline.
func (p *scriptPipe) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.submit(ctx, true, sha1, keys, args)
}

// Eval runs a script in the next pipeline.
func (p *scriptPipe) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.submit(ctx, false, script, keys, args)
}

// submit queues one script and waits for its pipeline or for ctx to end,
// whichever comes first. A caller that leaves on ctx is answered ctx's error
// (as go-redis answers a command whose context ended); its script is dropped
// if its pipeline has not left yet, and may still run if it has, which an
// enqueue tolerates (a later enqueue of the same task is a task-ID conflict,
// counted as done).
func (p *scriptPipe) submit(ctx context.Context, sha bool, script string, keys []string, args []any) *redis.Cmd {
	cmd, err := p.batch.Submit(ctx, &pipedScript{ctx: ctx, sha: sha, script: script, keys: keys, args: args})
	if err != nil {
		return failedCmd(ctx, err)
	}
	return cmd
}

func failedCmd(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}

// exec sends one pipeline and answers each script with its command (whose
// error is its own). Scripts whose caller has left are dropped. The pipeline
// runs detached from any one caller's cancellation (the others wait on it
// too) until the latest of their deadlines, so it never outlives everyone
// waiting for it.
func (p *scriptPipe) exec(ctx context.Context, batch []*pipedScript) ([]groupcommit.Result[*redis.Cmd], error) {
	res := make([]groupcommit.Result[*redis.Cmd], len(batch))
	live := make([]int, 0, len(batch))
	var last time.Time
	unbounded := false
	for i, s := range batch {
		if err := s.ctx.Err(); err != nil {
			res[i].Value = failedCmd(s.ctx, err)
			continue
		}
		live = append(live, i)
		if d, ok := s.ctx.Deadline(); !ok {
			unbounded = true
		} else if d.After(last) {
			last = d
		}
	}
	if len(live) == 0 {
		return res, nil
	}
	if !unbounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, last)
		defer cancel()
	}
	// Errors are per command (cmd.Err); Pipelined's own is the first of them.
	_, _ = p.UniversalClient.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, i := range live {
			s := batch[i]
			if s.sha {
				res[i].Value = pipe.EvalSha(ctx, s.script, s.keys, s.args...)
			} else {
				res[i].Value = pipe.Eval(ctx, s.script, s.keys, s.args...)
			}
		}
		return nil
	})
	return res, nil
}
