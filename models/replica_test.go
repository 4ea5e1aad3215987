package models_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// probeCounter counts the freshness probes a Reads sends to the primary.
type probeCounter struct{ n atomic.Int64 }

func (*probeCounter) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context { return ctx }

func (c *probeCounter) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	if strings.Contains(e.Query, "pg_current_wal_insert_lsn") {
		c.n.Add(1)
	}
}

// TestReadsFollowReplay runs Reads over a real primary and its streaming
// replica: caught up, reads go to the replica; with the replica's replay
// paused, a site created on the primary is invisible on the replica but
// Reads sends its reads to the primary, so it is found; resumed, reads go
// back to the replica; stopped, it gets no reads, and started again it gets
// them back; promoted, it is no longer used.
func TestReadsFollowReplay(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	primary := testenv.StartPostgresServer(t)
	replica := testenv.StartPostgresReplica(t, primary, testenv.PostgresReplicaConfig{})
	pdb, err := models.Open(ctx, primary.URL, models.PoolConfig{MaxOpenConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer pdb.Close()
	probes := &probeCounter{}
	pdb.AddQueryHook(probes)
	rdb, err := models.Open(ctx, replica.URL, models.PoolConfig{MaxOpenConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	s := setup(t, pdb)
	ten := tenant(t, s, "acme")
	reads, err := models.NewReads(models.ReadsConfig{Primary: s, Replica: rdb, Logger: slog.New(slog.DiscardHandler),
		Backoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// replicaStore is a plain store over the replica, to see what it holds.
	replicaStore, err := models.New(models.Config{DB: rdb})
	if err != nil {
		t.Fatal(err)
	}
	untilReplica := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for reads.Store(ctx) == s {
			if time.Now().After(deadline) {
				t.Fatalf("%s: reads still go to the primary after 30s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	untilReplica("caught up after the migrations")

	replica.PauseReplay(t)
	acc, err := s.CreateSite(ctx, models.CreateSiteParams{Accept: models.Accept{TenantID: ten, Actor: "tok", RequestID: "req"},
		Domain: "lag.example", SiteType: "html"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replicaStore.GetOperation(ctx, ten, acc.Operation.ID); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("the paused replica answered %v for the new operation, want ErrNotFound (is replay really paused?)", err)
	}
	for range 20 {
		st := reads.Store(ctx)
		if st != s {
			t.Fatal("Reads chose the replica while it had not replayed the last commit")
		}
		if _, err := st.GetOperation(ctx, ten, acc.Operation.ID); err != nil {
			t.Fatalf("GetOperation through Reads while the replica lags: %v", err)
		}
	}

	replica.ResumeReplay(t)
	untilReplica("after the replay resumed")
	if _, err := replicaStore.GetOperation(ctx, ten, acc.Operation.ID); err != nil {
		t.Fatalf("the caught-up replica: %v", err)
	}

	// Concurrent reads share probes.
	before := probes.n.Load()
	rep0, pri0 := reads.Routed()
	const goroutines, each = 64, 20
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				if _, err := reads.Store(ctx).ListSites(ctx, ten, models.SiteFilter{Limit: 10}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	rep1, pri1 := reads.Routed()
	n := probes.n.Load() - before
	t.Logf("%d concurrent reads: %d probes of the primary, %d reads on the replica, %d on the primary",
		goroutines*each, n, rep1-rep0, pri1-pri0)
	if n > goroutines*each/2 {
		t.Errorf("%d reads from %d goroutines took %d probes: concurrent reads do not share them", goroutines*each, goroutines, n)
	}

	// A replica that is down gets no reads; back, it gets them again (after
	// the backoff).
	replica.Stop(t)
	for range 5 {
		st := reads.Store(ctx)
		if st != s {
			t.Fatal("Reads chose a replica that is down")
		}
		if _, err := st.GetOperation(ctx, ten, acc.Operation.ID); err != nil {
			t.Fatalf("GetOperation through Reads while the replica is down: %v", err)
		}
	}
	replica.Start(t)
	untilReplica("after the replica restarted")

	replica.Promote(t)
	for range 5 {
		if reads.Store(ctx) != s {
			t.Fatal("Reads chose a promoted replica (no longer in recovery): it may have forked from the primary")
		}
	}
}

func TestReadsConfigValidate(t *testing.T) {
	t.Parallel()
	err := models.ReadsConfig{ProbeTimeout: -1}.Validate()
	for _, want := range []string{"Primary is required", "Replica is required", "ProbeTimeout and Backoff must not be negative", "Logger is required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %q", err, want)
		}
	}
	lite := testenv.SQLite(t)
	s := setup(t, lite)
	err = models.ReadsConfig{Primary: s, Replica: lite, Logger: slog.New(slog.DiscardHandler)}.Validate()
	for _, want := range []string{"Primary must be a PostgreSQL store", "Replica must be a PostgreSQL database"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() on SQLite = %v, want it to name %q", err, want)
		}
	}
}

// TestReadsAfterWriteBySynchronousCommit measures, for each
// synchronous_commit level a session may run with against a primary with a
// synchronous standby, what one accept (CreateSite) costs and how often a
// read right after it can be served by the standby (Reads chooses the
// replica). It asserts nothing about time (the machine is shared): the
// figures are logged for docs/operations.md, Scaling out.
func TestReadsAfterWriteBySynchronousCommit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	primary := testenv.StartPostgresServer(t)
	replica := testenv.StartPostgresReplica(t, primary, testenv.PostgresReplicaConfig{Synchronous: true})
	rdb, err := models.Open(ctx, replica.URL, models.PoolConfig{MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	const n = 150
	for i, level := range []string{"local", "remote_write", "on", "remote_apply"} {
		// pgx sends an unknown URL parameter as a run-time setting of the session.
		pdb, err := models.Open(ctx, primary.URL+"&synchronous_commit="+level, models.PoolConfig{MaxOpenConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		var s *models.Store
		if i == 0 {
			s = setup(t, pdb)
		} else if s, err = models.New(models.Config{DB: pdb}); err != nil {
			t.Fatal(err)
		}
		ten := tenant(t, s, "acme-"+level)
		reads, err := models.NewReads(models.ReadsConfig{Primary: s, Replica: rdb, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		lat := make([]time.Duration, 0, n)
		onReplica := 0
		for j := range n {
			start := time.Now()
			if _, err := s.CreateSite(ctx, models.CreateSiteParams{Accept: models.Accept{TenantID: ten, Actor: "tok", RequestID: "req"},
				Domain: fmt.Sprintf("s%d.%s.example", j, strings.ReplaceAll(level, "_", "-")), SiteType: "html"}); err != nil {
				t.Fatal(err)
			}
			lat = append(lat, time.Since(start))
			if reads.Store(ctx) != s {
				onReplica++
			}
		}
		slices.Sort(lat)
		t.Logf("synchronous_commit=%-12s accept p50 %s p99 %s; a read right after it served by the standby %d/%d",
			level, lat[n/2].Round(10*time.Microsecond), lat[n*99/100].Round(10*time.Microsecond), onReplica, n)
		_ = pdb.Close()
	}
}
