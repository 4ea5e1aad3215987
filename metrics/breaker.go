package metrics

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// BreakerState maps a circuit breaker state name (as gobreaker's State.String
// spells it) to the value of chom_circuit_breaker_state: 0 closed, 1 half-open,
// 2 open; ok is false for anything else.
func BreakerState(state string) (v float64, ok bool) {
	switch state {
	case "closed":
		return 0, true
	case "half-open":
		return 1, true
	case "open":
		return 2, true
	}
	return 0, false
}

// TrackBreaker reports the breaker called name as
// chom_circuit_breaker_state{breaker=name}, reading state() at each scrape
// ("closed", "half-open" or "open"; other values are left out). A nil state
// removes it. state must be cheap and safe for concurrent use. Call it for each
// breaker a component owns (the relay's is "kafka"; per-VPS ones can follow).
func (m *Metrics) TrackBreaker(name string, state func() string) {
	b := m.breakers
	b.mu.Lock()
	defer b.mu.Unlock()
	if state == nil {
		delete(b.states, name)
		return
	}
	b.states[name] = state
}

type breakerCollector struct {
	desc   *prometheus.Desc
	mu     sync.RWMutex
	states map[string]func() string
	bulk   func() map[string]string // TrackBreakers; nil when none
}

func newBreakerCollector() *breakerCollector {
	return &breakerCollector{
		desc: prometheus.NewDesc("chom_circuit_breaker_state",
			"State of a circuit breaker: 0 closed, 1 half-open, 2 open.", []string{"breaker"}, nil),
		states: make(map[string]func() string),
	}
}

func (c *breakerCollector) familyNames() []string { return []string{"chom_circuit_breaker_state"} }

// Describe implements prometheus.Collector.
func (c *breakerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *breakerCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.RLock()
	names := make([]string, 0, len(c.states))
	for n := range c.states {
		names = append(names, n)
	}
	fns := make([]func() string, len(names))
	slices.Sort(names)
	for i, n := range names {
		fns[i] = c.states[n]
	}
	bulk := c.bulk
	c.mu.RUnlock()
	for i, n := range names {
		if v, ok := BreakerState(fns[i]()); ok {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, n)
		}
	}
	if bulk == nil {
		return
	}
	for n, state := range bulk() {
		if _, dup := slices.BinarySearch(names, n); dup {
			continue
		}
		if v, ok := BreakerState(state); ok {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, n)
		}
	}
}
