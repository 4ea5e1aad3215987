package certs

import (
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// RenewBefore is how long before expiry a certificate of 90 days or more is
// renewed when the CA gives no window: 30 days, Let's Encrypt's advice.
const RenewBefore = 30 * 24 * time.Hour

// MaxJitter is the widest spread of renewal times: sites whose certificates
// were issued together do not all renew in the same minute.
const MaxJitter = 6 * time.Hour

// Window is the renewal window a CA suggests through ACME Renewal
// Information (RFC 9773): renew between Start and End.
type Window struct {
	Start, End time.Time
	// RetryAfter is how long the CA asks to be left before it is asked
	// again (its Retry-After); 0 when it said nothing.
	RetryAfter time.Duration
	// ExplanationURL is the CA's page explaining the window (a mass
	// revocation, say), for the operator; "" when it gave none.
	ExplanationURL string
}

// RenewAfter is when the certificate of site siteID, valid from notBefore to
// notAfter, is due for renewal.
//
// Without a window (ari nil or empty) it is when the smaller of 30 days and
// a third of the lifetime remains: 30 days before expiry for a 90-day
// certificate and anything longer, at two thirds of the lifetime for a
// shorter one (a 6-day certificate renews after 4 days), so a failed
// renewal always leaves a third of the lifetime (at least) to retry in. It
// is then moved earlier by a jitter of up to MaxJitter (or a tenth of the
// time left, whichever is smaller), never later, so jitter never eats into
// the margin.
//
// With a window from the CA, it is a point inside the window; a window whose
// end has passed means now (the CA wants the certificate replaced, e.g.
// revoked).
//
// The jitter and the point in the window are drawn from the site's ID, not
// at random: the same site gets the same time on every call, so the sweep
// can recompute it without the record moving. The result is never before
// now: a certificate past its time is due now.
func RenewAfter(siteID string, notBefore, notAfter, now time.Time, ari *Window) time.Time {
	frac := spread(siteID)
	var at time.Time
	if ari != nil && !ari.Start.IsZero() && !ari.End.Before(ari.Start) {
		at = ari.Start.Add(time.Duration(frac * float64(ari.End.Sub(ari.Start))))
		if ari.End.Before(now) {
			at = now
		}
	} else {
		life := notAfter.Sub(notBefore)
		margin := min(RenewBefore, life/3)
		jitter := min(MaxJitter, margin/10)
		at = notAfter.Add(-margin).Add(-time.Duration(frac * float64(jitter)))
	}
	if at.Before(now) {
		at = now
	}
	return at.UTC().Truncate(time.Second)
}

// spread maps a site ID to a fraction in [0, 1), the same for the same ID.
func spread(siteID string) float64 {
	h := sha256.Sum256([]byte("chom/renew-jitter/" + siteID))
	return float64(binary.BigEndian.Uint64(h[:8])>>11) / float64(1<<53)
}
