// Package migrations holds CHOM's schema migrations, written once and run on both
// PostgreSQL and SQLite. Each migration is plain SQL with a few type placeholders
// that the running dialect fills in, so the two schemas cannot drift apart.
//
// Migrations are append-only: once shipped, a file never changes; a fix is a new file.
package migrations
