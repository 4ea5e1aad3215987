package models

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
)

// OutboxChannel is the PostgreSQL notification channel of the outbox: every
// transaction that writes outbox rows sends a notification on it, whose payload
// is the schema of the rows, so the relay publishes at the commit instead of at
// its next poll.
const OutboxChannel = "chom_outbox"

// notifyOutbox is the statement a writer of outbox rows runs in its
// transaction. PostgreSQL delivers the notification only when the transaction
// commits (never for a rolled-back one) and folds identical notifications of
// one transaction into one, so a transaction that writes many rows wakes the
// relay once.
const notifyOutbox = "SELECT pg_notify('" + OutboxChannel + "', current_schema())"

// ErrListenUnsupported is returned by ListenOutbox on a database that has no
// notifications (SQLite): the relay polls there.
var ErrListenUnsupported = errors.New("outbox notifications need PostgreSQL")

// NotifyOutbox tells a listening relay, when tx commits, that tx wrote outbox
// rows. The store's own writes call it; code that writes outbox rows by other
// means (tests, tools) calls it in the same transaction. It does nothing on
// SQLite.
func NotifyOutbox(ctx context.Context, tx bun.IDB) error {
	if !IsPostgres(tx) {
		return nil
	}
	if _, err := tx.ExecContext(ctx, notifyOutbox); err != nil {
		return fmt.Errorf("notify outbox: %w", err)
	}
	return nil
}

// OutboxListener is a dedicated PostgreSQL session listening on OutboxChannel
// for the notifications of the store's schema. It is not safe for concurrent
// use; one goroutine waits on it and closes it.
type OutboxListener struct {
	conn   *pgx.Conn
	schema string
}

// ListenOutbox opens a new session with the settings of the store's pool (the
// same server, user and search path) and listens on OutboxChannel. The session
// is outside the pool: it never serves another query, and closing it stops the
// listening. It returns ErrListenUnsupported on SQLite.
func (s *Store) ListenOutbox(ctx context.Context) (*OutboxListener, error) {
	if !s.pg {
		return nil, ErrListenUnsupported
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("listen outbox: connect: %w", err)
	}
	var cfg *pgx.ConnConfig
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("driver connection is %T, not pgx", dc)
		}
		cfg = c.Conn().Config()
		return nil
	})
	_ = conn.Close() // back to the pool: only its settings were needed
	if err != nil {
		return nil, fmt.Errorf("listen outbox: %w", err)
	}
	// The copy carries the pool connection's notification handler, which would
	// buffer this session's notifications on that connection; pgx installs its
	// own when there is none.
	cfg.OnNotification = nil
	pc, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("listen outbox: connect: %w", err)
	}
	l := &OutboxListener{conn: pc}
	if err := pc.QueryRow(ctx, "SELECT current_schema()").Scan(&l.schema); err != nil {
		_ = pc.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("listen outbox: schema: %w", err)
	}
	if _, err := pc.Exec(ctx, "LISTEN "+OutboxChannel); err != nil {
		_ = pc.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("listen outbox: %w", err)
	}
	return l, nil
}

// Wait blocks until a notification for the store's schema arrives, and
// returns nil; notifications of other schemas are skipped. It returns ctx's
// error when ctx ends, or the session's error when the session is lost
// (terminated, network down): the listener is then unusable, close it.
func (l *OutboxListener) Wait(ctx context.Context) error {
	for {
		n, err := l.conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("wait for outbox notification: %w", err)
		}
		if n != nil && n.Channel == OutboxChannel && n.Payload == l.schema {
			return nil
		}
	}
}

// PID is the server process ID of the listening session (pg_backend_pid), for
// logs and for tests that terminate the session.
func (l *OutboxListener) PID() uint32 { return l.conn.PgConn().PID() }

// Close ends the session, and with it the listening.
func (l *OutboxListener) Close(ctx context.Context) error {
	if err := l.conn.Close(ctx); err != nil {
		return fmt.Errorf("close outbox listener: %w", err)
	}
	return nil
}
