package drainbench

import (
	"bytes"
	"context"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"
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

// TxCounter is a bun query hook that counts transactions. bun runs a
// transaction's BEGIN, its statements and its COMMIT on the goroutine that
// called RunInTx, so a statement is inside a transaction when its goroutine
// has an open one. Finding the goroutine costs a stack read per statement:
// the benchmark turns the counter on for a separate, untimed pass.
type TxCounter struct {
	mu   sync.Mutex
	open map[uint64]bool
	c    TxCounts
}

var _ bun.QueryHook = (*TxCounter)(nil)

// NewTxCounter returns a counter at zero.
func NewTxCounter() *TxCounter { return &TxCounter{open: map[uint64]bool{}} }

// BeforeQuery does nothing.
func (t *TxCounter) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context { return ctx }

// AfterQuery counts the statement.
func (t *TxCounter) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	g := goroutineID()
	op := strings.ToUpper(e.Operation())
	// A raw statement (bun.NewRaw) says SELECT whatever it does: its first
	// word says more.
	if w, _, _ := strings.Cut(strings.TrimSpace(e.Query), " "); slices.Contains([]string{"UPDATE", "INSERT", "DELETE", "WITH"}, w) {
		op = w
	}
	took := time.Since(e.StartTime).Nanoseconds()
	kind := op
	switch op {
	case "WITH":
		// Data-modifying CTEs (a batch's): a write, whose first quoted
		// name may be a value, not a table.
		kind = "WITH (batch)"
	case "UPDATE", "INSERT", "SELECT":
		kind += " " + firstTable(e.Query)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.c.Wait == nil {
		t.c.Wait = map[string]int64{}
	}
	t.c.Wait[kind] += took
	t.c.Statements++
	switch op {
	case "BEGIN":
		t.open[g] = true
		t.c.Explicit++
		t.c.Transactions++
	case "COMMIT", "ROLLBACK":
		delete(t.open, g)
		if op == "ROLLBACK" {
			t.c.Rollbacks++
		}
	default:
		if t.open[g] {
			return
		}
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

// goroutineID is the running goroutine's ID, read from the first line of its
// stack ("goroutine 123 [running]:").
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
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
