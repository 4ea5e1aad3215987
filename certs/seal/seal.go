package seal

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
)

// KeySize is the length of every key of a ring: 32 bytes (256 bits).
const KeySize = chacha20poly1305.KeySize

// version prefixes every sealed value, so the format can change later.
const version = "v1"

// ErrOpen: a sealed value did not open (tampered with, truncated, or bound to
// other associated data: sealed for another row).
var ErrOpen = errors.New("seal: value does not open (tampered with, or sealed for another row)")

// ErrMalformed: the text is not a sealed value at all.
var ErrMalformed = errors.New("seal: malformed sealed value")

// UnknownKeyError: the value was sealed under a key the ring does not hold
// (dropped too early from CHOM_CERT_ENCRYPTION_KEYS).
type UnknownKeyError struct {
	// ID is the key id the value names.
	ID string
}

func (e *UnknownKeyError) Error() string {
	return fmt.Sprintf("seal: value sealed under key %q, which is not in the key ring (CHOM_CERT_ENCRYPTION_KEYS)", e.ID)
}

// keyID is what a key id may be: short, and free of the separators.
var keyID = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,32}$`)

// Ring is a set of keys: the first seals, all open. It is safe for
// concurrent use.
type Ring struct {
	primary string
	ids     []string
	aeads   map[string]cipher.AEAD
}

// Key is one key of a ring.
type Key struct {
	// ID names the key in every value it seals.
	ID string
	// Secret is the key: KeySize bytes.
	Secret []byte
}

// ParseKeys reads a key ring in the configuration's form:
// "id:base64,id:base64" (standard or URL base64, padded or not), the first
// key sealing. Every problem (empty list, bad id, bad base64, short key,
// duplicate id) is reported at once, naming the key.
func ParseKeys(s string) (*Ring, error) {
	var keys []Key
	var errs []error
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, b64, ok := strings.Cut(item, ":")
		if !ok {
			errs = append(errs, fmt.Errorf("seal: key %d: want id:base64(32 bytes)", i+1))
			continue
		}
		secret, err := decodeB64(b64)
		if err != nil {
			errs = append(errs, fmt.Errorf("seal: key %q: bad base64: %w", id, err))
			continue
		}
		keys = append(keys, Key{ID: id, Secret: secret})
	}
	if len(errs) > 0 {
		if len(keys) > 0 {
			if _, err := New(keys...); err != nil {
				errs = append(errs, err)
			}
		}
		return nil, errors.Join(errs...)
	}
	return New(keys...)
}

// decodeB64 accepts standard and URL base64, with or without padding.
func decodeB64(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// New returns a ring of keys, the first sealing. Every problem is reported
// at once, naming the key.
func New(keys ...Key) (*Ring, error) {
	if len(keys) == 0 {
		return nil, errors.New("seal: the key ring is empty (CHOM_CERT_ENCRYPTION_KEYS: id:base64(32 bytes),...)")
	}
	r := &Ring{aeads: make(map[string]cipher.AEAD, len(keys))}
	var errs []error
	for _, k := range keys {
		switch {
		case !keyID.MatchString(k.ID):
			errs = append(errs, fmt.Errorf("seal: key id %q: want 1-32 of A-Z a-z 0-9 _ . -", k.ID))
			continue
		case len(k.Secret) != KeySize:
			errs = append(errs, fmt.Errorf("seal: key %q: %d bytes, want %d", k.ID, len(k.Secret), KeySize))
			continue
		}
		if _, dup := r.aeads[k.ID]; dup {
			errs = append(errs, fmt.Errorf("seal: key %q: duplicate id", k.ID))
			continue
		}
		a, err := chacha20poly1305.NewX(k.Secret)
		if err != nil {
			errs = append(errs, fmt.Errorf("seal: key %q: %w", k.ID, err))
			continue
		}
		r.aeads[k.ID] = a
		r.ids = append(r.ids, k.ID)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	r.primary = r.ids[0]
	return r, nil
}

// Primary is the id of the key that seals.
func (r *Ring) Primary() string { return r.primary }

// IDs are the ids of the ring's keys, the sealing one first.
func (r *Ring) IDs() []string { return append([]string(nil), r.ids...) }

// Seal encrypts plaintext under the primary key with XChaCha20-Poly1305 and
// a random 24-byte nonce, binding it to aad (what the value is and which row
// it belongs to, e.g. "chom/certificate-key/site/<id>").
func (r *Ring) Seal(plaintext []byte, aad string) (string, error) {
	a := r.aeads[r.primary]
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(plaintext)+a.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: nonce: %w", err)
	}
	out := a.Seal(nonce, nonce, plaintext, additional(r.primary, aad))
	return version + ":" + r.primary + ":" + base64.RawStdEncoding.EncodeToString(out), nil
}

// Open decrypts a value Seal made with the same aad. It fails with an
// *UnknownKeyError when the ring lacks the key the value names, ErrOpen when
// the value was altered or sealed for other associated data, and
// ErrMalformed when it is not a sealed value.
func (r *Ring) Open(sealed, aad string) ([]byte, error) {
	id, body, err := split(sealed)
	if err != nil {
		return nil, err
	}
	a, ok := r.aeads[id]
	if !ok {
		return nil, &UnknownKeyError{ID: id}
	}
	raw, err := base64.RawStdEncoding.DecodeString(body)
	if err != nil || len(raw) < a.NonceSize()+a.Overhead() {
		return nil, ErrMalformed
	}
	pt, err := a.Open(nil, raw[:a.NonceSize()], raw[a.NonceSize():], additional(id, aad))
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// KeyID returns the id of the key that sealed a value (ErrMalformed when it
// is not a sealed value).
func KeyID(sealed string) (string, error) {
	id, _, err := split(sealed)
	return id, err
}

// NeedsReseal reports whether a value was sealed under a key other than the
// primary one (or is not a sealed value).
func (r *Ring) NeedsReseal(sealed string) bool {
	id, err := KeyID(sealed)
	return err != nil || id != r.primary
}

// Reseal opens a value and seals it again under the primary key, with the
// same aad. A value already under the primary key comes back unchanged.
func (r *Ring) Reseal(sealed, aad string) (string, error) {
	if !r.NeedsReseal(sealed) {
		return sealed, nil
	}
	pt, err := r.Open(sealed, aad)
	if err != nil {
		return "", err
	}
	return r.Seal(pt, aad)
}

// split cuts a sealed value into its key id and body.
func split(sealed string) (id, body string, err error) {
	v, rest, ok := strings.Cut(sealed, ":")
	if !ok || v != version {
		return "", "", ErrMalformed
	}
	id, body, ok = strings.Cut(rest, ":")
	if !ok || !keyID.MatchString(id) {
		return "", "", ErrMalformed
	}
	return id, body, nil
}

// additional is the associated data: the format version and key id (so a
// value cannot be relabelled to another key) and the caller's aad.
func additional(id, aad string) []byte {
	return []byte(version + "\x00" + id + "\x00" + aad)
}
