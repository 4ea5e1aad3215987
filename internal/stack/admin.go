package stack

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/models"
)

// OpenAdmin opens the database of a one-shot admin command (chom migrate,
// chom token) with the small pool it needs: CHOM_DATABASE_URL, else the
// SQLite database of the chom dev data directory dataDir (which must hold
// one). Closing the returned DB releases both.
func OpenAdmin(ctx context.Context, getenv func(string) string, dataDir string) (*bun.DB, *models.Store, error) {
	c, err := LoadConfig(getenv)
	if err != nil {
		return nil, nil, err
	}
	if c.DatabaseURL == "" && dataDir != "" {
		dir, err := filepath.Abs(dataDir)
		if err != nil {
			return nil, nil, fmt.Errorf("data dir: %w", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "chom.db")); err != nil {
			return nil, nil, fmt.Errorf("--data-dir %s: no chom dev database there (start `chom dev --data-dir %s` once first): %w", dataDir, dataDir, err)
		}
		dc, err := LoadDevConfig(getenv, dir)
		if err != nil {
			return nil, nil, err
		}
		c.DatabaseURL = dc.DatabaseURL
	}
	if err := c.Require("CHOM_DATABASE_URL"); err != nil {
		return nil, nil, fmt.Errorf("%w (or --data-dir of a chom dev data directory)", err)
	}
	db, err := models.Open(ctx, c.DatabaseURL, models.PoolConfig{MaxOpenConns: 2})
	if err != nil {
		return nil, nil, err
	}
	store, err := models.New(models.Config{DB: db})
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return db, store, nil
}

// OpenCertificateAdmin opens what a one-shot command over the sealed keys
// (chom certificates reseal) needs: the database as OpenAdmin opens it, and
// the certificate store over CHOM_CERT_ENCRYPTION_KEYS, or, with dataDir and
// the variable unset, over the key ring chom dev keeps in that directory
// (DevEncryptionKeysFile). Without a ring it fails with ErrCertificatesOff.
func OpenCertificateAdmin(ctx context.Context, getenv func(string) string, dataDir string) (*bun.DB, *models.CertificateStore, error) {
	c, err := LoadConfig(getenv)
	if err != nil {
		return nil, nil, err
	}
	if c.ACME.EncryptionKeys == "" && dataDir != "" {
		keys, err := readDevKeyRing(filepath.Join(dataDir, DevEncryptionKeysFile))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("--data-dir %s: %w", dataDir, err)
		}
		c.ACME.EncryptionKeys = keys
	}
	if c.ACME.EncryptionKeys == "" {
		return nil, nil, ErrCertificatesOff // before opening the database
	}
	db, store, err := OpenAdmin(ctx, getenv, dataDir)
	if err != nil {
		return nil, nil, err
	}
	certs, err := newCertificateStore(c, store)
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return db, certs, nil
}
