package models

import (
	"context"
	"fmt"
	"time"
)

// DefaultPruneBatch is the most rows one prune statement deletes when the
// caller passes 0: a statement deleting 5,000 rows holds its locks for tens of
// milliseconds, short enough that an accept or a poll never waits on it for
// long.
const DefaultPruneBatch = 5000

// PruneOperations deletes at most batch finished operations whose finished_at
// is before cutoff, oldest first, in one statement, and returns how many it
// deleted; the caller repeats it (with a pause) until it deletes fewer than
// batch. It never deletes:
//   - an unfinished operation (pending or running, finished_at NULL);
//   - an operation a live row still names: a site's or a backup's
//     operation_id (set while the operation acts on it), an idempotency key
//     that has not expired (a retried request replays that operation), a
//     certificate upload waiting for its operation (the operation deletes it
//     when it finishes, so one still there is kept for a person to look at).
//
// There are no foreign keys to operations; these checks are what keeps every
// operation_id resolvable. Audit rows name operations too, but an audit row is
// complete on its own (actor, action, target, request) and outlives the
// operation: see PruneAuditLogs. Outbox events carry the operation in their
// data and are pruned by their own retention once published.
//
// Each candidate is found through operations_finished_idx and checked with
// one index probe per referencing table, so a batch costs the same whatever
// the history's size.
func (s *Store) PruneOperations(ctx context.Context, cutoff time.Time, batch int) (int64, error) {
	if batch <= 0 {
		batch = DefaultPruneBatch
	}
	res, err := s.db.NewRaw(`DELETE FROM operations WHERE id IN (
		SELECT o.id FROM operations AS o
		WHERE o.finished_at IS NOT NULL AND o.finished_at < ? AND o.status IN (?, ?, ?)
		AND NOT EXISTS (SELECT 1 FROM sites AS s WHERE s.operation_id = o.id)
		AND NOT EXISTS (SELECT 1 FROM site_backups AS b WHERE b.operation_id = o.id)
		AND NOT EXISTS (SELECT 1 FROM idempotency_keys AS k WHERE k.operation_id = o.id AND k.expires_at > ?)
		AND NOT EXISTS (SELECT 1 FROM certificate_uploads AS u WHERE u.operation_id = o.id)
		ORDER BY o.finished_at ASC LIMIT ?)`,
		cutoff.UTC(), OpSucceeded, OpFailed, OpCancelled, s.nowUTC(), batch).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("prune operations finished before %s: %w", cutoff.UTC().Format(time.RFC3339), err)
	}
	return affected(res), nil
}

// PruneAuditLogs deletes at most batch audit rows written before cutoff,
// oldest first, in one statement, and returns how many it deleted; the caller
// repeats it until it deletes fewer than batch. Audit rows have their own,
// longer retention than operations (CHOM_AUDIT_RETENTION): the audit trail
// answers "who did what, when" after the operation itself is gone.
func (s *Store) PruneAuditLogs(ctx context.Context, cutoff time.Time, batch int) (int64, error) {
	if batch <= 0 {
		batch = DefaultPruneBatch
	}
	res, err := s.db.NewRaw(`DELETE FROM audit_logs WHERE id IN (
		SELECT id FROM audit_logs WHERE created_at < ? ORDER BY created_at ASC LIMIT ?)`,
		cutoff.UTC(), batch).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("prune audit rows written before %s: %w", cutoff.UTC().Format(time.RFC3339), err)
	}
	return affected(res), nil
}
