package stack

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/fsstore"
	"github.com/chomhq/chom/drivers/s3store"
	"github.com/chomhq/chom/ingress"
)

// backupDir is where the filesystem backup store keeps archives:
// CHOM_BACKUP_DIR, else <CHOM_LOCAL_ROOT>/backups. Empty when neither is set.
func backupDir(c Config) string {
	switch {
	case c.BackupDir != "":
		return c.BackupDir
	case c.LocalRoot != "":
		return filepath.Join(c.LocalRoot, "backups")
	}
	return ""
}

// newBackupStore opens the store CHOM_BACKUP_STORE names (fs: a directory;
// s3: the CHOM_S3_* bucket). It returns nil, nil when no directory is
// configured, for the ingress, which then answers archive downloads with 503.
func newBackupStore(c Config) (drivers.BackupStore, error) {
	if c.BackupStore == "s3" {
		return s3store.New(s3store.Config{Endpoint: c.S3Endpoint, Bucket: c.S3Bucket, AccessKey: c.S3AccessKey,
			SecretKey: c.S3SecretKey, Region: c.S3Region, UseTLS: c.S3TLS, Prefix: c.S3Prefix})
	}
	dir := backupDir(c)
	if dir == "" {
		return nil, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("CHOM_BACKUP_DIR: %w", err)
	}
	return fsstore.New(fsstore.Config{Dir: abs})
}

// backupAPIConfig is the ingress's backup settings: signing key, link TTL,
// default retention, the public base URL of its links and, when a store is
// configured, the store downloads stream from.
//
// Without CHOM_BACKUP_SIGNING_KEY the key is random per process: fine for one
// ingress, but behind a load balancer a link signed by one replica is refused
// (403) by the others, so production sets it.
func backupAPIConfig(c Config) (ingress.BackupConfig, error) {
	store, err := newBackupStore(c)
	if err != nil {
		return ingress.BackupConfig{}, err
	}
	cfg := ingress.BackupConfig{SigningKey: []byte(c.BackupSigningKey), LinkTTL: c.BackupLinkTTL,
		DefaultRetentionDays: c.BackupRetention, IsNotFound: func(err error) bool { return errors.Is(err, drivers.ErrNotFound) }}
	if store != nil {
		cfg.Archives = store
	}
	return cfg, nil
}
