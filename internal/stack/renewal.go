package stack

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// RenewalSettings are the renewal sweep's settings (CHOM_CERT_RENEW_*,
// CHOM_CERT_ARI_*): issue 13, the renewal sweep.
type RenewalSettings struct {
	Every    time.Duration // CHOM_CERT_RENEW_INTERVAL: the scheduler's row
	Batch    int           // CHOM_CERT_RENEW_BATCH: renewals started per sweep
	ARIEvery time.Duration // CHOM_CERT_ARI_INTERVAL: 0 = never ask the CA
	ARIBatch int           // CHOM_CERT_ARI_BATCH: certificates asked about per sweep
}

// validate checks the bounds one parser cannot.
func (r RenewalSettings) validate() []error {
	var errs []error
	if r.Every < time.Minute {
		errs = append(errs, fmt.Errorf("CHOM_CERT_RENEW_INTERVAL=%s: want at least 1m", r.Every))
	}
	if r.ARIEvery != 0 && r.ARIEvery < time.Minute {
		errs = append(errs, fmt.Errorf("CHOM_CERT_ARI_INTERVAL=%s: want at least 1m, or 0 to never ask the CA", r.ARIEvery))
	}
	return errs
}

// NewRenewSweep builds a worker's certificate:renew_sweep handler over the
// certificate store and the ACME issuer (its RenewalWindow asks the CA for
// ACME Renewal Information; nil asks nothing), enqueuing the renewals it
// starts on b's Redis.
func NewRenewSweep(c Config, b *Backends, certStore *models.CertificateStore, issuer *acme.Issuer, log *slog.Logger) (*jobs.RenewSweep, error) {
	if b == nil || b.Store == nil || b.Redis == nil || certStore == nil {
		return nil, errors.New("stack: the renewal sweep needs the store, Redis and the certificate store")
	}
	cfg := jobs.RenewSweepConfig{
		Store:    renewalStore{b.Store, certStore},
		Enqueuer: queue.NewEnqueuer(b.Redis),
		Logger:   log.With("component", "renewal"),
		Batch:    c.Renewal.Batch, ARIInterval: c.Renewal.ARIEvery, ARIBatch: c.Renewal.ARIBatch,
	}
	if c.Renewal.ARIEvery == 0 {
		cfg.ARIInterval = -1 // never ask
	}
	if issuer != nil {
		cfg.Advisor = issuer
	}
	return jobs.NewRenewSweep(cfg)
}

// renewalStore is the sweep's store: the due list of the certificate store,
// the renewal records of the store.
type renewalStore struct {
	*models.Store
	*models.CertificateStore
}

var _ jobs.RenewalStore = renewalStore{}
