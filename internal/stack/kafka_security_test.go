package stack

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chomhq/chom/events"
)

// The CHOM_KAFKA_TLS_* and CHOM_KAFKA_SASL_* settings load into one
// events.KafkaSecurity; what does not go together is reported at once, without
// the password.
func TestLoadConfigKafkaSecurity(t *testing.T) {
	t.Parallel()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	// Any PEM certificate will do for loading: the broker is not contacted.
	if err := os.WriteFile(ca, []byte(testCAPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	const secret = "s3cret-Pa55word"
	good := map[string]string{"CHOM_KAFKA_TLS": "true", "CHOM_KAFKA_TLS_CA_FILE": ca,
		"CHOM_KAFKA_SASL_MECHANISM": "scram-sha-512", "CHOM_KAFKA_SASL_USERNAME": "relay", "CHOM_KAFKA_SASL_PASSWORD": secret}
	c, err := LoadConfig(func(k string) string { return good[k] })
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := events.KafkaSecurity{TLS: true, CAFile: ca, SASLMechanism: events.SASLScramSHA512, Username: "relay", Password: secret}
	if c.KafkaSecurity != want {
		t.Errorf("KafkaSecurity = %v, want %v", c.KafkaSecurity, want)
	}

	bad := map[string]string{"CHOM_KAFKA_TLS_CA_FILE": filepath.Join(t.TempDir(), "missing.pem"),
		"CHOM_KAFKA_SASL_MECHANISM": "plain", "CHOM_KAFKA_SASL_PASSWORD": secret, "CHOM_KAFKA_TLS_KEY_FILE": "k.pem"}
	_, err = LoadConfig(func(k string) string { return bad[k] })
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{"CHOM_KAFKA_TLS_CA_FILE, CHOM_KAFKA_TLS_CERT_FILE, CHOM_KAFKA_TLS_KEY_FILE need CHOM_KAFKA_TLS=true",
		"CHOM_KAFKA_SASL_MECHANISM=plain needs CHOM_KAFKA_SASL_USERNAME and CHOM_KAFKA_SASL_PASSWORD"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not say %q:\n%v", w, err)
		}
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("the error holds the password:\n%v", err)
	}
	bad["CHOM_KAFKA_TLS"] = "true"
	_, err = LoadConfig(func(k string) string { return bad[k] })
	if err == nil || !strings.Contains(err.Error(), "CHOM_KAFKA_TLS_CA_FILE: open") {
		t.Errorf("an unreadable CA file: %v", err)
	}
}

// The relay and the billing consumer roles pass the settings on: a CA file
// that cannot be read stops both.
func TestRolesGetKafkaSecurity(t *testing.T) {
	t.Parallel()
	c := Config{KafkaBrokers: []string{"127.0.0.1:1"}, KafkaPartitions: 1, KafkaReplication: 1,
		KafkaSecurity: events.KafkaSecurity{TLS: true, CAFile: filepath.Join(t.TempDir(), "missing.pem")}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := NewRelay(context.Background(), c, &Backends{}, log); err == nil || !strings.Contains(err.Error(), "CHOM_KAFKA_TLS_CA_FILE") {
		t.Errorf("NewRelay: %v, want the CA file refused", err)
	}
	if _, err := NewBillingConsumer(c, &Backends{}, log); err == nil || !strings.Contains(err.Error(), "CHOM_KAFKA_TLS_CA_FILE") {
		t.Errorf("NewBillingConsumer: %v, want the CA file refused", err)
	}
}

// testCAPEM is a throwaway self-signed certificate (never used to connect).
const testCAPEM = `-----BEGIN CERTIFICATE-----
MIIBijCCAS+gAwIBAgIUUeCVopLn7HpfERc8itKsgLCMeCQwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPY2hvbS1zdGFjay10ZXN0MB4XDTI2MTIwNDIxMDUzMVoXDTM2
MTIwMTIxMDUzMVowGjEYMBYGA1UEAwwPY2hvbS1zdGFjay10ZXN0MFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEnhUNouS00EAWoggcJEkXI0T44fXiDUYnnJbpW+u/
r4FjlHZou3Y4XcVJvRGIcy8BXahYmmu4RkPCC0FLkyg9eKNTMFEwHQYDVR0OBBYE
FHwhFGCOgnYms7F7w4Ab64M9YgPcMB8GA1UdIwQYMBaAFHwhFGCOgnYms7F7w4Ab
64M9YgPcMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAPALW+lC
iXaTQfYuJtwGr4HI8+d2WLHjhWCRSI0BLoaZAiEAh/S4YAZsUPIELdTTlnPJ2crj
ji7SRwFMnW0rWlUKUPk=
-----END CERTIFICATE-----
`
