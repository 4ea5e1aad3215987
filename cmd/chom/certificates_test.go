package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/internal/stack"
	"github.com/chomhq/chom/models"
)

// Key rotation as docs/certificates.md tells it, through the command: a key
// sealed under the old key, a new key put first, chom certificates reseal run
// until it reports nothing; then the old key is dropped and the key still
// opens. Without a key ring the command refuses.
func TestCertificatesReseal(t *testing.T) {
	t.Parallel()
	dir, store := devDataDir(t)
	ctx := t.Context()
	key := func(id string) string {
		b := make([]byte, seal.KeySize)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return id + ":" + base64.StdEncoding.EncodeToString(b)
	}
	certStore := func(keys string) *models.CertificateStore {
		ring, err := seal.ParseKeys(keys)
		if err != nil {
			t.Fatal(err)
		}
		c, err := models.NewCertificateStore(models.CertificateStoreConfig{Store: store, Ring: ring})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	oldKey, newKey := key("k1"), key("k2")
	// chom dev's ring file holds the old key: the command reads it with --data-dir.
	if err := os.WriteFile(filepath.Join(dir, stack.DevEncryptionKeysFile), []byte(oldKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := certStore(oldKey).CreateACMEAccount(ctx, models.ACMEAccount{DirectoryURL: "d", Email: "e", URI: "u", KeyPEM: []byte("account key")}); err != nil {
		t.Fatal(err)
	}
	reseal := func(env map[string]string) (string, error) {
		var stdout bytes.Buffer
		err := run(ctx, []string{"certificates", "reseal", "--data-dir", dir}, &stdout, &bytes.Buffer{}, func(k string) string { return env[k] })
		return stdout.String(), err
	}
	// The ring file's key is the only key: nothing to do.
	if out, err := reseal(nil); err != nil || !strings.Contains(out, "re-sealed 0 ACME account keys") {
		t.Fatalf("reseal under the sealing key: %q, %v", out, err)
	}
	rotated := map[string]string{"CHOM_CERT_ENCRYPTION_KEYS": newKey + "," + oldKey}
	out, err := reseal(rotated)
	if err != nil || !strings.Contains(out, "re-sealed 1 ACME account keys, 0 certificate keys, 0 pending upload keys") {
		t.Fatalf("reseal after the rotation: %q, %v", out, err)
	}
	if out, err := reseal(rotated); err != nil || !strings.Contains(out, "the old keys can be dropped") {
		t.Fatalf("second pass: %q, %v", out, err)
	}
	if a, err := certStore(newKey).ACMEAccount(ctx, "d", "e"); err != nil || string(a.KeyPEM) != "account key" {
		t.Fatalf("the account key under the new key alone: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, stack.DevEncryptionKeysFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := reseal(nil); !errors.Is(err, stack.ErrCertificatesOff) {
		t.Fatalf("reseal without a key ring: %v, want ErrCertificatesOff", err)
	}
}
