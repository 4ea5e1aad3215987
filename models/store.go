package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/uptrace/bun"
)

// Config configures a Store.
type Config struct {
	// DB is the database; required.
	DB *bun.DB
	// Now returns the current time; defaults to time.Now. Tests set it to control time.
	Now func() time.Time
	// IdempotencyTTL is how long an Idempotency-Key is remembered; defaults to 24h.
	IdempotencyTTL time.Duration
	// QuotaDefaults are the limits of a tenant without an override
	// (SetQuota); the zero value is unlimited.
	QuotaDefaults Limits
	// DomainVerification is VerificationContested (the default: only a
	// domain another tenant claims needs proof) or VerificationStrict (every
	// new claim does); see domains.go.
	DomainVerification string
}

// Validate reports every missing or invalid field at once.
func (c Config) Validate() error {
	var errs []error
	if c.DB == nil {
		errs = append(errs, errors.New("models: Config.DB is required"))
	}
	if c.QuotaDefaults.MaxSites < 0 || c.QuotaDefaults.MaxBackups < 0 || c.QuotaDefaults.MaxBackupBytes < 0 {
		errs = append(errs, errors.New("models: Config.QuotaDefaults must not be negative (0 is unlimited)"))
	}
	switch c.DomainVerification {
	case "", VerificationContested, VerificationStrict:
	default:
		errs = append(errs, fmt.Errorf("models: Config.DomainVerification %q must be %s or %s",
			c.DomainVerification, VerificationStrict, VerificationContested))
	}
	if c.IdempotencyTTL < 0 {
		errs = append(errs, errors.New("models: Config.IdempotencyTTL must not be negative"))
	}
	return errors.Join(errs...)
}

// Store runs CHOM's queries. It is safe for concurrent use.
type Store struct {
	db             *bun.DB
	now            func() time.Time
	idempotencyTTL time.Duration
	pg             bool
	quotaDefaults  Limits
	quotas         quotaCache
	strict         bool          // every new domain claim needs proof
	startSQL       func() string // startProvisionPG's statement, formatted once
}

// New returns a Store over cfg.DB.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IdempotencyTTL == 0 {
		cfg.IdempotencyTTL = 24 * time.Hour
	}
	return &Store{db: cfg.DB, now: cfg.Now, idempotencyTTL: cfg.IdempotencyTTL, pg: IsPostgres(cfg.DB),
		quotaDefaults: cfg.QuotaDefaults, strict: cfg.DomainVerification == VerificationStrict,
		startSQL: sync.OnceValue(func() string { return startProvisionSQL(cfg.DB) })}, nil
}

// DB returns the underlying database handle.
func (s *Store) DB() *bun.DB { return s.db }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// nowUTC is the store's clock in UTC with microsecond precision, which both
// PostgreSQL and SQLite keep exactly, so a value written reads back equal.
func (s *Store) nowUTC() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// notFound turns sql.ErrNoRows into ErrNotFound with context.
func notFound(err error, what, id string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s %s: %w", what, id, ErrNotFound)
	}
	return fmt.Errorf("get %s %s: %w", what, id, err)
}

// inTx runs fn in a transaction.
func (s *Store) inTx(ctx context.Context, fn func(ctx context.Context, tx bun.Tx) error) error {
	return s.db.RunInTx(ctx, nil, fn)
}

// affected returns the number of rows a statement changed.
func affected(res sql.Result) int64 {
	n, err := res.RowsAffected()
	if err != nil {
		return 0
	}
	return n
}
