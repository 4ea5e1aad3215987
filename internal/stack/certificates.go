package stack

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
)

// Certificates is what a worker issues certificates with: the store (keys
// sealed under CHOM_CERT_ENCRYPTION_KEYS, the fleet-wide rate-limit budget)
// and the ACME issuer of CHOM_ACME_DIRECTORY_URL.
type Certificates struct {
	Store  *models.CertificateStore
	Issuer *acme.Issuer
}

// ErrCertificatesOff: CHOM_CERT_ENCRYPTION_KEYS is not set, so the platform
// cannot store a key and issues no certificate: sites are served over plain
// HTTP, no certificate operation starts by itself, and the API refuses to
// issue or upload one.
var ErrCertificatesOff = errors.New("certificates are off: CHOM_CERT_ENCRYPTION_KEYS is not set")

// newCertificateStore opens the certificate store of c over store (the
// ingress, the workers and chom certificates share it), or
// ErrCertificatesOff.
func newCertificateStore(c Config, store *models.Store) (*models.CertificateStore, error) {
	if c.ACME.EncryptionKeys == "" {
		return nil, ErrCertificatesOff
	}
	ring, err := seal.ParseKeys(c.ACME.EncryptionKeys)
	if err != nil {
		return nil, fmt.Errorf("CHOM_CERT_ENCRYPTION_KEYS: %w", err)
	}
	return models.NewCertificateStore(models.CertificateStoreConfig{Store: store, Ring: ring, Budget: c.ACME.Budget})
}

// newCertificates builds the store and the issuer of c (ErrCertificatesOff
// when c has no encryption key).
func newCertificates(c Config, b *Backends, log *slog.Logger) (*Certificates, error) {
	store, err := newCertificateStore(c, b.Store)
	if err != nil {
		return nil, err
	}
	hc, err := acmeHTTPClient(c.ACME.CACerts)
	if err != nil {
		return nil, err
	}
	var dns acme.DNSProvider
	switch c.ACME.DNSProvider {
	case "rfc2136":
		var key, alg, secret string
		if c.ACME.RFC2136TSIG != "" {
			if key, alg, secret, err = acme.ParseTSIG(c.ACME.RFC2136TSIG); err != nil {
				return nil, fmt.Errorf("CHOM_ACME_DNS_RFC2136_TSIG: %w", err)
			}
		}
		if dns, err = acme.NewRFC2136(acme.RFC2136Config{Nameserver: c.ACME.RFC2136Nameserver, Zone: c.ACME.RFC2136Zone,
			TSIGKey: key, TSIGAlgorithm: alg, TSIGSecret: secret}); err != nil {
			return nil, err
		}
	case "challtestsrv":
		dns = &acme.ChallTestSrvDNS{ManagementURL: c.ACME.ChallTestSrvURL}
	}
	issuer, err := acme.New(acme.Config{
		DirectoryURL: c.ACME.DirectoryURL, Email: c.ACME.Email, Accounts: acme.StoreAccounts{Store: store},
		HTTPClient: hc, DNS: dns, DNSResolvers: c.ACME.DNSResolvers, DNSPropagationTimeout: c.ACME.DNSPropagationTimeout,
		Budget: store, Timeout: c.ACME.Timeout, Logger: log.With("component", "acme"),
	})
	if err != nil {
		return nil, err
	}
	return &Certificates{Store: store, Issuer: issuer}, nil
}

// acmeHTTPClient is the client that talks to the CA: the system's roots,
// plus those of the PEM file caFile when set (a private CA, or chom dev's).
func acmeHTTPClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return nil, nil // the issuer's default
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CHOM_ACME_CA_CERTS: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CHOM_ACME_CA_CERTS: %s holds no PEM certificate", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Timeout: 2 * time.Minute, Transport: tr}, nil
}

// certificateJobs builds the certificate:issue and certificate:renew_sweep
// handlers when the platform issues certificates and the driver can deploy
// them; it returns whether provisions should start issuances.
func (w *Worker) certificateJobs(c Config, b *Backends, log *slog.Logger, drv Driver, guards jobGuards, n jobs.Notifier) (bool, error) {
	certs, err := newCertificates(c, b, log)
	if errors.Is(err, ErrCertificatesOff) {
		log.Warn("certificates are off: sites are served over plain HTTP until CHOM_CERT_ENCRYPTION_KEYS is set (docs/certificates.md)")
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if drv.TLS == nil {
		log.Warn("the driver cannot deploy certificates; certificate operations wait for a worker whose driver can")
		return false, nil
	}
	w.Certificates = certs
	if w.IssueCertificate, err = jobs.NewIssueCertificate(jobs.IssueCertificateConfig{
		Store: b.Store, Certs: certs.Store, Issuer: certs.Issuer, Deployer: drivers.GuardTLSDeployer(drv.TLS, guards.Breaker), Slots: guards.Limits,
		Notifier: n, Logger: log.With("component", "certificates"),
	}); err != nil {
		return false, err
	}
	if w.RenewSweep, err = NewRenewSweep(c, b, certs.Store, certs.Issuer, log); err != nil {
		return false, err
	}
	return true, nil
}
