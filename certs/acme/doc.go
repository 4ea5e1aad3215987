// Package acme issues certificates through an ACME CA (Let's Encrypt, or
// Pebble in tests) with lego v5.
//
// An Issuer holds one ACME account per (directory URL, email), registered on
// first use and kept in an AccountStore (models seals its key), so every
// worker of the fleet uses the same account. Issue takes a site's domains and
// the challenge to answer: HTTP-01 through the site's own HTTP01Presenter (the
// later job adapts drivers.TLSDeployer to it), DNS-01 through the platform's
// DNSProvider (ChallTestSrvDNS in tests and development, RFC2136 for BIND,
// PowerDNS or Knot). Wildcards need DNS-01.
//
// Every failure comes back as an *Error with a stable Code (CodeRateLimited,
// CodeCARefused, CodeChallengeFailed, CodeChallengeTimeout,
// CodeCAUnreachable, CodeInternal, ...) and a message a job can put on the operation;
// Error.Temporary says whether retrying later can succeed, and a reservation
// the rate-limit Budget denied comes back as CodeDeferred with the time to
// retry at.
package acme
