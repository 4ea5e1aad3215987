package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/local"
	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/models"
)

// outcomeDriver is the local driver with failures by domain: a provision of
// "fail-*" is rejected (a permanent error), an archive of "archfail-*" is
// rejected, and a provision of "gate-*" waits for release after announcing on
// entered.
type outcomeDriver struct {
	*local.Provisioner
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (d *outcomeDriver) Provision(ctx context.Context, s drivers.SiteSpec, p drivers.ProgressFunc) (drivers.Result, error) {
	switch {
	case strings.HasPrefix(s.Domain, "fail-"):
		return drivers.Result{}, fmt.Errorf("provision %s: %w", s.Domain, drivers.ErrInvalidSpec)
	case strings.HasPrefix(s.Domain, "gate-"):
		d.once.Do(func() { close(d.entered) })
		select {
		case <-d.release:
		case <-ctx.Done():
			return drivers.Result{}, ctx.Err()
		}
	}
	return d.Provisioner.Provision(ctx, s, p)
}

func (d *outcomeDriver) Archive(ctx context.Context, s drivers.SiteSpec, kind string, w io.Writer) error {
	if strings.HasPrefix(s.Domain, "archfail-") {
		return fmt.Errorf("archive %s: %w", s.Domain, drivers.ErrInvalidSpec)
	}
	return d.Provisioner.Archive(ctx, s, kind, w)
}

// compileSchema compiles the shipped JSON Schema of eventType.
func compileSchema(t *testing.T, eventType string) *jsonschema.Schema {
	t.Helper()
	raw, err := events.Schema(eventType)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	url := "urn:chom:schema:" + eventType
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// outboxOf returns the outbox rows whose data names operation opID.
func (s *stack) outboxOf(t *testing.T, opID string) []models.OutboxEvent {
	t.Helper()
	var rows []models.OutboxEvent
	if err := s.db.NewSelect().Model(&rows).Where("data LIKE ?", "%\""+opID+"\"%").Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestEveryTerminalOutcomeHasItsEvent walks every terminal outcome of the
// site and backup operations through the real jobs and checks the outbox:
// each outcome a billing consumer must know about wrote exactly one row, of
// the right type and topic, with the tenant as key, the stable ID, and data
// valid against the type's shipped schema. Cancelled outcomes write none, as
// events/doc.go explains: the caller asked for them, nothing billable began,
// and no earlier event announced the site or backup.
func TestEveryTerminalOutcomeHasItsEvent(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		d := &outcomeDriver{entered: make(chan struct{}), release: make(chan struct{})}
		s := newStack(t, db, stackOpts{wrapDriver: func(p *local.Provisioner) drivers.Provisioner {
			d.Provisioner = p
			return d
		}})
		s.needBackups()
		released := false
		defer func() {
			if !released {
				close(d.release)
			}
		}()
		type outcome struct {
			name, opID, status string
			event              string // "" = no event, by design
		}
		var outcomes []outcome
		finish := func(name, opID, wantStatus, event string) ingress.OperationView {
			t.Helper()
			done := s.waitOp(s.tokenA, opID)
			if done.Status != wantStatus {
				t.Fatalf("%s: operation %s, want %s: %+v", name, done.Status, wantStatus, done)
			}
			outcomes = append(outcomes, outcome{name, opID, wantStatus, event})
			return done
		}
		cancel := func(opID string) {
			t.Helper()
			if r := s.do("POST", "/api/v1/operations/"+opID+"/cancel", s.tokenA, nil); r.status != http.StatusAccepted {
				t.Fatalf("cancel %s: %d %s", opID, r.status, r.body)
			}
		}

		ok := s.createSite(s.tokenA, "ok.example", "html")
		finish("provision succeeded", ok.ID, models.OpSucceeded, events.TypeSiteProvisioned)
		failed := s.createSite(s.tokenA, "fail-1.example", "html")
		finish("provision failed", failed.ID, models.OpFailed, events.TypeSiteProvisionFailed)

		s.proxy.Cut() // no task: the provision stays pending
		pending := s.createSite(s.tokenA, "pending.example", "html")
		s.proxy.Restore()
		cancel(pending.ID)
		finish("provision cancelled while pending", pending.ID, models.OpCancelled, "")

		gated := s.createSite(s.tokenA, "gate-1.example", "html")
		select {
		case <-d.entered:
		case <-time.After(20 * time.Second):
			t.Fatal("gated provision never reached the driver")
		}
		cancel(gated.ID)
		close(d.release)
		released = true
		finish("provision cancelled while running", gated.ID, models.OpCancelled, "")

		site := ok.TargetID
		b := accepted(t, s.do("POST", "/api/v1/sites/"+site+"/backups", s.tokenA, map[string]any{}))
		finish("backup completed", b.ID, models.OpSucceeded, events.TypeBackupCompleted)
		rs := accepted(t, s.do("POST", "/api/v1/backups/"+b.TargetID+"/restore", s.tokenA, nil))
		finish("restore succeeded", rs.ID, models.OpSucceeded, events.TypeBackupRestored)
		s.proxy.Cut()
		pb := accepted(t, s.do("POST", "/api/v1/sites/"+site+"/backups", s.tokenA, map[string]any{}))
		s.proxy.Restore()
		cancel(pb.ID)
		finish("backup cancelled while pending", pb.ID, models.OpCancelled, "")
		del := accepted(t, s.do("DELETE", "/api/v1/backups/"+b.TargetID, s.tokenA, nil))
		finish("backup deleted", del.ID, models.OpSucceeded, events.TypeBackupDeleted)

		af := s.createSite(s.tokenA, "archfail-1.example", "html")
		finish("provision succeeded (archfail)", af.ID, models.OpSucceeded, events.TypeSiteProvisioned)
		fb := accepted(t, s.do("POST", "/api/v1/sites/"+af.TargetID+"/backups", s.tokenA, map[string]any{}))
		finish("backup failed", fb.ID, models.OpFailed, events.TypeBackupFailed)

		dp := accepted(t, s.do("DELETE", "/api/v1/sites/"+site, s.tokenA, nil))
		finish("deprovision succeeded", dp.ID, models.OpSucceeded, events.TypeSiteDeleted)

		schemas := map[string]*jsonschema.Schema{}
		for _, o := range outcomes {
			rows := s.outboxOf(t, o.opID)
			if o.event == "" {
				if len(rows) != 0 {
					t.Errorf("%s: %d outbox rows (%s), want none", o.name, len(rows), rows[0].Type)
				}
				continue
			}
			if len(rows) != 1 {
				t.Errorf("%s: %d outbox rows, want one %s", o.name, len(rows), o.event)
				continue
			}
			row := rows[0]
			wantTopic := events.TopicSites
			if strings.HasPrefix(o.event, "backup.") {
				wantTopic = events.TopicBackups
			}
			if row.Type != o.event || row.Topic != wantTopic || row.TenantID != s.tenantA ||
				row.EventID != events.StableID(o.event, o.opID) {
				t.Errorf("%s: row type %s topic %s tenant %s id %s; want %s on %s for %s with id %s", o.name,
					row.Type, row.Topic, row.TenantID, row.EventID, o.event, wantTopic, s.tenantA, events.StableID(o.event, o.opID))
			}
			if schemas[o.event] == nil {
				schemas[o.event] = compileSchema(t, o.event)
			}
			v, err := jsonschema.UnmarshalJSON(strings.NewReader(row.Data))
			if err != nil {
				t.Fatalf("%s: data is not JSON: %v", o.name, err)
			}
			if err := schemas[o.event].Validate(v); err != nil {
				t.Errorf("%s: %s data does not match its schema: %v\n%s", o.name, o.event, err, row.Data)
			}
		}
	})
}
