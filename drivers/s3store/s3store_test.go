package s3store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/internal/testenv"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := Config{Endpoint: "127.0.0.1:9000", Bucket: "chom-backups", AccessKey: "AK", SecretKey: "s3cr3t-value"}
	tests := []struct {
		name   string
		change func(*Config)
		want   string // substring of the error; "" for none
	}{
		{"ok", func(*Config) {}, ""},
		{"ok with prefix and part size", func(c *Config) { c.Prefix = "chom/prod/"; c.PartSize = MinPartSize }, ""},
		{"ok host only", func(c *Config) { c.Endpoint = "s3.eu-west-1.amazonaws.com" }, ""},
		{"no endpoint", func(c *Config) { c.Endpoint = "" }, "endpoint is required"},
		{"scheme", func(c *Config) { c.Endpoint = "https://s3.example.com" }, "without scheme"},
		{"path", func(c *Config) { c.Endpoint = "s3.example.com/bucket" }, "without scheme or path"},
		{"bad port", func(c *Config) { c.Endpoint = "s3.example.com:99999" }, "bad host or port"},
		{"bucket", func(c *Config) { c.Bucket = "Bad_Bucket" }, `bucket "Bad_Bucket"`},
		{"no keys", func(c *Config) { c.AccessKey, c.SecretKey = "", "" }, "access key is required\nsecret key is required"},
		{"prefix without slash", func(c *Config) { c.Prefix = "chom" }, "must end with /"},
		{"hostile prefix", func(c *Config) { c.Prefix = "../x/" }, `".."`},
		{"small parts", func(c *Config) { c.PartSize = 1 << 20 }, "part size 1048576"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := ok
			tt.change(&cfg)
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), cfg.SecretKey) && cfg.SecretKey != "" {
				t.Errorf("error shows the secret key: %v", err)
			}
		})
	}
}

func TestConfigRedactsSecret(t *testing.T) {
	t.Parallel()
	cfg := Config{Endpoint: "127.0.0.1:9000", Bucket: "b", AccessKey: "AK", SecretKey: "s3cr3t-value"}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("store", "config", cfg)
	for what, s := range map[string]string{"%v": fmt.Sprintf("%v", cfg), "%+v": fmt.Sprintf("%+v", cfg), "slog": logged.String()} {
		if strings.Contains(s, cfg.SecretKey) {
			t.Errorf("%s shows the secret key: %s", what, s)
		}
	}
}

type testBundle struct {
	store  *Store
	server *testenv.S3Server
}

// setup starts a moto server of the test's own and a store on a new bucket.
func setup(t *testing.T, change func(*Config)) *testBundle {
	t.Helper()
	srv := testenv.StartS3Server(t)
	cfg := Config{
		Endpoint: srv.Endpoint, Bucket: "chom-backups", AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		Region: srv.Region, Prefix: "chom/", PartSize: MinPartSize,
	}
	if change != nil {
		change(&cfg)
	}
	store, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := store.EnsureBucket(t.Context()); err != nil {
		t.Fatalf("EnsureBucket: %v", err)
	}
	if err := store.EnsureBucket(t.Context()); err != nil {
		t.Fatalf("EnsureBucket again: %v", err)
	}
	return &testBundle{store: store, server: srv}
}

func read(t *testing.T, s *Store, key string) []byte {
	t.Helper()
	rc, err := s.Open(t.Context(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return b
}

// onlyReader hides every method but Read, so nothing can learn the size.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestAgainstS3Server(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := t.Context()

	t.Run("multipart round trip", func(t *testing.T) {
		// 20 MiB and a bit in 5 MiB parts: five parts, the last one short.
		content := make([]byte, 20<<20+12345)
		rng := rand.NewChaCha8([32]byte{1})
		_, _ = rng.Read(content)
		want := sha256.Sum256(content)
		const key = "ten_1/site_1/bkp_1.tar.gz"
		size, sum, err := b.store.Put(ctx, key, onlyReader{bytes.NewReader(content)})
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		if size != int64(len(content)) || sum != hex.EncodeToString(want[:]) {
			t.Fatalf("Put = %d, %s; want %d, %x", size, sum, len(content), want)
		}
		got := read(t, b.store, key)
		if gotSum := sha256.Sum256(got); len(got) != len(content) || gotSum != want {
			t.Fatalf("Open read %d bytes with sha256 %x; want %d, %x", len(got), gotSum, len(content), want)
		}
		// Through VerifyReader, as a restore reads it.
		rc, err := b.store.Open(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if _, err := io.Copy(io.Discard, drivers.VerifyReader(rc, size, sum)); err != nil {
			t.Fatalf("VerifyReader: %v", err)
		}
		// Stored under the prefix, in five parts (a multipart ETag ends in -N).
		info, err := b.store.client.StatObject(ctx, "chom-backups", "chom/"+key, minio.StatObjectOptions{})
		if err != nil {
			t.Fatalf("object not under the prefix: %v", err)
		}
		if !strings.HasSuffix(info.ETag, "-5") {
			t.Errorf("ETag %q: want a 5-part multipart upload", info.ETag)
		}
	})

	t.Run("replace and small object", func(t *testing.T) {
		const key = "ten_1/site_1/small"
		for _, v := range []string{"first", "second", ""} {
			if _, _, err := b.store.Put(ctx, key, strings.NewReader(v)); err != nil {
				t.Fatalf("Put %q: %v", v, err)
			}
			if got := string(read(t, b.store, key)); got != v {
				t.Fatalf("read %q, want %q", got, v)
			}
		}
	})

	t.Run("missing key", func(t *testing.T) {
		_, err := b.store.Open(ctx, "ten_1/none.tar.gz")
		if !errors.Is(err, drivers.ErrNotFound) {
			t.Fatalf("Open of a missing key = %v, want ErrNotFound", err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		const key = "ten_1/site_2/bkp.tar.gz"
		if _, _, err := b.store.Put(ctx, key, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
		if err := b.store.Delete(ctx, key); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := b.store.Open(ctx, key); !errors.Is(err, drivers.ErrNotFound) {
			t.Fatalf("Open after Delete = %v, want ErrNotFound", err)
		}
		if err := b.store.Delete(ctx, key); err != nil {
			t.Fatalf("Delete of a missing key: %v", err)
		}
	})

	t.Run("failed put leaves the old object", func(t *testing.T) {
		const key = "ten_1/site_3/bkp.tar.gz"
		if _, _, err := b.store.Put(ctx, key, strings.NewReader("old")); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("ssh: connection lost")
		// Fails after two whole parts were uploaded.
		r := io.MultiReader(bytes.NewReader(make([]byte, 2*MinPartSize+100)), errReader{boom})
		if _, _, err := b.store.Put(ctx, key, r); !errors.Is(err, boom) {
			t.Fatalf("Put = %v, want an error wrapping %v", err, boom)
		}
		if got := string(read(t, b.store, key)); got != "old" {
			t.Fatalf("after a failed Put the object is %q (%d bytes), want \"old\"", got[:min(len(got), 20)], len(got))
		}
		// A new key that failed is not there at all.
		r = io.MultiReader(bytes.NewReader(make([]byte, MinPartSize+1)), errReader{boom})
		if _, _, err := b.store.Put(ctx, "ten_1/site_3/new", r); !errors.Is(err, boom) {
			t.Fatalf("Put = %v, want an error wrapping %v", err, boom)
		}
		if _, err := b.store.Open(ctx, "ten_1/site_3/new"); !errors.Is(err, drivers.ErrNotFound) {
			t.Fatalf("Open after a failed Put = %v, want ErrNotFound", err)
		}
	})

	t.Run("cancelled put", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		r := io.MultiReader(bytes.NewReader(make([]byte, MinPartSize+1)), readerFunc(func([]byte) (int, error) { cancel(); return 0, io.EOF }),
			bytes.NewReader(make([]byte, MinPartSize)))
		if _, _, err := b.store.Put(cctx, "ten_1/cancelled", r); !errors.Is(err, context.Canceled) {
			t.Fatalf("Put = %v, want an error wrapping context.Canceled", err)
		}
		if _, err := b.store.Open(ctx, "ten_1/cancelled"); !errors.Is(err, drivers.ErrNotFound) {
			t.Fatalf("Open after a cancelled Put = %v, want ErrNotFound", err)
		}
	})

	t.Run("hostile keys", func(t *testing.T) {
		for _, key := range []string{"", "../x", "/abs", "a//b", "A", "a\nb", ".hidden"} {
			if _, _, err := b.store.Put(ctx, key, strings.NewReader("x")); !errors.Is(err, drivers.ErrInvalidKey) {
				t.Errorf("Put(%q) = %v, want ErrInvalidKey", key, err)
			}
			if _, err := b.store.Open(ctx, key); !errors.Is(err, drivers.ErrInvalidKey) {
				t.Errorf("Open(%q) = %v, want ErrInvalidKey", key, err)
			}
			if err := b.store.Delete(ctx, key); !errors.Is(err, drivers.ErrInvalidKey) {
				t.Errorf("Delete(%q) = %v, want ErrInvalidKey", key, err)
			}
		}
	})
}

func TestMissingBucketErrorHidesSecret(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3Server(t)
	const secret = "very-secret-key-value"
	store, err := New(Config{Endpoint: srv.Endpoint, Bucket: "no-such-bucket", AccessKey: srv.AccessKey, SecretKey: secret, Region: srv.Region})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = store.Put(t.Context(), "k", strings.NewReader("x"))
	if err == nil {
		t.Fatal("Put into a missing bucket succeeded")
	}
	if errors.Is(err, drivers.ErrNotFound) {
		t.Errorf("a missing bucket is a configuration error, not ErrNotFound: %v", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error shows the secret key: %v", err)
	}
	if !strings.Contains(err.Error(), "no-such-bucket") {
		t.Errorf("error does not name the bucket: %v", err)
	}
}

func TestRedactedError(t *testing.T) {
	t.Parallel()
	s := &Store{bucket: "b", secrets: []string{"SECRET", "AKID"}}
	cause := errors.New("signature for AKID with SECRET does not match")
	err := s.fail("put", "k", cause)
	if got, want := err.Error(), "s3store: put b/k: signature for [redacted] with [redacted] does not match"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, cause) {
		t.Error("the cause is not wrapped")
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
