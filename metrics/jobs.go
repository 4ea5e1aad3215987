package metrics

import "time"

// Job outcome labels of chom_queue_jobs_total.
const (
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	// JobDeferred is an attempt put off before it reached its server (an open
	// per-VPS breaker or a full concurrency limit): not a failure, no retry
	// spent, the task runs again shortly.
	JobDeferred = "deferred"
)

// QueueUnknown is the queue label of a task whose queue the worker could not
// tell (never the case inside an asynq server).
const QueueUnknown = "unknown"

// ObserveJob records one finished task attempt of taskType on queue, which took
// d; a non-nil err is a failed attempt (whatever asynq then does with it: retry,
// archive or nothing).
func (m *Metrics) ObserveJob(queue, taskType string, d time.Duration, err error) {
	if queue == "" {
		queue = QueueUnknown
	}
	status := JobSucceeded
	if err != nil {
		status = JobFailed
		m.jobsFailed.WithLabelValues(queue).Inc()
	}
	m.jobs.WithLabelValues(queue, taskType, status).Inc()
	m.jobDuration.WithLabelValues(queue, taskType).Observe(d.Seconds())
}

// ObserveDeferred records one task attempt of taskType on queue that was put
// off after d (status deferred); it does not count as failed.
func (m *Metrics) ObserveDeferred(queue, taskType string, d time.Duration) {
	if queue == "" {
		queue = QueueUnknown
	}
	m.jobs.WithLabelValues(queue, taskType, JobDeferred).Inc()
	m.jobDuration.WithLabelValues(queue, taskType).Observe(d.Seconds())
}

// JobKind is a task type and the queue its tasks are enqueued on (package
// queue's task contract).
type JobKind struct {
	Queue, Type string
}

// InitJobs creates, at zero, the series a worker documents for every kind:
// chom_queue_jobs_total{queue,type,status} for each status (succeeded, failed,
// deferred), chom_queue_jobs_duration_seconds{queue,type} and
// chom_queue_jobs_failed_total{queue}, so that rates and failure ratios read 0
// from the first scrape rather than nothing until a task of that kind has run.
// The documented label values are those of kinds: the caller passes the task
// types of the queue package with their queues (the metrics package imports no
// CHOM package). A task of another type or queue still gets its series on first
// use. A nil Metrics does nothing.
func (m *Metrics) InitJobs(kinds []JobKind) {
	if m == nil {
		return
	}
	for _, k := range kinds {
		q := k.Queue
		if q == "" {
			q = QueueUnknown
		}
		for _, status := range []string{JobSucceeded, JobFailed, JobDeferred} {
			m.jobs.WithLabelValues(q, k.Type, status)
		}
		m.jobDuration.WithLabelValues(q, k.Type)
		m.jobsFailed.WithLabelValues(q)
	}
}
