package stack

import (
	"strings"
	"testing"
	"time"
)

// TestACMEConfig: issue 13, part A's settings parse, default to Let's
// Encrypt's limits, and name the setting on every bad value without
// showing a key.
func TestACMEConfig(t *testing.T) {
	t.Parallel()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	c, err := LoadConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	a := c.ACME
	if a.DirectoryURL != "https://acme-v02.api.letsencrypt.org/directory" || a.Budget.OrdersPerAccount != 300 ||
		a.Budget.OrdersWindow != 3*time.Hour || a.Budget.CertsPerDomain != 50 || a.Budget.CertsWindow != 7*24*time.Hour ||
		a.Timeout != 5*time.Minute || a.DNSPropagationTimeout != 2*time.Minute || a.DNSProvider != "" {
		t.Errorf("defaults: %+v", a)
	}
	const key = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	c, err = LoadConfig(env(map[string]string{"CHOM_CERT_ENCRYPTION_KEYS": key, "CHOM_ACME_DNS_PROVIDER": "rfc2136",
		"CHOM_ACME_DNS_RFC2136_NAMESERVER": "ns1.example.com:53", "CHOM_ACME_DNS_RFC2136_ZONE": "example.com.",
		"CHOM_ACME_DNS_RFC2136_TSIG": "chom:c2VjcmV0", "CHOM_ACME_DNS_RESOLVERS": "ns1.example.com:53, 9.9.9.9:53"}))
	if err != nil || c.ACME.EncryptionKeys != key || len(c.ACME.DNSResolvers) != 2 {
		t.Errorf("set: %v, %+v", err, c.ACME)
	}
	secret := "MDEyMzQ1Njc4OWFiY2RlZg=="
	for name, tt := range map[string]struct {
		kv   map[string]string
		want string
	}{
		"short key":            {map[string]string{"CHOM_CERT_ENCRYPTION_KEYS": "k1:" + secret}, `CHOM_CERT_ENCRYPTION_KEYS="<redacted>": seal: key "k1": 16 bytes`},
		"unknown provider":     {map[string]string{"CHOM_ACME_DNS_PROVIDER": "route53"}, "CHOM_ACME_DNS_PROVIDER"},
		"rfc2136 without zone": {map[string]string{"CHOM_ACME_DNS_PROVIDER": "rfc2136", "CHOM_ACME_DNS_RFC2136_NAMESERVER": "ns:53"}, "zone is required"},
		"bad tsig": {map[string]string{"CHOM_ACME_DNS_PROVIDER": "rfc2136", "CHOM_ACME_DNS_RFC2136_NAMESERVER": "ns:53",
			"CHOM_ACME_DNS_RFC2136_ZONE": "example.com", "CHOM_ACME_DNS_RFC2136_TSIG": "just-a-name"}, "CHOM_ACME_DNS_RFC2136_TSIG"},
		"challtestsrv without url": {map[string]string{"CHOM_ACME_DNS_PROVIDER": "challtestsrv"}, "CHOM_ACME_DNS_CHALLTESTSRV_URL"},
		"zero budget":              {map[string]string{"CHOM_ACME_CERTS_PER_DOMAIN": "0"}, "CHOM_ACME_CERTS_PER_DOMAIN"},
	} {
		_, err := LoadConfig(env(tt.kv))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %s", name, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error shows the key: %v", name, err)
		}
	}
}
