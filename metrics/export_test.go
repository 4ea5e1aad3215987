package metrics

import "time"

// SetScrapeTimeout shortens the scrape-time read timeout, for tests.
func SetScrapeTimeout(m *Metrics, d time.Duration) {
	m.queues.timeout = d
	m.statuses.timeout = d
	m.relay.timeout = d
}

// SetStatusClock replaces the clock of the status cache, for tests.
func SetStatusClock(m *Metrics, now func() time.Time) {
	m.statuses.mu.Lock()
	defer m.statuses.mu.Unlock()
	m.statuses.now = now
}
