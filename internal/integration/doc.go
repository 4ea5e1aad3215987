// Package integration holds CHOM's end-to-end tests: a whole stack (API, worker,
// reconciler, local driver) on real PostgreSQL or SQLite and a real Redis, driven
// over HTTP as an API caller would. It has no code outside its tests.
package integration
