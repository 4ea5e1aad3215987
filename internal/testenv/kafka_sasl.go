package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
)

// Users of the SASL_SSL broker (see [KafkaSASL]). Each has PLAIN and
// SCRAM-SHA-512 credentials; the principal is User:<name> either way.
const (
	// KafkaSASLAdmin is the super user: the broker logs in to itself with it,
	// and the kit creates ACLs and reads topics with it.
	KafkaSASLAdmin = "admin"
	// KafkaSASLRelay is the relay's user.
	KafkaSASLRelay = "relay"
	// KafkaSASLBilling is the billing consumer's user.
	KafkaSASLBilling = "billing"
	// KafkaSASLOther is a user with no ACLs of its own: an intruder with valid
	// credentials.
	KafkaSASLOther = "other"
)

// KafkaSASLServer is an Apache Kafka broker whose only client listener is
// SASL_SSL (PLAIN and SCRAM-SHA-512), with a certificate from a CA made for it,
// and ACLs enforced (StandardAuthorizer, KafkaSASLAdmin the super user).
// scripts/kafka.sh start-sasl runs it.
type KafkaSASLServer struct {
	launcher string
	dir      string
	addr     string
	// CAFile is the PEM certificate of the CA that signed the broker's
	// certificate; the broker's name in it is 127.0.0.1.
	CAFile string
	// OtherCAFile is the PEM certificate of another CA, which did not sign the
	// broker's certificate.
	OtherCAFile string
	// Started is how long the broker took to start (certificates, format and
	// start-up).
	Started   time.Duration
	passwords map[string]string
}

// Brokers returns the broker's SASL_SSL address as a bootstrap list.
func (s *KafkaSASLServer) Brokers() []string { return []string{s.addr} }

// Password returns user's password (PLAIN and SCRAM-SHA-512 alike).
func (s *KafkaSASLServer) Password(user string) string { return s.passwords[user] }

// AdminClient returns a client logged in as KafkaSASLAdmin over TLS with PLAIN.
func (s *KafkaSASLServer) AdminClient() (*kafka.Client, error) {
	tr, err := s.adminTransport()
	if err != nil {
		return nil, err
	}
	return &kafka.Client{Addr: kafka.TCP(s.addr), Timeout: 10 * time.Second, Transport: tr}, nil
}

func (s *KafkaSASLServer) tlsConfig() (*tls.Config, error) {
	pemCA, err := os.ReadFile(s.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemCA) {
		return nil, errors.New("testenv: no certificate in " + s.CAFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

func (s *KafkaSASLServer) adminTransport() (*kafka.Transport, error) {
	tc, err := s.tlsConfig()
	if err != nil {
		return nil, err
	}
	return &kafka.Transport{ClientID: "chom-testenv", TLS: tc,
		SASL: plain.Mechanism{Username: KafkaSASLAdmin, Password: s.passwords[KafkaSASLAdmin]}}, nil
}

// Records returns every record of topic, read as KafkaSASLAdmin (see [Records]).
func (s *KafkaSASLServer) Records(ctx context.Context, topic string) ([]kafka.Message, error) {
	tc, err := s.tlsConfig()
	if err != nil {
		return nil, err
	}
	c, err := s.AdminClient()
	if err != nil {
		return nil, err
	}
	d := &kafka.Dialer{ClientID: "chom-testenv", Timeout: 10 * time.Second, TLS: tc,
		SASLMechanism: plain.Mechanism{Username: KafkaSASLAdmin, Password: s.passwords[KafkaSASLAdmin]}}
	return records(ctx, c, d, topic)
}

var (
	saslOnce   sync.Once
	saslServer *KafkaSASLServer
	saslErr    error
)

// KafkaSASL returns the test binary's SASL_SSL broker, starting it on first use
// (about 5s and up to 512 MB). Call StopKafkaSASL from TestMain after m.Run to
// stop it. It skips or fails the test like [StartKafkaServer] when
// CHOM_TEST_KAFKA_LAUNCHER is unset, and fails it when the broker does not start.
func KafkaSASL(tb testing.TB) *KafkaSASLServer {
	tb.Helper()
	launcher := serverURL(tb, EnvKafkaLauncher)
	saslOnce.Do(func() { saslServer, saslErr = startKafkaSASL(launcher) })
	if saslErr != nil {
		tb.Fatalf("testenv: %v", saslErr)
	}
	return saslServer
}

// StopKafkaSASL stops the broker KafkaSASL started, if any, and removes its
// directory.
func StopKafkaSASL() {
	if saslServer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "bash", saslServer.launcher, "stop", saslServer.dir).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: stop kafka in %s: %v\n%s", saslServer.dir, err, out)
	}
	_ = os.RemoveAll(saslServer.dir)
}

func startKafkaSASL(launcher string) (*KafkaSASLServer, error) {
	began := time.Now()
	dir, err := os.MkdirTemp("", "chom-kafka-sasl-")
	if err != nil {
		return nil, err
	}
	s := &KafkaSASLServer{launcher: launcher, dir: dir, passwords: map[string]string{}}
	if err := s.writeSecrets(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("kafka sasl secrets: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	port, err := randomPort()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "bash", launcher, "start-sasl", dir)
	cmd.Env = append(os.Environ(), "CHOM_TEST_KAFKA_PORT="+strconv.Itoa(port))
	out, err := cmd.Output()
	saslServer = s // stopped by StopKafkaSASL even when it failed half-way
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return nil, fmt.Errorf("start kafka (SASL_SSL) in %s: %v\n%s", dir, err, stderr)
	}
	s.addr = strings.TrimSpace(string(out))
	if err := s.wait(ctx); err != nil {
		return nil, fmt.Errorf("kafka (SASL_SSL) %s: %w", s.addr, err)
	}
	s.Started = time.Since(began)
	return s, nil
}

// wait waits until the broker answers the admin's metadata request.
func (s *KafkaSASLServer) wait(ctx context.Context) error {
	c, err := s.AdminClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{})
		if err == nil && len(md.Brokers) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not answering: %v", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// randomPort is where the launcher's port search starts, at a random place so
// parallel test binaries do not race for the same port.
func randomPort() (int, error) {
	b := make([]byte, 2)
	if _, err := rand.Read(b); err != nil {
		return 0, err
	}
	return 20000 + (int(b[0])<<8|int(b[1]))%20000, nil
}

// writeSecrets writes DIR/sasl/{broker.pem,ca.pem,users} for kafka.sh
// start-sasl, an unrelated CA for the wrong-CA case, and random passwords.
func (s *KafkaSASLServer) writeSecrets() error {
	sdir := filepath.Join(s.dir, "sasl")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		return err
	}
	caKey, caCert, caDER, err := newCA("chom test kafka CA")
	if err != nil {
		return err
	}
	_, _, otherDER, err := newCA("chom test unrelated CA")
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	broker := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	broker = append(broker, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	s.CAFile = filepath.Join(sdir, "ca.pem")
	s.OtherCAFile = filepath.Join(s.dir, "other-ca.pem")
	var users strings.Builder
	for _, u := range []string{KafkaSASLAdmin, KafkaSASLRelay, KafkaSASLBilling, KafkaSASLOther} {
		pw := make([]byte, 12)
		if _, err := rand.Read(pw); err != nil {
			return err
		}
		s.passwords[u] = fmt.Sprintf("pw-%s-%x", u, pw)
		fmt.Fprintf(&users, "%s %s\n", u, s.passwords[u])
	}
	for path, data := range map[string][]byte{
		filepath.Join(sdir, "broker.pem"): broker,
		s.CAFile:                          pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		s.OtherCAFile:                     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: otherDER}),
		filepath.Join(sdir, "users"):      []byte(users.String()),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// newCA returns a self-signed CA valid for a day.
func newCA(name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	return key, cert, der, nil
}
