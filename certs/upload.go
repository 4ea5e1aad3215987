package certs

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"strings"
	"time"
)

// UploadError lists every problem of an uploaded certificate at once, so a
// tenant fixes them in one go. The API turns it into problem+json.
type UploadError struct {
	// Problems are sentences, one per problem, in the order checked.
	Problems []string
}

func (e *UploadError) Error() string {
	return "certificate upload rejected: " + strings.Join(e.Problems, "; ")
}

// CheckUpload checks a certificate a tenant uploads for domains at now:
// the chain and key parse; the leaf comes first (not a CA); each certificate
// is signed by the next; the key belongs to the leaf; the leaf covers every
// domain (Covers: wildcards per RFC 6125, one label); the leaf and the
// intermediates are valid at now (neither expired nor not yet valid). It
// returns the parsed Certificate, or an *UploadError naming every problem.
//
// The chain is not required to end at a publicly trusted root: an operator
// may serve certificates of a private CA, and browsers judge trust.
func CheckUpload(chainPEM, keyPEM []byte, domains []string, now time.Time) (*Certificate, error) {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	chain, chainErr := ParseChain(chainPEM)
	if chainErr != nil {
		add("%v", chainErr)
	}
	key, keyErr := ParseKey(keyPEM)
	if keyErr != nil {
		add("%v", keyErr)
	}
	if chainErr != nil {
		return nil, &UploadError{Problems: problems}
	}
	leaf := chain[0]
	if leaf.IsCA {
		add("the first certificate (%q) is a CA: put the site's own certificate first", leaf.Subject.CommonName)
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			add("certificate %d (%q) is not signed by certificate %d (%q): %v",
				i+1, chain[i].Subject.CommonName, i+2, chain[i+1].Subject.CommonName, err)
		}
	}
	if keyErr == nil {
		pub, ok := key.Public().(interface{ Equal(x crypto.PublicKey) bool })
		if !ok || !pub.Equal(leaf.PublicKey) {
			add("the private key does not belong to the first certificate")
		}
	}
	var missing []string
	for _, d := range domains {
		if !Covers(leaf.DNSNames, d) {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		add("the certificate does not cover %s (it names %s)", strings.Join(missing, ", "), namesOf(leaf))
	}
	for i, c := range chain {
		what := "the certificate"
		if i > 0 {
			what = fmt.Sprintf("certificate %d (%q)", i+1, c.Subject.CommonName)
		}
		switch {
		case now.Before(c.NotBefore):
			add("%s is not valid before %s", what, c.NotBefore.UTC().Format(time.RFC3339))
		case now.After(c.NotAfter):
			add("%s expired at %s", what, c.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	if len(problems) > 0 {
		return nil, &UploadError{Problems: problems}
	}
	return fromLeaf(leaf, chainPEM, keyPEM), nil
}

// namesOf lists a certificate's DNS names for a message.
func namesOf(c *x509.Certificate) string {
	if len(c.DNSNames) == 0 {
		return "no DNS names"
	}
	return strings.Join(c.DNSNames, ", ")
}
