package ssh

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"

	gossh "golang.org/x/crypto/ssh"
)

// hostPin is a server's pinned SSH host key: the key itself (authorized_keys
// form, as `ssh-keyscan` prints it) or only its SHA-256 fingerprint
// ("SHA256:…", as `ssh-keygen -lf` prints it). The zero value pins nothing.
type hostPin struct {
	key gossh.PublicKey // nil when only the fingerprint is pinned
	fp  string          // "SHA256:…"; "" when nothing is pinned
}

var fingerprintPattern = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)

// parsePin reads a pin as drivers.Server.HostKey carries it: "" (none), a
// fingerprint, or a key in authorized_keys form.
func parsePin(s string) (hostPin, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return hostPin{}, nil
	case strings.HasPrefix(s, "SHA256:"):
		if !fingerprintPattern.MatchString(s) {
			return hostPin{}, fmt.Errorf("pinned host key fingerprint %q is not SHA256: and 43 base64 characters", truncate(s))
		}
		return hostPin{fp: s}, nil
	}
	k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return hostPin{}, fmt.Errorf("pinned host key is not in authorized_keys form: %w", err)
	}
	return hostPin{key: k, fp: gossh.FingerprintSHA256(k)}, nil
}

// none reports that nothing is pinned.
func (p hostPin) none() bool { return p.fp == "" }

// matches reports whether wire (a key's wire form) is the pinned key.
func (p hostPin) matches(wire []byte) bool {
	sum := sha256.Sum256(wire)
	return "SHA256:"+base64.RawStdEncoding.EncodeToString(sum[:]) == p.fp
}

// algorithms asks the server for the type of the pinned key, so a server
// holding several host keys presents the pinned one. Nil (any) when only a
// fingerprint, or nothing, is pinned: then the server's preferred key is
// checked against the fingerprint.
func (p hostPin) algorithms() []string {
	if p.key == nil {
		return nil
	}
	if p.key.Type() == gossh.KeyAlgoRSA {
		return []string{gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256, gossh.KeyAlgoRSA}
	}
	return []string{p.key.Type()}
}
