package healthcheck

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// One endpoint answering 200 is enough; the others' failures are reported
// only when none answers.
func TestProbe(t *testing.T) {
	t.Parallel()
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"status":"ok"}`)) }))
	defer ok.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer down.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL + "/health"
	closed.Close()

	got, err := Probe(t.Context(), Config{URLs: []string{closedURL, down.URL, ok.URL + "/health"}})
	if err != nil || got != ok.URL+"/health" {
		t.Errorf("Probe with one healthy endpoint = %q, %v; want it", got, err)
	}
	_, err = Probe(t.Context(), Config{URLs: []string{closedURL, down.URL}})
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), closedURL) {
		t.Errorf("Probe with none healthy = %v; want an error naming each endpoint's outcome", err)
	}
	if _, err := Probe(t.Context(), Config{}); err == nil {
		t.Error("Probe with no URL succeeded")
	}
}

// A hung endpoint fails the probe at the timeout instead of hanging it.
func TestProbeTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer hung.Close()
	defer close(release)
	start := time.Now()
	if _, err := Probe(t.Context(), Config{URLs: []string{hung.URL}, Timeout: 200 * time.Millisecond}); err == nil {
		t.Fatal("a hung endpoint passed")
	}
	t.Logf("a hung endpoint failed the probe after %s (timeout 200ms)", time.Since(start).Round(time.Millisecond))
}
