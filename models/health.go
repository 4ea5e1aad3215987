package models

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// Sources of a health check.
const (
	// HealthSourceSweep is a check enqueued by the periodic sweep; its key is the
	// period start.
	HealthSourceSweep = "sweep"
	// HealthSourceManual is a check an admin asked for (POST
	// /api/v1/vps/{id}/health-check); its key is the operation ID.
	HealthSourceManual = "manual"
)

// VPSHealthCheck is one health measurement of a server, with the result it was
// classified as and the server's status after it (hysteresis applied). Sizes
// are bytes, durations milliseconds; a zero means "not measured" (a server
// that did not answer has only Reachable=false, Reason and maybe ConnectMS).
type VPSHealthCheck struct {
	bun.BaseModel `bun:"table:vps_health_checks"`

	ID       int64  `bun:"id,pk,autoincrement" json:"-"`
	VPSID    string `bun:"vps_id" json:"vps_id"`
	CheckKey string `bun:"check_key" json:"-"`
	Source   string `bun:"source" json:"source"`
	// PeriodStart is the sweep period of a sweep check; nil for manual checks.
	PeriodStart *time.Time `bun:"period_start" json:"period_start,omitempty"`
	CheckedAt   time.Time  `bun:"checked_at" json:"checked_at"`
	// Result is this check's own verdict (healthy, degraded or unhealthy);
	// StatusAfter is the server's health status once the check was applied.
	Result      string `bun:"result" json:"result"`
	StatusAfter string `bun:"status_after" json:"status_after"`
	Reason      string `bun:"reason" json:"reason,omitempty"`

	Reachable         bool    `bun:"reachable" json:"reachable"`
	ConnectMS         float64 `bun:"connect_ms" json:"connect_ms"`
	Load1             float64 `bun:"load1" json:"load1"`
	Load5             float64 `bun:"load5" json:"load5"`
	Load15            float64 `bun:"load15" json:"load15"`
	CPUs              int     `bun:"cpus" json:"cpus"`
	MemTotalBytes     int64   `bun:"mem_total_bytes" json:"mem_total_bytes"`
	MemAvailableBytes int64   `bun:"mem_available_bytes" json:"mem_available_bytes"`
	DiskTotalBytes    int64   `bun:"disk_total_bytes" json:"disk_total_bytes"`
	DiskFreeBytes     int64   `bun:"disk_free_bytes" json:"disk_free_bytes"`
	HTTPStatus        int     `bun:"http_status" json:"http_status"`
	HTTPMS            float64 `bun:"http_ms" json:"http_ms"`
	HTTPError         string  `bun:"http_error" json:"http_error,omitempty"`
}

// HealthState is a server's health status with its hysteresis state.
type HealthState struct {
	Status    string // healthy, degraded, unhealthy or unknown
	Candidate string // the status recent results agree on, "" when they agree with Status
	Streak    int    // how many consecutive results agreed on Candidate
}

// HealthState returns the server's health state.
func (v *VPSServer) HealthState() HealthState {
	return HealthState{Status: v.HealthStatus, Candidate: v.HealthCandidate, Streak: v.HealthStreak}
}

// HealthDecision is what the caller of RecordHealthCheck decides from the
// server as it is, inside the transaction that records the check.
type HealthDecision struct {
	// Next is the server's new health state.
	Next HealthState
	// Events are written to the outbox in the same transaction (the event of a
	// status change).
	Events []OutboxEvent
	// PinHostKey, when not empty, becomes the server's host key if it has none
	// pinned yet (trust on first use); a pinned key is never replaced.
	PinHostKey string
}

// HealthRecorded is the outcome of RecordHealthCheck.
type HealthRecorded struct {
	// Before is the server as it was before the check.
	Before *VPSServer
	// Check is the recorded row; for a duplicate, the row recorded earlier.
	Check *VPSHealthCheck
	// Duplicate is true when a check with the same server and key was already
	// recorded: nothing was written and decide was not called.
	Duplicate bool
}

// RecordHealthCheck records check and applies decide's verdict to the server in
// one transaction: the measurement row, the server's health status, hysteresis
// state, last check time and reason, the host key pin and the events. The
// server's row is locked (PostgreSQL) for the duration, so concurrent checks of
// one server apply one after the other. A check whose (server, key) is already
// recorded changes nothing and returns Duplicate, so a task delivered twice
// counts once. An unknown server is ErrNotFound.
func (s *Store) RecordHealthCheck(ctx context.Context, check *VPSHealthCheck,
	decide func(v *VPSServer) (HealthDecision, error)) (*HealthRecorded, error) {
	if check.VPSID == "" || check.CheckKey == "" {
		return nil, errors.New("record health check: VPSID and CheckKey are required")
	}
	if check.CheckedAt.IsZero() {
		check.CheckedAt = s.nowUTC()
	}
	check.CheckedAt = check.CheckedAt.UTC().Truncate(time.Microsecond)
	var out HealthRecorded
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		out = HealthRecorded{}
		v := new(VPSServer)
		q := tx.NewSelect().Model(v).Where("id = ?", check.VPSID)
		if s.pg {
			q = q.For("UPDATE")
		}
		if err := q.Scan(ctx); err != nil {
			return notFound(err, "vps", check.VPSID)
		}
		out.Before = v
		var prior []VPSHealthCheck
		if err := tx.NewSelect().Model(&prior).Where("vps_id = ? AND check_key = ?", check.VPSID, check.CheckKey).
			Limit(1).Scan(ctx); err != nil {
			return fmt.Errorf("look up health check %s of vps %s: %w", check.CheckKey, check.VPSID, err)
		}
		if len(prior) == 1 {
			out.Check, out.Duplicate = &prior[0], true
			return nil
		}
		d, err := decide(v)
		if err != nil {
			return err
		}
		check.StatusAfter = d.Next.Status
		res, err := tx.NewInsert().Model(check).On("CONFLICT DO NOTHING").Exec(ctx)
		if err != nil {
			return fmt.Errorf("insert health check of vps %s: %w", check.VPSID, err)
		}
		if affected(res) == 0 {
			return errDuplicateCheck // a concurrent delivery (SQLite has no row lock) won
		}
		upd := tx.NewUpdate().Model((*VPSServer)(nil)).
			Set("health_status = ?", d.Next.Status).
			Set("health_candidate = ?", d.Next.Candidate).
			Set("health_streak = ?", d.Next.Streak).
			Set("health_checked_at = ?", check.CheckedAt).
			Set("health_reason = ?", check.Reason).
			Where("id = ?", check.VPSID)
		if d.Next.Status != v.HealthStatus {
			upd = upd.Set("updated_at = ?", s.nowUTC())
		}
		if d.PinHostKey != "" {
			upd = upd.Set("host_key = CASE WHEN host_key = '' THEN ? ELSE host_key END", d.PinHostKey)
		}
		if _, err := upd.Exec(ctx); err != nil {
			return fmt.Errorf("update health of vps %s: %w", check.VPSID, err)
		}
		out.Check = check
		return s.insertEvents(ctx, tx, d.Events, s.nowUTC())
	})
	if errors.Is(err, errDuplicateCheck) {
		prior, err := s.HealthCheckByKey(ctx, check.VPSID, check.CheckKey)
		if err != nil {
			return nil, err
		}
		return &HealthRecorded{Before: out.Before, Check: prior, Duplicate: true}, nil
	}
	if err != nil {
		return nil, err
	}
	return &out, nil
}

var errDuplicateCheck = errors.New("health check already recorded")

// VPSForCheck returns server id and whether a check of it under key is
// recorded already, in one query: what a check reads before probing. An
// unknown server is ErrNotFound.
func (s *Store) VPSForCheck(ctx context.Context, id, key string) (*VPSServer, bool, error) {
	var row struct {
		VPSServer
		Recorded bool `bun:"recorded"`
	}
	err := s.db.NewSelect().Model((*VPSServer)(nil)).ColumnExpr("?TableAlias.*").
		ColumnExpr("EXISTS (SELECT 1 FROM vps_health_checks AS c WHERE c.vps_id = ?TableAlias.id AND c.check_key = ?) AS recorded", key).
		Where("?TableAlias.id = ?", id).Scan(ctx, &row)
	if err != nil {
		return nil, false, notFound(err, "vps", id)
	}
	return &row.VPSServer, row.Recorded, nil
}

// HealthCheckByKey returns the check of a server recorded under key, or ErrNotFound.
func (s *Store) HealthCheckByKey(ctx context.Context, vpsID, key string) (*VPSHealthCheck, error) {
	c := new(VPSHealthCheck)
	if err := s.db.NewSelect().Model(c).Where("vps_id = ? AND check_key = ?", vpsID, key).Scan(ctx); err != nil {
		return nil, notFound(err, "health check", vpsID+"/"+key)
	}
	return c, nil
}

// LatestHealthChecks returns up to limit checks of a server, newest first.
func (s *Store) LatestHealthChecks(ctx context.Context, vpsID string, limit int) ([]VPSHealthCheck, error) {
	var out []VPSHealthCheck
	err := s.db.NewSelect().Model(&out).Where("vps_id = ?", vpsID).
		OrderExpr("checked_at DESC, id DESC").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("latest health checks of vps %s: %w", vpsID, err)
	}
	return out, nil
}

// ActiveVPSIDs returns up to limit IDs of active servers after the cursor ID, in
// ID order: the sweep pages through the fleet with it (index vps_servers_status_idx).
func (s *Store) ActiveVPSIDs(ctx context.Context, after string, limit int) ([]string, error) {
	var ids []string
	q := s.db.NewSelect().Model((*VPSServer)(nil)).Column("id").
		Where("status = ?", VPSStatusActive).OrderExpr("id ASC").Limit(int64(limit))
	if after != "" {
		q = q.Where("id > ?", after)
	}
	if err := q.Scan(ctx, &ids); err != nil {
		return nil, fmt.Errorf("list active vps ids: %w", err)
	}
	return ids, nil
}

// CountVPSByHealth returns how many active servers are in each health status;
// every status is present in the map, with 0 when no server has it.
func (s *Store) CountVPSByHealth(ctx context.Context) (map[string]int, error) {
	var rows []struct {
		HealthStatus string `bun:"health_status"`
		N            int    `bun:"n"`
	}
	err := s.db.NewSelect().Model((*VPSServer)(nil)).ColumnExpr("health_status, COUNT(*) AS n").
		Where("status = ?", VPSStatusActive).Group("health_status").Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("count vps by health: %w", err)
	}
	out := map[string]int{HealthHealthy: 0, HealthDegraded: 0, HealthUnhealthy: 0, HealthUnknown: 0}
	for _, r := range rows {
		out[r.HealthStatus] = r.N
	}
	return out, nil
}

// SweepStats describes one complete health sweep.
type SweepStats struct {
	// PeriodStart is the sweep's period.
	PeriodStart time.Time
	// Servers is how many checks of the period were recorded.
	Servers int
	// Duration is the last check's time minus the period start: how long the
	// sweep took from its tick to its last recorded result.
	Duration time.Duration
}

// sweepLookback is how many recent sweep periods LastCompleteSweep considers.
const sweepLookback = 6

// LastCompleteSweep returns the latest complete sweep, and false when none of
// the recent ones is complete. A sweep is complete when its period has at least
// as many recorded checks as there are active servers registered before the
// period started (a server decommissioned since may make it more; a server
// registered during the sweep is not expected). Only the last sweepLookback
// periods that have checks are looked at.
func (s *Store) LastCompleteSweep(ctx context.Context) (SweepStats, bool, error) {
	var periods []VPSHealthCheck
	err := s.db.NewSelect().Model(&periods).Column("period_start").Distinct().
		Where("period_start IS NOT NULL").OrderExpr("period_start DESC").Limit(sweepLookback).Scan(ctx)
	if err != nil {
		return SweepStats{}, false, fmt.Errorf("recent sweep periods: %w", err)
	}
	for _, p := range periods {
		start := p.PeriodStart.UTC()
		n, err := s.db.NewSelect().Model((*VPSHealthCheck)(nil)).
			Where("period_start = ? AND source = ?", start, HealthSourceSweep).Count(ctx)
		if err != nil {
			return SweepStats{}, false, fmt.Errorf("count checks of sweep %s: %w", start.Format(time.RFC3339), err)
		}
		want, err := s.db.NewSelect().Model((*VPSServer)(nil)).
			Where("status = ? AND created_at < ?", VPSStatusActive, start).Count(ctx)
		if err != nil {
			return SweepStats{}, false, fmt.Errorf("count servers of sweep %s: %w", start.Format(time.RFC3339), err)
		}
		if n == 0 || n < want {
			continue
		}
		var last []VPSHealthCheck
		err = s.db.NewSelect().Model(&last).Column("checked_at").
			Where("period_start = ? AND source = ?", start, HealthSourceSweep).
			OrderExpr("checked_at DESC").Limit(1).Scan(ctx)
		if err != nil || len(last) == 0 {
			return SweepStats{}, false, fmt.Errorf("last check of sweep %s: %w", start.Format(time.RFC3339), err)
		}
		return SweepStats{PeriodStart: start, Servers: int(n), Duration: last[0].CheckedAt.Sub(start)}, true, nil
	}
	return SweepStats{}, false, nil
}

// PruneHealthChecks deletes checks made before cutoff, at most batch rows per
// statement, and returns how many it deleted.
func (s *Store) PruneHealthChecks(ctx context.Context, cutoff time.Time, batch int) (int64, error) {
	if batch <= 0 {
		batch = 5000
	}
	var total int64
	for {
		sub := s.db.NewSelect().Model((*VPSHealthCheck)(nil)).Column("id").
			Where("checked_at < ?", cutoff.UTC()).OrderExpr("checked_at ASC").Limit(int64(batch))
		res, err := s.db.NewDelete().Model((*VPSHealthCheck)(nil)).Where("id IN (?)", sub).Exec(ctx)
		if err != nil {
			return total, fmt.Errorf("prune health checks before %s: %w", cutoff.Format(time.RFC3339), err)
		}
		n := affected(res)
		total += n
		if n < int64(batch) || ctx.Err() != nil {
			return total, ctx.Err()
		}
	}
}

// HealthCheckPayload is the payload recorded on a vps.health_check operation.
type HealthCheckPayload struct {
	VPSID string `json:"vps_id"`
}

// RequestHealthCheck records an on-demand health check of a server as an
// operation of the caller's tenant (target vps), with the idempotency key and an
// audit row. An unknown server is ErrNotFound and writes nothing. The caller
// enqueues the operation's task after this returns.
func (s *Store) RequestHealthCheck(ctx context.Context, a Accept, vpsID string) (*Accepted, error) {
	return s.recordMutation(ctx, a, "vps.health_check", func(ctx context.Context, tx bun.Tx, opID string, now time.Time) (*Operation, error) {
		n, err := tx.NewSelect().Model((*VPSServer)(nil)).Where("id = ?", vpsID).Count(ctx)
		if err != nil {
			return nil, fmt.Errorf("find vps %s: %w", vpsID, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("vps %s: %w", vpsID, ErrNotFound)
		}
		op, err := newOperation(a, OpTypeVPSHealthCheck, TargetVPS, vpsID, HealthCheckPayload{VPSID: vpsID}, now)
		if err != nil {
			return nil, err
		}
		op.ID = opID
		return op, nil
	})
}
