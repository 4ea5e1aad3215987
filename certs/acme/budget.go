package acme

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"
)

// Budget reserves room under the CA's rate limits before an order is sent,
// fleet-wide (models.CertificateStore implements it in the database).
type Budget interface {
	// Reserve takes one new order of account and one certificate of each
	// registered domain, or fails with an error that has a
	// RetryAt() time.Time method when a limit is reached.
	Reserve(ctx context.Context, account string, registeredDomains []string) (reservation string, err error)
	// Settle ends a reservation: orderSeen says whether the CA created the
	// order (else nothing counts), issued whether a certificate came out
	// (else the certificates are given back).
	Settle(ctx context.Context, reservation string, orderSeen, issued bool) error
}

// retryAter is the error a Budget denies with.
type retryAter interface{ RetryAt() time.Time }

// RegisteredDomains are the distinct registered domains (eTLD+1, by the
// public suffix list) of domains: what Let's Encrypt counts certificates
// per.
func RegisteredDomains(domains []string) ([]string, error) {
	var out []string
	for _, d := range domains {
		d = strings.TrimSuffix(strings.TrimPrefix(strings.ToLower(d), "*."), ".")
		rd, err := publicsuffix.EffectiveTLDPlusOne(d)
		if err != nil {
			return nil, fmt.Errorf("registered domain of %s: %w", d, err)
		}
		if !slices.Contains(out, rd) {
			out = append(out, rd)
		}
	}
	slices.Sort(out)
	return out, nil
}
