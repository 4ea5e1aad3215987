// Package jobs holds one handler per task family: the pure job logic, with every
// dependency injected. Handlers are idempotent: a task may run twice (a worker killed
// mid-job, a lease that expired), so every step checks what is already done, an
// operation's status only moves forward, and a failure after the last retry undoes
// what the job created.
//
// Failures are classified (see STYLE.md): a permanent one wraps asynq.SkipRetry, and
// everything else is returned for asynq's backoff.
package jobs
