package metrics

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/uptrace/bun"
)

// dbOp is the operation label of a database statement.
type dbOp int

const (
	opSelect dbOp = iota
	opInsert
	opUpdate
	opDelete
	opOther
	numDBOps
)

func (o dbOp) String() string {
	return [...]string{"SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"}[o]
}

type dbChild struct {
	queries, errors prometheus.Counter
	duration        prometheus.Observer
}

// QueryHook returns the bun hook that feeds chom_db_queries_total,
// chom_db_query_errors_total and chom_db_query_duration_seconds; add it to a
// *bun.DB with AddQueryHook before the DB is used. Its per-statement cost is a
// keyword comparison and three updates of pre-resolved series: no allocation,
// no lock. sql.ErrNoRows is not counted as an error (it is an answer).
func (m *Metrics) QueryHook() bun.QueryHook { return queryHook{m} }

type queryHook struct{ m *Metrics }

// BeforeQuery does nothing: bun already stamps the event's StartTime.
func (queryHook) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context { return ctx }

// AfterQuery records the statement.
func (h queryHook) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	c := &h.m.db[classify(e.Operation())]
	c.queries.Inc()
	c.duration.Observe(time.Since(e.StartTime).Seconds())
	if e.Err != nil && !errors.Is(e.Err, sql.ErrNoRows) {
		c.errors.Inc()
	}
}

// classify maps bun's operation (its query type, or the start of a raw
// statement, which may run on past a newline) to a label; BEGIN, COMMIT, WITH …
// and DDL are OTHER.
func classify(op string) dbOp {
	switch {
	case keyword(op, "SELECT"):
		return opSelect
	case keyword(op, "INSERT"):
		return opInsert
	case keyword(op, "UPDATE"):
		return opUpdate
	case keyword(op, "DELETE"):
		return opDelete
	}
	return opOther
}

// keyword reports whether s starts with the word kw, in any case.
func keyword(s, kw string) bool {
	if len(s) < len(kw) || !strings.EqualFold(s[:len(kw)], kw) {
		return false
	}
	if len(s) == len(kw) {
		return true
	}
	switch s[len(kw)] {
	case ' ', '\t', '\n', '\r', '(':
		return true
	}
	return false
}
