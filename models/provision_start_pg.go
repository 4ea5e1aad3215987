package models

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/uptrace/bun"
)

// startRow is the one row startProvisionPG's statement returns: the
// operation, server and site as they are after it, each column named with
// its model's prefix, and the operation's server_touched_at before it.
type startRow struct {
	Op            Operation  `bun:"embed:op_"`
	VPS           VPSServer  `bun:"embed:vps_"`
	Site          Site       `bun:"embed:site_"`
	TouchedBefore *time.Time `bun:"touched_before"`
	Partial       *int       `bun:"partial"` // never set: the statement fails instead
}

// startProvisionPG is StartProvision on PostgreSQL: one autocommitted
// statement, one round trip and one commit, where it took five round trips
// in a transaction (BEGIN, claim, slot, bind, COMMIT).
//
// Three locking reads come first, each only if the one before found its
// row: the operation, if it is a provision pending or running with no
// cancel asked (FOR UPDATE: a cancel that commits meanwhile is waited for
// and then refused); its site, if it is pending or provisioning, unplaced
// and not deleted (FOR UPDATE); and the best server for the operation's
// tenant that no other placement holds at this instant (FOR UPDATE SKIP
// LOCKED: concurrent placements would otherwise all choose the same
// least-loaded server and queue on its row). Only when all three found a
// row do the three updates run: the operation running with its attempt
// counted, its progress raised and its server marked touched; the server's
// slot taken; the site provisioning on it. The rows are locked by then, so
// the updates find them as the reads did; should one still update nothing,
// the final SELECT fails the statement, and PostgreSQL rolls all of it
// back: all or nothing, as the transaction was. When a read finds nothing,
// nothing is written and it is errStepByStep.
//
// The statement's text is the same on every call (startProvisionSQL), its
// three values sent as parameters, so each connection prepares it once and
// PostgreSQL reuses its plan: planned each time, the plan alone cost 1.35
// ms of PostgreSQL's CPU per provision (pg_stat_statements, drain.sh).
//
// q is where the statement runs: db itself (autocommitted), or a
// transaction of StartProvisions; db scans the row.
func startProvisionPG(ctx context.Context, db *bun.DB, q bun.IDB, text string, opID string, progress int, now time.Time) (*ProvisionStart, error) {
	rows, err := queryPrepared(ctx, q, text, opID, progress, now)
	if err != nil {
		return nil, fmt.Errorf("start provision %s: %w", opID, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("start provision %s: %w", opID, err)
		}
		return nil, errStepByStep
	}
	var row startRow
	if err := db.ScanRow(ctx, rows, &row); err != nil {
		return nil, fmt.Errorf("start provision %s: read the result: %w", opID, err)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("start provision %s: %w", opID, err)
	}
	return &ProvisionStart{Operation: &row.Op, Site: &row.Site, VPS: &row.VPS, TouchedBefore: row.TouchedBefore != nil}, nil
}

// startProvisionSQL is startProvisionPG's statement, with the operation's
// ID as $1, the progress as $2 and the time as $3, and every other value
// (the statuses, the operation type, the candidate servers' conditions)
// written into its text.
func startProvisionSQL(db *bun.DB) string {
	best := candidateQuery(db, bun.Safe("(SELECT tenant_id FROM op0)")).Column("id").
		Where("EXISTS (SELECT 1 FROM site0)").Limit(1).For("UPDATE SKIP LOCKED")
	return db.QueryGen().FormatQuery(`WITH op0 AS (
		SELECT id, tenant_id, target_id, server_touched_at FROM operations
		WHERE id = $1 AND op_type = ? AND status IN (?, ?) AND cancel_requested_at IS NULL
		FOR UPDATE
	), site0 AS (
		SELECT id FROM sites
		WHERE id = (SELECT target_id FROM op0) AND vps_id IS NULL AND deleted_at IS NULL AND status IN (?, ?)
		FOR UPDATE
	), vps0 AS (?),
	chosen AS (
		SELECT op0.id AS op_id, site0.id AS site_id, vps0.id AS vps_id, op0.server_touched_at FROM op0, site0, vps0
	), o AS (
		UPDATE operations AS o SET status = ?, attempts = o.attempts + 1, started_at = COALESCE(o.started_at, $3),
			progress = GREATEST(o.progress, $2), server_touched_at = COALESCE(o.server_touched_at, $3), updated_at = $3
		FROM chosen WHERE o.id = chosen.op_id
		RETURNING o.*
	), v AS (
		UPDATE vps_servers AS v SET site_count = v.site_count + 1, updated_at = $3
		FROM chosen WHERE v.id = chosen.vps_id AND v.status = ? AND v.site_count < v.site_capacity
		RETURNING v.*
	), s AS (
		UPDATE sites AS s SET vps_id = chosen.vps_id, status = ?, updated_at = $3
		FROM chosen WHERE s.id = chosen.site_id
		RETURNING s.*
	)
	SELECT ?, ?, ?, chosen.server_touched_at AS touched_before,
		CASE WHEN o.id IS NULL OR v.id IS NULL OR s.id IS NULL
			THEN ('start provision: a locked row was not updated, operation ' || chosen.op_id)::int END AS partial
	FROM chosen LEFT JOIN o ON true LEFT JOIN v ON true LEFT JOIN s ON true`,
		OpTypeSiteProvision, OpPending, OpRunning,
		SiteStatusPending, SiteStatusProvisioning,
		best,
		OpRunning,
		VPSStatusActive,
		SiteStatusProvisioning,
		prefixedColumns(db, (*Operation)(nil), "o", "op_"),
		prefixedColumns(db, (*VPSServer)(nil), "v", "vps_"),
		prefixedColumns(db, (*Site)(nil), "s", "site_"),
	)
}

// prefixedColumns lists model's columns as alias.column AS prefix+column,
// for a statement that returns several tables' rows side by side into
// structs embedded with that prefix.
func prefixedColumns(db bun.IDB, model any, alias, prefix string) bun.Safe {
	t := db.Dialect().Tables().Get(reflect.TypeOf(model))
	cols := make([]string, 0, len(t.Fields))
	for _, f := range t.Fields {
		cols = append(cols, alias+"."+string(f.SQLName)+" AS "+prefix+f.Name)
	}
	return bun.Safe(strings.Join(cols, ", "))
}
