// Package devca is `chom dev`'s development certificate authority: Let's
// Encrypt's test CA, Pebble, run from its own packages inside the process,
// so the whole HTTPS flow (order, HTTP-01 validation, certificate, renewal
// information) works with no network.
//
// Start serves Pebble's ACME directory on a loopback port over TLS, with a
// certificate generated at start: ClientRootsPEM is the root a client (the
// worker's issuer) must trust to talk to it. Pebble's own CA issues the
// certificates; IssuedRootsPEM is its root, which a browser or curl would
// have to trust to accept them. Everything is kept in memory and made anew
// at each Start: a restarted CA has a new root and knows no account.
//
// Validation is real, as with a public CA: Pebble's VA resolves every name
// through a small DNS server of this package, which answers 127.0.0.1 for
// any name (A records only), and fetches
// http://<domain>:<port>/.well-known/acme-challenge/<token> from an HTTP
// server on 127.0.0.1:<port> that runs Config.HTTP01 (the local driver's
// ChallengeHandler in `chom dev`). A token the handler does not answer is a
// failed challenge. DNS-01 always fails (the DNS server has no TXT record).
//
// Pebble's VA and WFE read PEBBLE_* environment variables when Start builds
// them. This package never sets one: the process's environment applies as
// it is. PEBBLE_VA_ALWAYS_VALID, which would turn validation off, makes
// Start fail. Without PEBBLE_VA_NOSLEEP=1 the VA waits a random 0-4 s before
// each validation, as Pebble does by default to shake out clients that
// assume an instant answer; an issuance then takes a few seconds.
// Pebble also rejects 5% of nonces (PEBBLE_WFE_NONCEREJECT) and reuses a
// valid authorization half of the time (PEBBLE_AUTHZREUSE), as a real CA may.
//
// Pebble gives no way to stop its VA's task loop: one idle goroutine stays
// after Close. A process starts one CA; tests start a few.
package devca
