// Package models holds CHOM's persistent state: the bun models, the migrations that
// create them on PostgreSQL and SQLite alike, and the queries that read and change them.
//
// Every query that touches tenant data takes the tenant ID as an argument and filters
// on it; nothing here trusts a tenant ID that came from a request body. State changes
// that emit events write their outbox rows in the same transaction.
package models
