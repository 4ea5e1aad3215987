package models_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

func TestOpen(t *testing.T) {
	t.Parallel()
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		db, err := models.Open(t.Context(), testenv.PostgresDSN(t), models.PoolConfig{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer db.Close()
		if !models.IsPostgres(db) || db.Stats().MaxOpenConnections != 40 {
			t.Errorf("IsPostgres %v, pool %d; want true, 40", models.IsPostgres(db), db.Stats().MaxOpenConnections)
		}
	})
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "x.db")
		db, err := models.Open(t.Context(), "sqlite://"+path, models.PoolConfig{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer db.Close()
		if models.IsPostgres(db) || db.Stats().MaxOpenConnections != 1 {
			t.Errorf("IsPostgres %v, pool %d; want false, 1", models.IsPostgres(db), db.Stats().MaxOpenConnections)
		}
		s := setup(t, db)
		createSite(t, s, tenant(t, s, "acme"), "open.example")
	})
	t.Run("unsupported scheme hides the password", func(t *testing.T) {
		t.Parallel()
		_, err := models.Open(t.Context(), "mysql://root:hunter2@db:3306/chom", models.PoolConfig{})
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("Open(mysql://...) = %v; want an error without the password", err)
		}
	})
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"postgres://chom:s3cret@db:5432/chom?sslmode=disable", "postgres://chom:xxxxx@db:5432/chom?sslmode=disable"},
		{"postgres://chom@db/chom", "postgres://chom@db/chom"},
		// A primary with standbys (pgx's multi-host form) keeps its hosts.
		{"postgres://chom:s3cret@10.0.0.1:5432,10.0.0.2:5432/chom?target_session_attrs=read-write",
			"postgres://chom:xxxxx@10.0.0.1:5432,10.0.0.2:5432/chom?target_session_attrs=read-write"},
		// Not "database URL": Redis and other URLs go through it too.
		{"postgres://%zz", "<unparseable URL>"},
		// net/url's own error would quote the password: nothing of it shows.
		{"redis://:pw@host:notaport/0", "<unparseable URL>"},
		{"redis://:s3cret@redis:6379/0", "redis://:xxxxx@redis:6379/0"},
		{"postgres://chom@db/chom?password=s3cret&sslmode=require&sslpassword=k", "postgres://chom@db/chom?password=xxxxx&sslmode=require&sslpassword=xxxxx"},
		{"redis-sentinel://h:26379?master=m&sentinel_password=s3cret", "redis-sentinel://h:26379?master=m&sentinel_password=xxxxx"},
		{"https://s3.example.com/b?X-Amz-Signature=abc&X-Amz-Credential=AKIA", "https://s3.example.com/b?X-Amz-Credential=xxxxx&X-Amz-Signature=xxxxx"},
	}
	for _, tc := range tests {
		if got := models.RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
