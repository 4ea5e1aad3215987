package models_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"

	"github.com/chomhq/chom/models"
)

// HostKeySHA256 agrees with OpenSSH's fingerprint (x/crypto/ssh computes the
// same one), passes a fingerprint pin through and reads nothing else.
func TestHostKeySHA256(t *testing.T) {
	t.Parallel()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := gossh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k)))
	want := gossh.FingerprintSHA256(k)
	for _, pin := range []string{line, line + " root@host", " " + line + "\n", want} {
		if got := models.HostKeySHA256(pin); got != want {
			t.Errorf("HostKeySHA256(%q) = %q, want %q", pin, got, want)
		}
	}
	for _, pin := range []string{"", "ssh-ed25519", "ssh-ed25519 !!!"} {
		if got := models.HostKeySHA256(pin); got != "" {
			t.Errorf("HostKeySHA256(%q) = %q, want empty", pin, got)
		}
	}
}
