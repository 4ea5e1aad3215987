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
