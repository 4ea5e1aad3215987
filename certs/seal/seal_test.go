package seal_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/chomhq/chom/certs/seal"
)

// key returns id:base64 of a fresh random key.
func key(t *testing.T, id string) string {
	t.Helper()
	b := make([]byte, seal.KeySize)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return id + ":" + base64.StdEncoding.EncodeToString(b)
}

func ring(t *testing.T, spec string) *seal.Ring {
	t.Helper()
	r, err := seal.ParseKeys(spec)
	if err != nil {
		t.Fatalf("ParseKeys: %v", err)
	}
	return r
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	r := ring(t, key(t, "k1"))
	secret := []byte("-----BEGIN EC PRIVATE KEY----- ...")
	const aad = "chom/certificate-key/site/s1"
	sealed, err := r.Seal(secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sealed, "v1:k1:") || strings.Contains(sealed, "PRIVATE") {
		t.Fatalf("sealed = %q; want v1:k1:<ciphertext>", sealed)
	}
	again, _ := r.Seal(secret, aad)
	if again == sealed {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
	got, err := r.Open(sealed, aad)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v; want the secret", got, err)
	}

	// Each byte of the ciphertext flipped in turn: none opens.
	prefix := len("v1:k1:")
	raw, _ := base64.RawStdEncoding.DecodeString(sealed[prefix:])
	for i := range raw {
		bad := bytes.Clone(raw)
		bad[i] ^= 0x01
		if _, err := r.Open(sealed[:prefix]+base64.RawStdEncoding.EncodeToString(bad), aad); !errors.Is(err, seal.ErrOpen) {
			t.Fatalf("byte %d flipped: err = %v, want ErrOpen", i, err)
		}
	}
	// Sealed for site s1, copied onto site s2's row: does not open.
	if _, err := r.Open(sealed, "chom/certificate-key/site/s2"); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("wrong aad: err = %v, want ErrOpen", err)
	}
	for _, junk := range []string{"", "plain text", "v2:k1:AAAA", "v1:k1:!!!", "v1:k1:AAAA", "v1::AAAA"} {
		if _, err := r.Open(junk, aad); !errors.Is(err, seal.ErrMalformed) {
			t.Errorf("Open(%q) = %v, want ErrMalformed", junk, err)
		}
	}
}

func TestUnknownKey(t *testing.T) {
	t.Parallel()
	old := ring(t, key(t, "old"))
	sealed, err := old.Seal([]byte("x"), "a")
	if err != nil {
		t.Fatal(err)
	}
	// A value relabelled to another key of the ring does not open either.
	both := ring(t, key(t, "new")+","+key(t, "other"))
	_, err = both.Open(sealed, "a")
	var uk *seal.UnknownKeyError
	if !errors.As(err, &uk) || uk.ID != "old" || !strings.Contains(err.Error(), `"old"`) {
		t.Fatalf("err = %v; want an UnknownKeyError naming old", err)
	}
	if _, err := both.Open(strings.Replace(sealed, ":old:", ":new:", 1), "a"); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("relabelled: err = %v, want ErrOpen", err)
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	k1, k2 := key(t, "k1"), key(t, "k2")
	r1 := ring(t, k1)
	sealed, _ := r1.Seal([]byte("secret"), "row")
	r2 := ring(t, k2+","+k1) // the new key first: it seals, k1 still opens
	if r2.Primary() != "k2" || !r2.NeedsReseal(sealed) {
		t.Fatalf("primary %s, NeedsReseal %v; want k2, true", r2.Primary(), r2.NeedsReseal(sealed))
	}
	if got, err := r2.Open(sealed, "row"); err != nil || string(got) != "secret" {
		t.Fatalf("open under the old key: %q, %v", got, err)
	}
	resealed, err := r2.Reseal(sealed, "row")
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := seal.KeyID(resealed); id != "k2" || r2.NeedsReseal(resealed) {
		t.Fatalf("resealed under %s", id)
	}
	if same, _ := r2.Reseal(resealed, "row"); same != resealed {
		t.Fatal("Reseal of a value under the primary key changed it")
	}
	r3 := ring(t, k2) // k1 dropped
	if got, err := r3.Open(resealed, "row"); err != nil || string(got) != "secret" {
		t.Fatalf("open after the old key was dropped: %q, %v", got, err)
	}
}

func TestParseKeysErrors(t *testing.T) {
	t.Parallel()
	good := key(t, "good")
	short := "short:" + base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, tc := range []struct{ spec, want string }{
		{"", "empty"},
		{" , ", "empty"},
		{short, `key "short": 16 bytes, want 32`},
		{good + "," + strings.Replace(good, "good:", "good:", 1), `key "good": duplicate id`},
		{"b64:not*base64", `key "b64": bad base64`},
		{"nocolon", "key 1: want id:base64"},
		{"bad id:" + strings.TrimPrefix(good, "good:"), `key id "bad id"`},
	} {
		_, err := seal.ParseKeys(tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseKeys(%q) = %v; want an error containing %q", tc.spec, err, tc.want)
		}
	}
	// Every problem at once.
	_, err := seal.ParseKeys(short + ",b64:***")
	if err == nil || !strings.Contains(err.Error(), `"b64"`) || !strings.Contains(err.Error(), `"short"`) {
		t.Errorf("two bad keys: %v; want both named", err)
	}
	// URL base64 without padding is accepted.
	b := make([]byte, seal.KeySize)
	b[0] = 0xfb
	if _, err := seal.ParseKeys("u:" + base64.RawURLEncoding.EncodeToString(b)); err != nil {
		t.Errorf("URL base64: %v", err)
	}
}
