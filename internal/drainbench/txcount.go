package drainbench

import (
	"context"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// TxCounts are the database work a process did, as its client saw it.
type TxCounts struct {
	// Transactions is every unit the server committed or rolled back: the
	// explicit ones (BEGIN … COMMIT/ROLLBACK) and every statement run
	// outside one (autocommit).
	Transactions int64 `json:"transactions"`
	// Explicit are the BEGINs; Autocommit the statements outside a
	// transaction, of which AutocommitWrites changed rows (not SELECT).
	Explicit         int64 `json:"explicit"`
	Autocommit       int64 `json:"autocommit"`
	AutocommitWrites int64 `json:"autocommit_writes"`
	// Statements is every round trip, BEGIN and COMMIT included.
	Statements int64 `json:"statements"`
	// Rollbacks are the explicit transactions rolled back.
	Rollbacks int64 `json:"rollbacks"`
	// Wait is the time callers spent waiting for statements, by kind
	// (BEGIN, SELECT, UPDATE, INSERT, COMMIT...), in nanoseconds.
	Wait map[string]int64 `json:"wait_ns"`
}

// Commits is how many units wrote: the explicit transactions committed and
// the autocommit writes. With fsync on, each is a WAL flush the caller waits
// for (PostgreSQL groups concurrent ones).
func (c TxCounts) Commits() int64 { return c.Explicit - c.Rollbacks + c.AutocommitWrites }

// TxCounter is a pgx query tracer that counts transactions: it sees every
// statement a connection runs (bun's, those sent with parameters past bun,
// BEGIN, COMMIT), and a statement is inside a transaction when its
// connection was in one as it started. The benchmark turns it on for a
// separate, untimed pass (models.PoolConfig.Tracer).
type TxCounter struct {
	mu sync.Mutex
	c  TxCounts
}

var _ pgx.QueryTracer = (*TxCounter)(nil)

// NewTxCounter returns a counter at zero.
func NewTxCounter() *TxCounter { return &TxCounter{} }

// traceStart is what TraceQueryStart hands TraceQueryEnd.
type traceStart struct {
	sql   string
	start time.Time
	inTx  bool // the connection was in a transaction as the statement started
}

type traceKey struct{}

// TraceQueryStart notes the statement, the time and whether its
// connection is in a transaction.
func (t *TxCounter) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, traceKey{}, traceStart{sql: data.SQL, start: time.Now(), inTx: conn.PgConn().TxStatus() != 'I'})
}

// TraceQueryEnd counts the statement.
func (t *TxCounter) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	st, ok := ctx.Value(traceKey{}).(traceStart)
	if !ok {
		return
	}
	w, _, _ := strings.Cut(strings.TrimSpace(st.sql), " ")
	w, _, _ = strings.Cut(w, "\n")
	op := strings.ToUpper(strings.TrimSpace(w))
	kind := op
	switch op {
	case "WITH":
		// Data-modifying CTEs (a batch's, the start's): a write, named by
		// its first CTE ("WITH op0": the start, "WITH i": the completion
		// batch), since its first quoted name may be a value, not a table.
		kind = "WITH (batch)"
		if f := strings.Fields(st.sql); len(f) > 1 {
			kind = "WITH " + f[1]
		}
	case "UPDATE", "INSERT", "SELECT":
		kind += " " + firstTable(st.sql)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.c.Wait == nil {
		t.c.Wait = map[string]int64{}
	}
	t.c.Wait[kind] += time.Since(st.start).Nanoseconds()
	t.c.Statements++
	switch {
	case strings.HasPrefix(op, "BEGIN"):
		t.c.Explicit++
		t.c.Transactions++
	case op == "COMMIT":
	case op == "ROLLBACK":
		t.c.Rollbacks++
	case st.inTx:
	default:
		t.c.Autocommit++
		t.c.Transactions++
		if op != "SELECT" {
			t.c.AutocommitWrites++
		}
	}
}

// Counts returns the counts so far.
func (t *TxCounter) Counts() TxCounts {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.c
	c.Wait = maps.Clone(t.c.Wait)
	return c
}

// firstTable is the first quoted name in query (bun quotes table names):
// the table an UPDATE or INSERT writes, the first one a SELECT reads.
// An UPDATE written by hand (bun.NewRaw) names its table unquoted, second.
func firstTable(query string) string {
	if f := strings.Fields(query); len(f) > 1 && f[0] == "UPDATE" && !strings.HasPrefix(f[1], `"`) {
		return f[1]
	}
	i := strings.IndexByte(query, '"')
	if i < 0 {
		return "?"
	}
	j := strings.IndexByte(query[i+1:], '"')
	if j < 0 {
		return "?"
	}
	return query[i+1 : i+1+j]
}
