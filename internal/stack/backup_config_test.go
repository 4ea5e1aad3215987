package stack

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBackupConfig(t *testing.T) {
	t.Parallel()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	c, err := LoadConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.BackupStore != "fs" || c.BackupLinkTTL != 5*time.Minute || c.BackupRetention != 30 ||
		c.BackupPruneEvery != time.Hour || c.BackupScheduleEvery != 15*time.Minute || c.BackupSigningKey != "" {
		t.Errorf("defaults: %+v", c)
	}
	if c.LocalRoot = "/srv/vps"; backupDir(c) != filepath.Join("/srv/vps", "backups") {
		t.Errorf("default dir under the local root = %q", backupDir(c))
	}
	c, err = LoadConfig(env(map[string]string{"CHOM_BACKUP_DIR": "/srv/backups", "CHOM_BACKUP_LINK_TTL": "30s",
		"CHOM_BACKUP_DEFAULT_RETENTION": "7", "CHOM_BACKUP_SIGNING_KEY": strings.Repeat("k", 32)}))
	c.LocalRoot = "/srv/vps"
	if err != nil || backupDir(c) != "/srv/backups" || c.BackupLinkTTL != 30*time.Second || c.BackupRetention != 7 {
		t.Errorf("set: %v, %+v", err, c)
	}
	for name, tt := range map[string]struct {
		kv   map[string]string
		want string
	}{
		"s3 without bucket": {map[string]string{"CHOM_BACKUP_STORE": "s3"}, "CHOM_S3_BUCKET"},
		"unknown store":     {map[string]string{"CHOM_BACKUP_STORE": "tape"}, "CHOM_BACKUP_STORE"},
		"ssh without key":   {map[string]string{"CHOM_DRIVER": "ssh"}, "CHOM_SSH_KEY_FILE"},
		"unknown driver":    {map[string]string{"CHOM_DRIVER": "ftp"}, "CHOM_DRIVER"},
		"short key":         {map[string]string{"CHOM_BACKUP_SIGNING_KEY": "secret"}, "CHOM_BACKUP_SIGNING_KEY"},
		"link ttl 0":        {map[string]string{"CHOM_BACKUP_LINK_TTL": "0s"}, "CHOM_BACKUP_LINK_TTL"},
		"link ttl 2 days":   {map[string]string{"CHOM_BACKUP_LINK_TTL": "48h"}, "CHOM_BACKUP_LINK_TTL"},
		"retention 0":       {map[string]string{"CHOM_BACKUP_DEFAULT_RETENTION": "0"}, "CHOM_BACKUP_DEFAULT_RETENTION"},
		"retention 10 yrs":  {map[string]string{"CHOM_BACKUP_DEFAULT_RETENTION": "3651"}, "CHOM_BACKUP_DEFAULT_RETENTION"},
		"prune every 10s":   {map[string]string{"CHOM_BACKUP_PRUNE_INTERVAL": "10s"}, "CHOM_BACKUP_PRUNE_INTERVAL"},
	} {
		_, err := LoadConfig(env(tt.kv))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v: error %v, want one naming %s", name, tt.kv, err, tt.want)
		}
	}
	c3, err := LoadConfig(env(map[string]string{"CHOM_BACKUP_STORE": "s3", "CHOM_S3_ENDPOINT": "127.0.0.1:9000",
		"CHOM_S3_BUCKET": "chom", "CHOM_S3_ACCESS_KEY": "ak", "CHOM_S3_SECRET_KEY": "sk", "CHOM_S3_TLS": "false",
		"CHOM_DRIVER": "ssh", "CHOM_SSH_KEY_FILE": "/etc/chom/id_ed25519"}))
	if err != nil || c3.S3TLS || c3.HealthProbe != "ssh" {
		t.Errorf("s3 + ssh: %v, tls %v, health probe %q (want ssh: it follows CHOM_DRIVER)", err, c3.S3TLS, c3.HealthProbe)
	}
	// The scheduler's table has both backup rows.
	names := map[string]bool{}
	for _, p := range Schedule(c) {
		names[p.Name] = true
	}
	if !names["backup_prune"] || !names["backup_schedules"] {
		t.Errorf("schedule rows %v lack backup_prune / backup_schedules", names)
	}
}
