package metrics

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// QueueDepth is one queue's state as the asynq inspector reports it.
type QueueDepth struct {
	Queue                            string
	Pending, Active, Retry, Archived int
	// Latency is the age of the oldest pending task, zero when none waits.
	Latency time.Duration
}

// QueueDepthsFunc reads the depth of the queues, honouring ctx. cmd/chom adapts
// queue.Inspector.Depths to it.
type QueueDepthsFunc func(ctx context.Context) ([]QueueDepth, error)

// errInspectBusy is a scrape that came while the previous inspection still ran.
var errInspectBusy = errors.New("metrics: previous queue inspection still running")

// TrackQueues makes every scrape read the queues through fn (bounded by a short
// timeout) and report chom_queue_jobs_{pending,active,retry,archived}{queue} and
// chom_queue_latency_seconds{queue} for each of queues (zeros for one fn does not
// mention). A failed or slow read leaves those series out of that scrape and
// counts chom_queue_inspect_errors_total; the scrape itself succeeds. It also
// creates chom_queue_jobs_failed_total at zero for each queue. ctx bounds every
// read (the process's lifetime). A later call replaces the earlier one.
func (m *Metrics) TrackQueues(ctx context.Context, queues []string, fn QueueDepthsFunc) {
	for _, q := range queues {
		m.jobsFailed.WithLabelValues(q)
	}
	m.queues.src.Store(&queueSource{ctx: ctx, queues: slices.Clone(queues), fn: fn})
}

type queueSource struct {
	ctx    context.Context
	queues []string
	fn     QueueDepthsFunc
}

type queueCollector struct {
	src     atomic.Pointer[queueSource]
	timeout time.Duration
	busy    atomic.Bool
	errors  atomic.Uint64

	pending, active, retry, archived, latency, errDesc *prometheus.Desc
}

func newQueueCollector() *queueCollector {
	q := []string{"queue"}
	return &queueCollector{
		timeout:  scrapeTimeout,
		pending:  prometheus.NewDesc("chom_queue_jobs_pending", "Tasks waiting to run, by queue (at scrape time).", q, nil),
		active:   prometheus.NewDesc("chom_queue_jobs_active", "Tasks running now, by queue.", q, nil),
		retry:    prometheus.NewDesc("chom_queue_jobs_retry", "Tasks waiting for their next attempt after a failure, by queue.", q, nil),
		archived: prometheus.NewDesc("chom_queue_jobs_archived", "Dead tasks: out of retries or refused (SkipRetry), by queue.", q, nil),
		latency:  prometheus.NewDesc("chom_queue_latency_seconds", "Age of the oldest pending task, by queue; 0 when none waits.", q, nil),
		errDesc: prometheus.NewDesc("chom_queue_inspect_errors_total",
			"Scrapes whose queue inspection failed or timed out (their queue gauges are missing).", nil, nil),
	}
}

func (c *queueCollector) familyNames() []string {
	return []string{"chom_queue_jobs_pending", "chom_queue_jobs_active", "chom_queue_jobs_retry",
		"chom_queue_jobs_archived", "chom_queue_latency_seconds", "chom_queue_inspect_errors_total"}
}

// Describe implements prometheus.Collector.
func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.active, c.retry, c.archived, c.latency, c.errDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one inspection per scrape.
func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.src.Load()
	if src == nil {
		return
	}
	depths, err := c.inspect(src)
	if err != nil {
		c.errors.Add(1)
	} else {
		for _, q := range src.queues {
			var d QueueDepth
			if i := slices.IndexFunc(depths, func(d QueueDepth) bool { return d.Queue == q }); i >= 0 {
				d = depths[i]
			}
			ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(d.Pending), q)
			ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(d.Active), q)
			ch <- prometheus.MustNewConstMetric(c.retry, prometheus.GaugeValue, float64(d.Retry), q)
			ch <- prometheus.MustNewConstMetric(c.archived, prometheus.GaugeValue, float64(d.Archived), q)
			ch <- prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue, d.Latency.Seconds(), q)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.errDesc, prometheus.CounterValue, float64(c.errors.Load()))
}

// inspect runs src.fn with the timeout. fn may ignore its ctx (asynq's inspector
// takes none), so it runs aside and a slow one is abandoned; while it still runs,
// later scrapes do not start another (they report an error instead), so a hung
// Redis cannot pile up goroutines.
func (c *queueCollector) inspect(src *queueSource) ([]QueueDepth, error) {
	if !c.busy.CompareAndSwap(false, true) {
		return nil, errInspectBusy
	}
	// The deadline ends an abandoned fn's context by itself; returning early
	// (fn done) cancels it here, never in the goroutine, so a finished read can
	// never look like a timeout.
	ctx, cancel := context.WithTimeout(src.ctx, c.timeout)
	defer cancel()
	type result struct {
		depths []QueueDepth
		err    error
	}
	done := make(chan result, 1)
	go func() {
		d, err := src.fn(ctx)
		// Free the slot before handing the result over: a scrape that follows
		// this one at once must not find the inspection still "busy".
		c.busy.Store(false)
		done <- result{d, err}
	}()
	select {
	case r := <-done:
		return r.depths, r.err
	case <-ctx.Done():
		select {
		case r := <-done: // finished just as the deadline passed
			return r.depths, r.err
		default:
			return nil, ctx.Err()
		}
	}
}
