package events_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/events"
)

// Settings that do not go together, and files that cannot be used, are all
// reported at once, naming the settings and never the password.
func TestKafkaSecurityValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	const secret = "s3cret-Pa55word"
	cases := []struct {
		name string
		sec  events.KafkaSecurity
		want []string
	}{
		{"plaintext", events.KafkaSecurity{}, nil},
		{"scram without TLS", events.KafkaSecurity{SASLMechanism: events.SASLScramSHA512, Username: "u", Password: secret}, nil},
		{"every problem", events.KafkaSecurity{TLS: true, CAFile: filepath.Join(dir, "missing.pem"), CertFile: "c.pem",
			SASLMechanism: events.SASLPlain, Username: "u"}, []string{
			"CHOM_KAFKA_TLS_CA_FILE", "no such file", "CHOM_KAFKA_TLS_CERT_FILE and CHOM_KAFKA_TLS_KEY_FILE: set both or neither",
			"CHOM_KAFKA_SASL_MECHANISM=plain needs CHOM_KAFKA_SASL_USERNAME and CHOM_KAFKA_SASL_PASSWORD"}},
		{"CA not PEM, plain without TLS", events.KafkaSecurity{CAFile: notPEM, SASLMechanism: events.SASLPlain, Username: "u", Password: secret},
			[]string{"need CHOM_KAFKA_TLS=true", "PLAIN sends the password as it is"}},
		{"CA not PEM", events.KafkaSecurity{TLS: true, CAFile: notPEM}, []string{"no PEM certificate"}},
		{"bad client pair", events.KafkaSecurity{TLS: true, CertFile: notPEM, KeyFile: notPEM}, []string{"CHOM_KAFKA_TLS_KEY_FILE=" + notPEM}},
		{"unknown mechanism", events.KafkaSecurity{SASLMechanism: "gssapi", Username: "u", Password: secret},
			[]string{`CHOM_KAFKA_SASL_MECHANISM="gssapi": want plain, scram-sha-512 or empty`}},
		{"credentials without mechanism", events.KafkaSecurity{Username: "u", Password: secret},
			[]string{"need CHOM_KAFKA_SASL_MECHANISM"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.sec.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %v", tc.sec)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error holds the password: %v", err)
			}
			// The relay refuses the same configuration.
			_, rerr := events.NewRelay(events.RelayConfig{Security: tc.sec})
			if rerr == nil || !strings.Contains(rerr.Error(), tc.want[0]) {
				t.Errorf("NewRelay: %v, want it to say %q", rerr, tc.want[0])
			}
		})
	}
}

// Neither String nor a formatted value shows the password.
func TestKafkaSecurityHidesPassword(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-Pa55word"
	sec := events.KafkaSecurity{TLS: true, CAFile: "/etc/ca.pem", SASLMechanism: events.SASLScramSHA512, Username: "relay", Password: secret}
	for _, s := range []string{sec.String(), fmt.Sprint(sec), fmt.Sprintf("%v %+v %s", sec, sec, sec), sec.LogValue().String()} {
		if strings.Contains(s, secret) {
			t.Errorf("%q shows the password", s)
		}
		if !strings.Contains(s, "sasl=scram-sha-512 user=relay") {
			t.Errorf("%q does not describe the settings", s)
		}
	}
	if _, err := events.NewTransport("x", time.Second, sec); err == nil {
		t.Error("NewTransport accepted a CA file that does not exist")
	}
}
