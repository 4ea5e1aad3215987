package stack

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The probe targets follow CHOM_LISTEN and CHOM_METRICS_LISTEN, wildcard
// hosts becoming loopback, "off" dropping the metrics listeners.
func TestHealthURLs(t *testing.T) {
	t.Parallel()
	defaults := []string{
		"http://127.0.0.1:8080/api/v1/health",
		"http://127.0.0.1:9464/health", "http://127.0.0.1:9465/health",
		"http://127.0.0.1:9466/health", "http://127.0.0.1:9467/health",
	}
	for _, c := range []struct {
		env  map[string]string
		want []string
	}{
		{nil, defaults},
		{map[string]string{"CHOM_LISTEN": "10.0.0.5:9000", "CHOM_METRICS_LISTEN": "off"}, []string{"http://10.0.0.5:9000/api/v1/health"}},
		{map[string]string{"CHOM_LISTEN": "[::]:8081", "CHOM_METRICS_LISTEN": "0.0.0.0:9100"},
			[]string{"http://127.0.0.1:8081/api/v1/health", "http://127.0.0.1:9100/health"}},
	} {
		cfg, err := LoadConfig(func(k string) string { return c.env[k] })
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(c.want, HealthURLs(cfg)); diff != "" {
			t.Errorf("HealthURLs(%v) (-want +got):\n%s", c.env, diff)
		}
	}
}
