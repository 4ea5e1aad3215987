package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/schema"
)

// outboxLockKey is the PostgreSQL advisory lock of the relay leader. It is keyed
// by the current schema, so relays of different schemas (tests, tenants of one
// server) never wait for each other.
const outboxLockKey = "hashtext(current_schema() || '.chom_outbox_relay')"

// OutboxLease is the right to publish the outbox: the relay that holds it is the
// only one that reads and marks rows, so each tenant's events leave in order.
//
// On PostgreSQL it is a session advisory lock held by one dedicated connection,
// and every read and mark goes through that connection: if the session dies (the
// relay crashed, the network dropped), the lock is released at once, another relay
// takes over, and the old one's next query fails instead of acting without the
// lock. On SQLite, which one process owns, the lease is only a handle: run one
// relay per database file.
type OutboxLease struct {
	s    *Store
	conn *bun.Conn // PostgreSQL only: the session holding the lock
	idb  bun.IDB   // where queries go: conn on PostgreSQL, the pool on SQLite
}

// TryOutboxLease takes the relay lease if no other session holds it. It returns
// (nil, nil) when another relay is the leader; the caller polls again later.
func (s *Store) TryOutboxLease(ctx context.Context) (*OutboxLease, error) {
	if !s.pg {
		return &OutboxLease{s: s, idb: s.db}, nil
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox lease: connect: %w", err)
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock("+outboxLockKey+")").Scan(&ok); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("outbox lease: lock: %w", err)
	}
	if !ok {
		_ = conn.Close()
		return nil, nil
	}
	return &OutboxLease{s: s, conn: &conn, idb: conn}, nil
}

// Release gives the lease up: the lock is released and its connection returned.
// A lease whose session already died releases nothing and returns nil.
func (l *OutboxLease) Release(ctx context.Context) error {
	if l == nil || l.conn == nil {
		return nil
	}
	conn := l.conn
	l.conn = nil
	_, err := conn.ExecContext(ctx, "SELECT pg_advisory_unlock("+outboxLockKey+")")
	if cerr := conn.Close(); err == nil && cerr != nil && !errors.Is(cerr, sql.ErrConnDone) {
		err = cerr
	}
	if err != nil && !errors.Is(err, sql.ErrConnDone) {
		// The session is gone or broken: the server released the lock with it.
		return fmt.Errorf("outbox lease: release: %w", err)
	}
	return nil
}

// UnpublishedExcept returns up to limit rows not yet published, in ID order
// (the order in which their transactions wrote them, which keeps each
// tenant's events in the order of its state changes), without the rows whose
// IDs are in skip: the rows a pipelined relay has read and not yet seen
// marked (being published, or acknowledged and being marked), so that it can
// read its next batch while the previous one is on its way. skip is meant to be a few batches
// long (PostgreSQL hashes it). It fails when the lease's session has died.
//
// It walks the partial index of unpublished rows (outbox_events_unpublished_idx)
// from its start, so it finds every row not yet published, a row whose
// transaction committed after rows with higher IDs were read (a straggler)
// too; UnpublishedAfter is the cheaper read that skips those.
func (l *OutboxLease) UnpublishedExcept(ctx context.Context, skip []int64, limit int) ([]OutboxEvent, error) {
	return l.unpublished(ctx, 0, skip, limit)
}

// UnpublishedAfter is UnpublishedExcept limited to rows whose ID is above
// after: one range of the partial index from after on, however many rows
// below it are still being published or marked (and however many index
// entries the rows published since the last VACUUM left behind). It misses a
// straggler below after, which only UnpublishedExcept finds.
func (l *OutboxLease) UnpublishedAfter(ctx context.Context, after int64, skip []int64, limit int) ([]OutboxEvent, error) {
	return l.unpublished(ctx, after, skip, limit)
}

func (l *OutboxLease) unpublished(ctx context.Context, after int64, skip []int64, limit int) ([]OutboxEvent, error) {
	var out []OutboxEvent
	q := l.idb.NewSelect().Model(&out).Where("published_at IS NULL")
	if after > 0 {
		q = q.Where("id > ?", after)
	}
	if len(skip) > 0 {
		q = q.Where("NOT (?)", idIn(l.s.pg, skip))
	}
	if err := q.OrderExpr("id ASC").Limit(int64(limit)).Scan(ctx); err != nil {
		return nil, fmt.Errorf("read unpublished outbox events: %w", err)
	}
	return out, nil
}

// MarkOutboxPublished records that the rows with ids reached Kafka, in one
// statement on any connection of the pool; rows already marked keep their
// published_at. It needs no lease: Kafka acknowledged those rows, so marking
// them is true whoever leads now, and a mark that never happens (a crash
// first) only publishes the rows again. A pipelined relay marks through it
// while its lease's session reads the next rows.
func (s *Store) MarkOutboxPublished(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := s.db.NewUpdate().Model((*OutboxEvent)(nil)).
		Set("published_at = ?", s.nowUTC()).
		Where("?", idIn(s.pg, ids)).
		Where("published_at IS NULL").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("mark %d outbox events published: %w", len(ids), err)
	}
	return nil
}

// idIn is the condition "id is one of ids": on PostgreSQL one array
// parameter (id = ANY('{…}')), which the planner turns into one index scan
// however many IDs there are; elsewhere an IN list.
func idIn(pg bool, ids []int64) schema.QueryWithArgs {
	if pg {
		return bun.SafeQuery("id = ANY(?)", pgdialect.Array(ids))
	}
	return bun.SafeQuery("id IN (?)", bun.In(ids))
}

// OldestUnpublished returns the creation time of the oldest row not yet
// published, and false when every row is published.
func (s *Store) OldestUnpublished(ctx context.Context) (time.Time, bool, error) {
	var rows []OutboxEvent
	err := s.db.NewSelect().Model(&rows).Column("created_at").
		Where("published_at IS NULL").OrderExpr("id ASC").Limit(1).Scan(ctx)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("oldest unpublished outbox event: %w", err)
	}
	if len(rows) == 0 {
		return time.Time{}, false, nil
	}
	return rows[0].CreatedAt, true, nil
}

// OutboxLag is the age of the oldest unpublished row, zero when the outbox is
// drained: how far the events on Kafka trail the database.
func (s *Store) OutboxLag(ctx context.Context) (time.Duration, error) {
	oldest, ok, err := s.OldestUnpublished(ctx)
	if err != nil || !ok {
		return 0, err
	}
	return max(s.nowUTC().Sub(oldest), 0), nil
}

// CountUnpublished returns how many rows wait for the relay.
func (s *Store) CountUnpublished(ctx context.Context) (int, error) {
	n, err := s.db.NewSelect().Model((*OutboxEvent)(nil)).Where("published_at IS NULL").Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("count unpublished outbox events: %w", err)
	}
	return int(n), nil
}

// PruneOutbox deletes rows published before cutoff, at most batch rows per
// statement so no statement holds its locks for long, and returns how many it
// deleted. Unpublished rows are never deleted.
func (s *Store) PruneOutbox(ctx context.Context, cutoff time.Time, batch int) (int64, error) {
	if batch <= 0 {
		batch = 5000
	}
	var total int64
	for {
		sub := s.db.NewSelect().Model((*OutboxEvent)(nil)).Column("id").
			Where("published_at IS NOT NULL AND published_at < ?", cutoff.UTC()).
			OrderExpr("published_at ASC").Limit(int64(batch))
		res, err := s.db.NewDelete().Model((*OutboxEvent)(nil)).Where("id IN (?)", sub).Exec(ctx)
		if err != nil {
			return total, fmt.Errorf("prune outbox events published before %s: %w", cutoff.Format(time.RFC3339), err)
		}
		n := affected(res)
		total += n
		if n < int64(batch) {
			return total, nil
		}
	}
}
