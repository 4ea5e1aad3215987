// Package domainverify checks that whoever claims a domain controls it, the
// two ways CHOM accepts (see docs/api.md, "Domains"):
//
//   - a DNS TXT record _chom-challenge.<domain> whose value is the claim's
//     token, read through a configurable resolver (CHOM_DNS_RESOLVER);
//   - an HTTP token: http://<domain>/.well-known/chom-challenge/<token>
//     answering the token, for a domain still served by its current host.
//
// The HTTP check fetches a URL a tenant chose, so it is built against SSRF:
// the domain is resolved with the same resolver and every address is checked
// at dial time (no DNS rebinding between check and connect); loopback,
// private, link-local (cloud metadata at 169.254.169.254), shared, reserved
// and documentation ranges are refused unless the test-only AllowNonPublic is
// set; no proxy from the environment; redirects are followed only on the same
// host, at most three; the body is read up to a small limit; every step has
// a short timeout.
package domainverify
