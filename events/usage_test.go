package events_test

import (
	"errors"
	"testing"
	"time"

	"github.com/chomhq/chom/events"
)

func TestUsageRecordID(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	// A tenant total keeps the ID it had before site_id existed.
	if got, want := events.UsageRecordID(tenantID, "disk_bytes", "", start), events.UsageID(tenantID, "disk_bytes", start); got != want {
		t.Errorf("UsageRecordID of a total = %s, want UsageID %s", got, want)
	}
	site := events.UsageRecordID(tenantID, "disk_bytes", siteID, start)
	other := events.UsageRecordID(tenantID, "disk_bytes", "site_00000000000000000000000000000001", start)
	total := events.UsageID(tenantID, "disk_bytes", start)
	if site == total || site == other {
		t.Errorf("per-site IDs %s, %s and total %s must all differ", site, other, total)
	}
	if again := events.UsageRecordID(tenantID, "disk_bytes", siteID, start.In(time.FixedZone("X", 7200))); again != site {
		t.Errorf("the same site usage has IDs %s and %s", site, again)
	}
}

func TestDecodePerSiteUsage(t *testing.T) {
	t.Parallel()
	row := emitted(t)["usage site"]
	env, err := events.Parse(events.Message("chom", row))
	if err != nil {
		t.Fatal(err)
	}
	u, err := events.DecodeUsage(env)
	if err != nil || u.SiteID != siteID || u.Quantity != 4096 {
		t.Fatalf("DecodeUsage of a per-site event = %+v, %v", u, err)
	}
	// The ID of the tenant total is not the ID of a site's share.
	env.ID = events.UsageID(u.TenantID, u.Metric, u.PeriodStart)
	if _, err := events.DecodeUsage(env); !errors.Is(err, events.ErrMalformed) {
		t.Errorf("DecodeUsage of a site share carrying the total's ID = %v, want ErrMalformed", err)
	}
	bad := events.UsageEvent{TenantID: tenantID, Metric: "disk_bytes", SiteID: "../x", Unit: "byte",
		PeriodStart: u.PeriodStart, PeriodEnd: u.PeriodEnd, OccurredAt: u.OccurredAt}
	if _, err := events.UsageOutbox(bad); err == nil {
		t.Error("UsageOutbox accepted a malformed site_id")
	}
}
