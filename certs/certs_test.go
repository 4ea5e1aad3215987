package certs_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/certs"
)

var now = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

// issued is a certificate and the key that signed it.
type issued struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

// issue makes a certificate: a CA when sans is nil, signed by parent (self-signed when nil).
func issue(t *testing.T, cn string, sans []string, parent *issued, from, to time.Time) *issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: from, NotAfter: to, DNSNames: sans,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if sans == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &issued{cert: c, key: key, der: der}
}

func pemOf(certs ...*issued) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.der})...)
	}
	return b
}

func keyPEM(t *testing.T, c *issued) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func TestCheckUpload(t *testing.T) {
	t.Parallel()
	from, to := now.Add(-24*time.Hour), now.Add(60*24*time.Hour)
	root := issue(t, "Root", nil, nil, from, to)
	inter := issue(t, "Inter", nil, root, from, to)
	leaf := issue(t, "a.example", []string{"a.example", "*.a.example"}, inter, from, to)
	other := issue(t, "b.example", []string{"b.example"}, inter, from, to)
	expiredInter := issue(t, "Old Inter", nil, root, now.Add(-48*time.Hour), now.Add(-time.Hour))
	expiredLeaf := issue(t, "a.example", []string{"a.example"}, expiredInter, now.Add(-48*time.Hour), now.Add(-time.Hour))
	future := issue(t, "a.example", []string{"a.example"}, inter, now.Add(time.Hour), to)

	got, err := certs.CheckUpload(pemOf(leaf, inter), keyPEM(t, leaf), []string{"a.example", "www.a.example", "*.a.example"}, now)
	if err != nil {
		t.Fatalf("good upload: %v", err)
	}
	if got.Issuer != "Inter" || !got.NotAfter.Equal(to) || len(got.Domains) != 2 || got.Serial == "" {
		t.Errorf("parsed = %+v", got)
	}

	for _, tc := range []struct {
		name       string
		chain, key []byte
		domains    []string
		want       []string
	}{
		{"not PEM", []byte("hello"), keyPEM(t, leaf), []string{"a.example"}, []string{"no PEM CERTIFICATE"}},
		{"key in chain", append(pemOf(leaf), keyPEM(t, leaf)...), keyPEM(t, leaf), nil, []string{`"PRIVATE KEY", want CERTIFICATE`}},
		{"bad key", pemOf(leaf, inter), []byte("nope"), nil, []string{"key: no PEM block"}},
		{"intermediate first", pemOf(inter, leaf), keyPEM(t, leaf), nil, []string{`(\"Inter\") is a CA`, "is not signed by"}},
		{"broken link", pemOf(leaf, root), keyPEM(t, leaf), nil, []string{`certificate 1 ("a.example") is not signed by certificate 2 ("Root")`}},
		{"other key", pemOf(leaf, inter), keyPEM(t, other), nil, []string{"does not belong"}},
		{"two labels under wildcard", pemOf(leaf, inter), keyPEM(t, leaf), []string{"x.y.a.example", "b.example"},
			[]string{"does not cover x.y.a.example, b.example (it names a.example, *.a.example)"}},
		{"expired", pemOf(expiredLeaf, expiredInter), keyPEM(t, expiredLeaf), []string{"a.example"},
			[]string{"the certificate expired at", `certificate 2 ("Old Inter") expired at`}},
		{"not yet valid", pemOf(future, inter), keyPEM(t, future), []string{"a.example"}, []string{"is not valid before"}},
		{"everything", pemOf(inter, other), keyPEM(t, leaf), []string{"a.example"},
			[]string{"is a CA", "is not signed by", "does not belong", "does not cover a.example"}},
	} {
		_, err := certs.CheckUpload(tc.chain, tc.key, tc.domains, now)
		var ue *certs.UploadError
		if !errors.As(err, &ue) {
			t.Errorf("%s: err = %v, want an UploadError", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			w = strings.ReplaceAll(w, `\"`, `"`)
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: err = %v; want it to say %q", tc.name, err, w)
			}
		}
	}
}

func TestCovers(t *testing.T) {
	t.Parallel()
	sans := []string{"Example.com", "*.example.com", "*.x.example.net"}
	for domain, want := range map[string]bool{
		"example.com": true, "EXAMPLE.COM.": true, "www.example.com": true, "*.example.com": true,
		"a.b.example.com": false, "example.net": false, "x.example.net": false, "a.x.example.net": true,
		".example.com": false, "*.a.example.com": false, "other.com": false,
	} {
		if got := certs.Covers(sans, domain); got != want {
			t.Errorf("Covers(%v, %q) = %v, want %v", sans, domain, got, want)
		}
	}
	if certs.Covers([]string{"*.com"}, "example.com") {
		t.Error("*.com covers example.com: a wildcard needs a parent of two labels at least")
	}
}

func TestRenewAfter(t *testing.T) {
	t.Parallel()
	day := 24 * time.Hour
	nb := now
	// 90 days: 30 days before expiry, moved earlier by at most 6 hours.
	at := certs.RenewAfter("site-1", nb, nb.Add(90*day), nb, nil)
	if want := nb.Add(60 * day); at.After(want) || at.Before(want.Add(-certs.MaxJitter)) {
		t.Errorf("90-day: %v, want within 6h before %v", at, want)
	}
	// Stable per site; different across sites.
	if again := certs.RenewAfter("site-1", nb, nb.Add(90*day), nb, nil); !again.Equal(at) {
		t.Errorf("not stable: %v then %v", at, again)
	}
	distinct := map[time.Time]bool{}
	for _, s := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		distinct[certs.RenewAfter(s, nb, nb.Add(90*day), nb, nil)] = true
	}
	if len(distinct) < 6 {
		t.Errorf("8 sites share %d renewal times: no jitter", len(distinct))
	}
	// One year: still 30 days before expiry.
	at = certs.RenewAfter("site-1", nb, nb.Add(365*day), nb, nil)
	if want := nb.Add(335 * day); at.After(want) || at.Before(want.Add(-certs.MaxJitter)) {
		t.Errorf("1-year: %v, want within 6h before %v", at, want)
	}
	// 6 days: at two thirds (day 4), jitter at most a tenth of the 2-day margin.
	at = certs.RenewAfter("site-1", nb, nb.Add(6*day), nb, nil)
	if want := nb.Add(4 * day); at.After(want) || at.Before(want.Add(-certs.MaxJitter)) {
		t.Errorf("6-day: %v, want within 6h before %v", at, want)
	}
	// Past due: now.
	late := nb.Add(89 * day)
	if at := certs.RenewAfter("site-1", nb, nb.Add(90*day), late, nil); !at.Equal(late) {
		t.Errorf("past due: %v, want now %v", at, late)
	}
	// A CA window: inside it, stable per site.
	w := &certs.Window{Start: nb.Add(50 * day), End: nb.Add(52 * day)}
	at = certs.RenewAfter("site-1", nb, nb.Add(90*day), nb, w)
	if at.Before(w.Start) || at.After(w.End) {
		t.Errorf("ARI: %v, want inside [%v, %v]", at, w.Start, w.End)
	}
	// A window in the past (revoked: the CA wants it replaced): now.
	w = &certs.Window{Start: nb.Add(-2 * day), End: nb.Add(-day)}
	if at := certs.RenewAfter("site-1", nb, nb.Add(90*day), nb, w); !at.Equal(nb) {
		t.Errorf("past window: %v, want now", at)
	}
}
