package ingress

import (
	"regexp"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/ingress/input"
	"github.com/chomhq/chom/models"
)

// usageMetric is the shape of a metric name (events.UsageEvent's metric rule).
var usageMetric = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}$`)

// listUsage answers GET /usage: a page of the token's tenant's usage records,
// newest first, optionally of one metric and within [from, to] (records whose
// period starts at or after from and ends at or before to; RFC 3339).
func (a *API) listUsage(c *gin.Context) {
	var v input.ValidationError
	cursor, limit := pageParams(c, models.PrefixUsage, &v)
	metric := c.Query("metric")
	if metric != "" && !usageMetric.MatchString(metric) {
		v.Add("metric", "must be a metric name such as bandwidth_bytes")
	}
	from := timeParam(c, "from", &v)
	to := timeParam(c, "to", &v)
	if !from.IsZero() && !to.IsZero() && !to.After(from) {
		v.Add("to", "must be after from")
	}
	if err := v.Err(); err != nil {
		a.fail(c, err)
		return
	}
	recs, err := a.store.ListUsage(c.Request.Context(), principal(c).TenantID,
		models.UsageFilter{Metric: metric, From: from, To: to, Cursor: cursor, Limit: limit})
	if err != nil {
		a.fail(c, err)
		return
	}
	page := Page[models.UsageRecord]{Data: recs}
	if page.Data == nil {
		page.Data = []models.UsageRecord{}
	}
	if len(recs) == limit {
		page.NextCursor = recs[len(recs)-1].ID
	}
	c.JSON(200, page)
}

// timeParam reads an optional RFC 3339 query parameter; a bad one is added to v.
func timeParam(c *gin.Context, name string, v *input.ValidationError) time.Time {
	s := c.Query(name)
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		v.Add(name, "must be an RFC 3339 date-time, e.g. 2026-12-01T00:00:00Z")
		return time.Time{}
	}
	return t.UTC()
}
