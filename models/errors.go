package models

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors returned by the queries of this package, wrapped with context.
// ingress maps them to HTTP statuses in one place.
var (
	// ErrNotFound: no such row for this tenant (another tenant's row is not found too).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the row exists in a state that forbids the change.
	ErrConflict = errors.New("conflict")
	// ErrIdempotencyMismatch: an Idempotency-Key was reused with a different request.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	// ErrNoCapacity: no server can take another site right now.
	ErrNoCapacity = errors.New("no server with free capacity")
)

// ConflictError is an ErrConflict that names what is in the way, such as the
// operation already running on a site.
type ConflictError struct {
	// Reason says what is in the way, for the client.
	Reason string
	// OperationID names the operation in the way, if any.
	OperationID string
	// Field names the request field whose value is taken ("domain"), if
	// the conflict is about one; Detail is the sentence fragment that
	// follows it ("is already in use by another site").
	Field, Detail string
}

func (e *ConflictError) Error() string { return "conflict: " + e.Reason }

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// errDomainTaken is the conflict of a site whose domain a live site already
// uses; it names the domain field.
func errDomainTaken() *ConflictError {
	return &ConflictError{Reason: "domain is already in use by another site", Field: "domain", Detail: "is already in use by another site"}
}

// uniqueViolation reports whether err is a unique violation of an index whose
// name starts with constraint (PostgreSQL's SQLSTATE 23505 names it), or, on
// SQLite, whose message contains sqliteText (SQLite names the columns, not the
// index): a concurrent transaction inserted the same key first.
func uniqueViolation(err error, constraint, sqliteText string) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505" && strings.HasPrefix(pgErr.ConstraintName, constraint)
	}
	return strings.Contains(err.Error(), sqliteText)
}
