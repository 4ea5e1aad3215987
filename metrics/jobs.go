package metrics

import "time"

// Job outcome labels of chom_queue_jobs_total.
const (
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
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
