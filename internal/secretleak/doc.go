// Package secretleak holds the test that runs the chom binary with
// secret-bearing settings, bad and good, and fails if a secret appears in any
// line it writes (docs/operations.md, Security). It has no code of its own.
package secretleak
