package stack

import (
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/queue"
)

// TestRenewalConfig: the renewal sweep's settings parse with their
// defaults, bad values are named, and the scheduler's table has the sweep's
// row every CHOM_CERT_RENEW_INTERVAL, building a certificate:renew_sweep,
// when certificates are on (CHOM_CERT_ENCRYPTION_KEYS), and none when off.
func TestRenewalConfig(t *testing.T) {
	t.Parallel()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	c, err := LoadConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := RenewalSettings{Every: time.Hour, Batch: jobs.DefaultRenewBatch, ARIEvery: jobs.DefaultARIInterval, ARIBatch: jobs.DefaultARIBatch}
	if c.Renewal != want || want.Batch != 100 || want.ARIEvery != 6*time.Hour || want.ARIBatch != 1000 {
		t.Errorf("defaults %+v; want %+v", c.Renewal, want)
	}
	c, err = LoadConfig(env(map[string]string{"CHOM_CERT_RENEW_INTERVAL": "10m", "CHOM_CERT_RENEW_BATCH": "7",
		"CHOM_CERT_ARI_INTERVAL": "0", "CHOM_CERT_ARI_BATCH": "50"}))
	if err != nil || c.Renewal != (RenewalSettings{Every: 10 * time.Minute, Batch: 7, ARIEvery: 0, ARIBatch: 50}) {
		t.Errorf("set: %v, %+v", err, c.Renewal)
	}
	count := func(c Config) int {
		n := 0
		for _, r := range Schedule(c) {
			if r.Name == "certificate_renewal" {
				n++
			}
		}
		return n
	}
	if n := count(c); n != 0 {
		t.Errorf("%d certificate_renewal rows without CHOM_CERT_ENCRYPTION_KEYS (certificates off); want none", n)
	}
	c.ACME.EncryptionKeys = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	found := 0
	for _, r := range Schedule(c) {
		if r.Name != "certificate_renewal" {
			continue
		}
		found++
		task, err := r.NewTask(time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC))
		if err != nil || r.Every != 10*time.Minute || task.Type() != queue.TypeCertificateRenewSweep {
			t.Errorf("row every %v builds %v, %v; want certificate:renew_sweep every 10m", r.Every, task, err)
		}
	}
	if found != 1 {
		t.Errorf("%d certificate_renewal rows in Schedule(); want 1", found)
	}
	for name, kv := range map[string]map[string]string{
		"interval 30s":     {"CHOM_CERT_RENEW_INTERVAL": "30s"},
		"interval hourly":  {"CHOM_CERT_RENEW_INTERVAL": "hourly"},
		"batch 0":          {"CHOM_CERT_RENEW_BATCH": "0"},
		"ari interval 10s": {"CHOM_CERT_ARI_INTERVAL": "10s"},
		"ari negative":     {"CHOM_CERT_ARI_INTERVAL": "-1h"},
		"ari batch -1":     {"CHOM_CERT_ARI_BATCH": "-1"},
	} {
		var key string
		for k := range kv {
			key = k
		}
		if _, err := LoadConfig(env(kv)); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: error %v; want one naming %s", name, err, key)
		}
	}
}
