package events_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/models"
)

// compileSchemas compiles the shipped schema of every event type.
func compileSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	out := map[string]*jsonschema.Schema{}
	for _, typ := range events.Types() {
		raw, err := events.Schema(typ)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("schema of %s is not JSON: %v", typ, err)
		}
		url := "urn:chom:schema:" + typ
		if err := c.AddResource(url, doc); err != nil {
			t.Fatalf("add schema %s: %v", typ, err)
		}
		s, err := c.Compile(url)
		if err != nil {
			t.Fatalf("compile schema %s: %v", typ, err)
		}
		out[typ] = s
	}
	return out
}

func validate(t *testing.T, s *jsonschema.Schema, data string) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(data))
	if err != nil {
		t.Fatalf("event data is not JSON: %v\n%s", err, data)
	}
	return s.Validate(v)
}

var (
	siteID   = models.NewID(models.PrefixSite)
	tenantID = models.NewID(models.PrefixTenant)
	opID     = models.NewID(models.PrefixOperation)
	vpsID    = models.NewID(models.PrefixVPS)
	at       = time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC)
)

func siteEvent(mod func(*events.SiteEvent)) events.SiteEvent {
	e := events.SiteEvent{
		SiteID: siteID, TenantID: tenantID, Domain: "xn--mnchen-3ya.de", SiteType: "wordpress",
		PHPVersion: "8.3", VPSID: vpsID, OperationID: opID, Status: models.SiteStatusActive, OccurredAt: at,
	}
	if mod != nil {
		mod(&e)
	}
	return e
}

// emitted builds every shape of event the code emits, with the builders the jobs
// use, so a field added to a payload without its schema fails here.
func emitted(t *testing.T) map[string]models.OutboxEvent {
	t.Helper()
	build := func(typ string, e events.SiteEvent) models.OutboxEvent {
		row, err := events.SiteOutbox(typ, e)
		if err != nil {
			t.Fatalf("SiteOutbox(%s): %v", typ, err)
		}
		return row
	}
	usage, err := events.UsageOutbox(events.UsageEvent{
		TenantID: tenantID, Metric: "storage_bytes", Quantity: 1 << 40, Unit: "byte",
		PeriodStart: at.Truncate(time.Hour), PeriodEnd: at.Truncate(time.Hour).Add(time.Hour), OccurredAt: at,
	})
	if err != nil {
		t.Fatal(err)
	}
	zero, err := events.UsageOutbox(events.UsageEvent{
		TenantID: tenantID, Metric: "site_hours", Quantity: 0, Unit: "site_hour",
		PeriodStart: at.Truncate(24 * time.Hour), PeriodEnd: at.Truncate(24 * time.Hour).Add(24 * time.Hour), OccurredAt: at,
	})
	if err != nil {
		t.Fatal(err)
	}
	perSite, err := events.UsageOutbox(events.UsageEvent{
		TenantID: tenantID, Metric: "bandwidth_bytes", SiteID: siteID, Quantity: 4096, Unit: "byte",
		PeriodStart: at.Truncate(time.Hour), PeriodEnd: at.Truncate(time.Hour).Add(time.Hour), OccurredAt: at,
	})
	if err != nil {
		t.Fatal(err)
	}
	f := func(v float64) *float64 { return &v }
	n := func(v int) *int { return &v }
	down, err := events.VPSHealthOutbox(events.VPSHealthEvent{
		VPSID: vpsID, Hostname: "web1.example", From: models.HealthHealthy, To: models.HealthUnhealthy,
		Reason: "unreachable", CheckKey: at.Truncate(time.Minute).Format(time.RFC3339),
		Measurements: events.HealthMeasurements{Reachable: false, ConnectMS: f(5000)}, CheckedAt: at,
	})
	if err != nil {
		t.Fatal(err)
	}
	up, err := events.VPSHealthOutbox(events.VPSHealthEvent{
		VPSID: vpsID, Hostname: "web1.example", TenantID: tenantID, From: models.HealthUnknown, To: models.HealthDegraded,
		Reason: "disk 91.0% used", CheckKey: opID,
		Measurements: events.HealthMeasurements{Reachable: true, ConnectMS: f(1.5), Load1: f(0.4), LoadPerCPU: f(0.1),
			CPUs: n(4), MemUsedPercent: f(40), DiskUsedPct: f(91), HTTPStatus: n(200)}, CheckedAt: at,
	})
	if err != nil {
		t.Fatal(err)
	}
	backup := func(typ string, mod func(*events.BackupEvent)) models.OutboxEvent {
		e := events.BackupEvent{BackupID: models.NewID(models.PrefixBackup), TenantID: tenantID, SiteID: siteID,
			BackupType: "full", OperationID: opID, Status: models.BackupStatusCompleted, Format: "tar+gzip",
			SizeBytes: 4096, SHA256: strings.Repeat("ab", 32), ExpiresAt: at.Add(7 * 24 * time.Hour), OccurredAt: at}
		if mod != nil {
			mod(&e)
		}
		row, err := events.BackupOutbox(typ, e)
		if err != nil {
			t.Fatalf("BackupOutbox(%s): %v", typ, err)
		}
		return row
	}
	cert := func(typ string, mod func(*events.CertificateEvent)) models.OutboxEvent {
		e := events.CertificateEvent{SiteID: siteID, TenantID: tenantID, Domain: "shop.example", OperationID: opID,
			Reason: models.IssueAfterProvision, Domains: []string{"shop.example", "www.shop.example"}, OccurredAt: at}
		mod(&e)
		row, err := events.CertificateOutbox(typ, e)
		if err != nil {
			t.Fatalf("CertificateOutbox(%s): %v", typ, err)
		}
		return row
	}
	issued := func(e *events.CertificateEvent) {
		e.Source, e.Issuer, e.Serial = models.SourceACME, "Pebble Intermediate CA 2c5a1d", "4f1a6f0c2b7d"
		e.NotBefore, e.NotAfter, e.RenewAfter = at, at.Add(90*24*time.Hour), at.Add(60*24*time.Hour)
	}
	return map[string]models.OutboxEvent{
		"certificate issued": cert(events.TypeSiteCertificateIssued, issued),
		"certificate uploaded": cert(events.TypeSiteCertificateIssued, func(e *events.CertificateEvent) {
			issued(e)
			e.Reason, e.Source, e.RenewAfter = models.IssueUpload, models.SourceUpload, time.Time{}
		}),
		"certificate failed": cert(events.TypeSiteCertificateFailed, func(e *events.CertificateEvent) {
			e.Reason, e.ErrorCode, e.Error = models.IssueRenewal, "challenge_failed", "the CA could not reach shop.example"
		}),
		"backup completed": backup(events.TypeBackupCompleted, nil),
		"backup completed, no expiry": backup(events.TypeBackupCompleted, func(e *events.BackupEvent) {
			e.ExpiresAt, e.BackupType = time.Time{}, "database"
		}),
		"backup failed": backup(events.TypeBackupFailed, func(e *events.BackupEvent) {
			e.Status, e.SizeBytes, e.SHA256, e.Format, e.ExpiresAt = models.BackupStatusFailed, 0, "", "", time.Time{}
			e.ErrorCode, e.Error = "backup_failed", "the archive could not be made"
		}),
		"backup restored": backup(events.TypeBackupRestored, nil),
		"backup deleted": backup(events.TypeBackupDeleted, func(e *events.BackupEvent) {
			e.Status, e.SHA256, e.Format, e.ExpiresAt = models.BackupStatusDeleted, "", "", time.Time{}
		}),
		"vps down":        down,
		"vps degraded":    up,
		"provisioned php": build(events.TypeSiteProvisioned, siteEvent(nil)),
		"provisioned html": build(events.TypeSiteProvisioned, siteEvent(func(e *events.SiteEvent) {
			e.SiteType, e.PHPVersion = "html", ""
		})),
		"provision failed": build(events.TypeSiteProvisionFailed, siteEvent(func(e *events.SiteEvent) {
			e.Status, e.ErrorCode, e.Error = models.SiteStatusFailed, "no_capacity", "no server has room"
		})),
		"provision failed before placement": build(events.TypeSiteProvisionFailed, siteEvent(func(e *events.SiteEvent) {
			e.Status, e.ErrorCode, e.Error, e.VPSID = models.SiteStatusFailed, "no_capacity", "", ""
		})),
		"deleted":    build(events.TypeSiteDeleted, siteEvent(func(e *events.SiteEvent) { e.Status = models.SiteStatusDeleted })),
		"usage":      usage,
		"usage zero": zero,
		"usage site": perSite,
	}
}

func TestEveryEmittedEventMatchesItsSchema(t *testing.T) {
	t.Parallel()
	schemas := compileSchemas(t)
	covered := map[string]bool{}
	for name, row := range emitted(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, ok := schemas[row.Type]
			if !ok {
				t.Fatalf("no schema for %s", row.Type)
			}
			if err := validate(t, s, row.Data); err != nil {
				t.Errorf("%s does not match its schema:\n%v\n%s", row.Type, err, row.Data)
			}
			// What travels is the record value: the same bytes.
			if m := events.Message("chom", row); string(m.Value) != row.Data {
				t.Errorf("record value differs from the outbox data")
			}
		})
		covered[row.Type] = true
	}
	for _, typ := range events.Types() {
		if !covered[typ] {
			t.Errorf("no emitted event of type %s is checked", typ)
		}
	}
}

// The schemas are strict: they catch what the consumers must refuse.
func TestSchemasRefuseBadData(t *testing.T) {
	t.Parallel()
	schemas := compileSchemas(t)
	good := emitted(t)
	for _, tc := range []struct {
		name, of string
		change   func(map[string]any)
	}{
		{"unknown field", "usage", func(m map[string]any) { m["price"] = 3 }},
		{"negative quantity", "usage", func(m map[string]any) { m["quantity"] = -1 }},
		{"fractional quantity", "usage", func(m map[string]any) { m["quantity"] = 1.5 }},
		{"missing period_end", "usage", func(m map[string]any) { delete(m, "period_end") }},
		{"bad time", "usage", func(m map[string]any) { m["period_start"] = "yesterday" }},
		{"bad metric", "usage", func(m map[string]any) { m["metric"] = "Storage Bytes" }},
		{"missing site_id", "deleted", func(m map[string]any) { delete(m, "site_id") }},
		{"wrong status", "deleted", func(m map[string]any) { m["status"] = "active" }},
		{"unknown site_type", "provisioned php", func(m map[string]any) { m["site_type"] = "django" }},
		{"failure without code", "provision failed", func(m map[string]any) { delete(m, "error_code") }},
		{"backup unknown field", "backup completed", func(m map[string]any) { m["path"] = "/srv" }},
		{"backup bad sha256", "backup completed", func(m map[string]any) { m["sha256"] = "xyz" }},
		{"backup empty archive", "backup completed", func(m map[string]any) { m["size_bytes"] = 0 }},
		{"backup bad type", "backup completed", func(m map[string]any) { m["backup_type"] = "everything" }},
		{"backup failed without code", "backup failed", func(m map[string]any) { delete(m, "error_code") }},
		{"backup deleted wrong status", "backup deleted", func(m map[string]any) { m["status"] = "completed" }},
		{"vps unknown status", "vps down", func(m map[string]any) { m["to"] = "sick" }},
		{"vps without reason", "vps down", func(m map[string]any) { delete(m, "reason") }},
		{"vps disk over 100%", "vps degraded", func(m map[string]any) {
			m["measurements"].(map[string]any)["disk_used_percent"] = 120
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			row := good[tc.of]
			var m map[string]any
			if err := json.Unmarshal([]byte(row.Data), &m); err != nil {
				t.Fatal(err)
			}
			tc.change(m)
			b, _ := json.Marshal(m)
			if err := validate(t, schemas[row.Type], string(b)); err == nil {
				t.Errorf("schema of %s accepted %s", row.Type, b)
			}
		})
	}
}

// One schema file per type, and no stray files.
func TestSchemaFiles(t *testing.T) {
	t.Parallel()
	var files []string
	err := fs.WalkDir(events.Schemas(), ".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, typ := range events.Types() {
		want = append(want, typ+".json")
	}
	slices.Sort(want)
	slices.Sort(files)
	if !slices.Equal(files, want) {
		t.Errorf("schema files %v, want %v", files, want)
	}
	if _, err := events.Schema("site.renamed.v1"); err == nil {
		t.Error("Schema of an unknown type succeeded")
	}
}

// TestSchemasPromiseNoEventForCancel: no schema says its event is written when
// an operation is cancelled, because none is (see the outcome table in doc.go;
// internal/integration's TestEveryTerminalOutcomeHasItsEvent checks the jobs).
// A description may mention a cancel only to say it emits no event.
func TestSchemasPromiseNoEventForCancel(t *testing.T) {
	t.Parallel()
	for _, typ := range events.Types() {
		raw, err := events.Schema(typ)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct{ Description string }
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		d := strings.ToLower(doc.Description)
		if strings.Contains(d, "cancel") && !strings.Contains(d, "emits no event") {
			t.Errorf("%s: description promises an event on cancel, which is never written: %q", typ, doc.Description)
		}
	}
}
