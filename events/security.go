package events

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// SASL mechanisms of KafkaSecurity.SASLMechanism, spelled as
// CHOM_KAFKA_SASL_MECHANISM takes them.
const (
	SASLPlain       = "plain"
	SASLScramSHA512 = "scram-sha-512"
)

// KafkaSecurity is how CHOM's Kafka clients (the relay's writer and admin
// client, the billing consumer's group reader, dead-letter writer and admin
// client) secure their connections: TLS, SASL, or both (SASL_SSL). The zero
// value is PLAINTEXT.
//
// The password never appears in an error, a log line or String.
type KafkaSecurity struct {
	// TLS turns TLS on. The broker's certificate is checked against CAFile,
	// or the system roots when CAFile is empty, and against the broker's host
	// name as the bootstrap list and the broker's metadata name it.
	TLS bool
	// CAFile is a PEM file of the certificate authorities to trust; optional.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// brokers that authenticate clients by certificate (mTLS); both or neither.
	CertFile, KeyFile string

	// SASLMechanism is SASLPlain, SASLScramSHA512, or empty for no SASL.
	// PLAIN sends the password as it is, so it is refused without TLS.
	SASLMechanism string
	// Username and Password are the SASL credentials; required with a
	// mechanism.
	Username, Password string
}

// Validate reports every problem at once: settings that do not go together,
// and CA or client certificate files that cannot be read or parsed. Field
// names in the messages are the CHOM_KAFKA_* settings.
func (s KafkaSecurity) Validate() error {
	_, _, err := s.build()
	return err
}

// String describes s without its password.
func (s KafkaSecurity) String() string {
	var parts []string
	if s.TLS {
		tlsDesc := "tls"
		if s.CAFile != "" {
			tlsDesc += " ca=" + s.CAFile
		}
		if s.CertFile != "" {
			tlsDesc += " cert=" + s.CertFile
		}
		parts = append(parts, tlsDesc)
	}
	if s.SASLMechanism != "" {
		parts = append(parts, fmt.Sprintf("sasl=%s user=%s", s.SASLMechanism, s.Username))
	}
	if len(parts) == 0 {
		return "plaintext"
	}
	return strings.Join(parts, " ")
}

// LogValue logs s as String does, without its password.
func (s KafkaSecurity) LogValue() slog.Value { return slog.StringValue(s.String()) }

// build returns the TLS configuration (nil without TLS) and the SASL mechanism
// (nil without SASL) of s, or every problem with s.
func (s KafkaSecurity) build() (*tls.Config, sasl.Mechanism, error) {
	var errs []error
	var tlsCfg *tls.Config
	if s.TLS {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		if s.CAFile != "" {
			pool, err := loadCAs(s.CAFile)
			if err != nil {
				errs = append(errs, err)
			}
			tlsCfg.RootCAs = pool
		}
		switch {
		case s.CertFile != "" && s.KeyFile != "":
			cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
			if err != nil {
				errs = append(errs, fmt.Errorf("CHOM_KAFKA_TLS_CERT_FILE=%s, CHOM_KAFKA_TLS_KEY_FILE=%s: %w", s.CertFile, s.KeyFile, err))
			}
			tlsCfg.Certificates = []tls.Certificate{cert}
		case s.CertFile != "" || s.KeyFile != "":
			errs = append(errs, errors.New("CHOM_KAFKA_TLS_CERT_FILE and CHOM_KAFKA_TLS_KEY_FILE: set both or neither"))
		}
	} else if s.CAFile != "" || s.CertFile != "" || s.KeyFile != "" {
		errs = append(errs, errors.New("CHOM_KAFKA_TLS_CA_FILE, CHOM_KAFKA_TLS_CERT_FILE, CHOM_KAFKA_TLS_KEY_FILE need CHOM_KAFKA_TLS=true"))
	}

	var mech sasl.Mechanism
	switch s.SASLMechanism {
	case "":
		if s.Username != "" || s.Password != "" {
			errs = append(errs, errors.New("CHOM_KAFKA_SASL_USERNAME and CHOM_KAFKA_SASL_PASSWORD need CHOM_KAFKA_SASL_MECHANISM (plain or scram-sha-512)"))
		}
	case SASLPlain, SASLScramSHA512:
		if s.Username == "" || s.Password == "" {
			errs = append(errs, fmt.Errorf("CHOM_KAFKA_SASL_MECHANISM=%s needs CHOM_KAFKA_SASL_USERNAME and CHOM_KAFKA_SASL_PASSWORD", s.SASLMechanism))
			break
		}
		if s.SASLMechanism == SASLPlain {
			if !s.TLS {
				errs = append(errs, errors.New("CHOM_KAFKA_SASL_MECHANISM=plain needs CHOM_KAFKA_TLS=true: PLAIN sends the password as it is"))
			}
			mech = plain.Mechanism{Username: s.Username, Password: s.Password}
			break
		}
		m, err := scram.Mechanism(scram.SHA512, s.Username, s.Password)
		if err != nil {
			// The error of SASLprep names no input; say which setting anyway.
			errs = append(errs, fmt.Errorf("CHOM_KAFKA_SASL_USERNAME or CHOM_KAFKA_SASL_PASSWORD: not valid for SCRAM: %w", err))
		}
		mech = m
	default:
		errs = append(errs, fmt.Errorf("CHOM_KAFKA_SASL_MECHANISM=%q: want plain, scram-sha-512 or empty", s.SASLMechanism))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("kafka security: %w", err)
	}
	return tlsCfg, mech, nil
}

// loadCAs reads a PEM bundle of certificate authorities.
func loadCAs(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CHOM_KAFKA_TLS_CA_FILE: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CHOM_KAFKA_TLS_CA_FILE=%s: no PEM certificate in it", path)
	}
	return pool, nil
}

// NewTransport returns the Kafka transport of one relay or consumer, secured by
// sec, to share between its writers and its admin client so that topics it
// creates are known to all of them at once. timeout bounds each dial,
// including the TLS handshake and SASL authentication.
func NewTransport(clientID string, timeout time.Duration, sec KafkaSecurity) (*kafka.Transport, error) {
	tlsCfg, mech, err := sec.build()
	if err != nil {
		return nil, err
	}
	return &kafka.Transport{
		ClientID:    clientID,
		DialTimeout: timeout,
		IdleTimeout: 30 * time.Second,
		MetadataTTL: 5 * time.Second,
		TLS:         tlsCfg,
		SASL:        mech,
	}, nil
}

// NewDialer returns a dialer secured by sec, for the clients kafka-go builds on
// dialers rather than transports (a consumer group's reader). timeout bounds
// each dial, including the TLS handshake and SASL authentication.
func NewDialer(clientID string, timeout time.Duration, sec KafkaSecurity) (*kafka.Dialer, error) {
	tlsCfg, mech, err := sec.build()
	if err != nil {
		return nil, err
	}
	return &kafka.Dialer{
		ClientID:      clientID,
		Timeout:       timeout,
		DualStack:     true,
		TLS:           tlsCfg,
		SASLMechanism: mech,
	}, nil
}
