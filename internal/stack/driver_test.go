package stack

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// Both drivers bring every capability a worker wires: provisioning, backups
// and the usage probe, so a worker of either kind takes every task type
// (an ssh worker that could not meter would leave usage:* tasks to others).
func TestDriversHaveEveryCapability(t *testing.T) {
	t.Parallel()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(key, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []Config{
		{Driver: "local", LocalRoot: filepath.Join(t.TempDir(), "vps")},
		{Driver: "ssh", SSHKeyFile: keyFile, SSHUser: "root"},
	} {
		drv, err := newDriver(c, log, Hooks{})
		if err != nil {
			t.Fatalf("%s driver: %v", c.Driver, err)
		}
		if cl, ok := drv.Provisioner.(io.Closer); ok {
			t.Cleanup(func() { _ = cl.Close() })
		}
		if drv.Provisioner == nil || drv.Backups == nil || drv.Usage == nil {
			t.Errorf("%s driver: provisioner %v, backups %v, usage probe %v; want all three", c.Driver,
				drv.Provisioner != nil, drv.Backups != nil, drv.Usage != nil)
		}
	}
}
