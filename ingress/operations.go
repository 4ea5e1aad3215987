package ingress

import (
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/ingress/input"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// getOperation serves GET /operations/{id}. With ?wait=D (at most 30s) it holds
// the request until the operation changes: until its ETag differs from
// If-None-Match when that header is sent, else until its status changes. It answers
// at once for a finished operation. 304 when If-None-Match still matches.
//
// It is the API's most frequent request: an operation read from the cache is
// answered with the body and ETag rendered when it was cached (renderedOp).
func (a *API) getOperation(c *gin.Context) {
	id, ok := a.pathID(c, models.PrefixOperation)
	if !ok {
		return
	}
	wait, err := input.ParseWait(c.Query("wait"))
	if err != nil {
		a.fail(c, err)
		return
	}
	tenant := principal(c).TenantID
	r, err := a.readOperation(c, tenant, id)
	if err != nil {
		a.fail(c, err)
		return
	}
	inm := c.GetHeader("If-None-Match")
	if wait > 0 && !r.op.Terminal() {
		initial := r.op.Status
		changed := func(o *models.Operation) bool {
			if inm != "" {
				return !etagMatches(inm, operationETag(o))
			}
			return o.Status != initial
		}
		if !changed(r.op) {
			op, err := a.awaitChange(c, r.op, wait, changed)
			if err == nil {
				r, err = renderOperation(op)
			}
			if err != nil {
				a.fail(c, err)
				return
			}
		}
	}
	h := c.Writer.Header()
	h.Set("ETag", r.etag)
	h.Set("Cache-Control", "no-cache")
	if !r.op.Terminal() {
		retryAfter(c, 1)
	}
	if etagMatches(inm, r.etag) {
		c.Status(304)
		return
	}
	c.Data(200, jsonContentType, r.body)
}

// jsonContentType is the Content-Type gin's c.JSON answers with.
const jsonContentType = "application/json; charset=utf-8"

// readOperation returns the tenant's operation, rendered, from the cache when it
// is fresh. A cached operation of another tenant is never served: the database
// then says 404.
func (a *API) readOperation(c *gin.Context, tenant, id string) (renderedOp, error) {
	if a.ops != nil {
		if r, ok := a.ops.get(id); ok && r.op.TenantID == tenant {
			a.opStats.Hit()
			return r, nil
		}
		a.opStats.Miss()
	}
	ctx := c.Request.Context()
	op, err := a.reader(ctx).GetOperation(ctx, tenant, id)
	if err != nil {
		return renderedOp{}, err
	}
	r, err := renderOperation(op)
	if err != nil {
		return renderedOp{}, err
	}
	if a.ops != nil {
		a.ops.put(r)
	}
	return r, nil
}

// awaitChange re-reads op when a worker announces a change (or every poll
// interval, in case an announcement is lost) until changed says so, the operation
// finishes, wait runs out or the client leaves.
func (a *API) awaitChange(c *gin.Context, op *models.Operation, wait time.Duration, changed func(*models.Operation) bool) (*models.Operation, error) {
	ctx := c.Request.Context()
	var notify <-chan struct{}
	if a.watcher != nil {
		ch, stop := a.watcher.Watch(op.ID)
		defer stop()
		notify = ch
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(a.pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return op, nil
		case <-notify:
		case <-tick.C:
		}
		cur, err := a.reader(ctx).GetOperation(ctx, op.TenantID, op.ID)
		if err != nil {
			return nil, err
		}
		op = cur
		if changed(op) || op.Terminal() {
			return op, nil
		}
	}
}

func (a *API) listOperations(c *gin.Context) {
	var v input.ValidationError
	cursor, limit := pageParams(c, models.PrefixOperation, &v)
	f := models.OperationFilter{Cursor: cursor, Limit: limit, Status: c.Query("status"), Type: c.Query("type"),
		TargetType: c.Query("target_type"), TargetID: c.Query("target_id")}
	oneOf(&v, "status", f.Status, models.OpPending, models.OpRunning, models.OpSucceeded, models.OpFailed, models.OpCancelled)
	oneOf(&v, "type", f.Type, models.OpTypeSiteProvision, models.OpTypeSiteDeprovision,
		models.OpTypeBackupCreate, models.OpTypeBackupRestore, models.OpTypeBackupDelete, models.OpTypeDomainVerify,
		models.OpTypeCertificateIssue)
	oneOf(&v, "target_type", f.TargetType, models.TargetSite, models.TargetVPS, models.TargetBackup)
	if f.TargetID != "" && len(f.TargetID) > 64 {
		v.Add("target_id", "must be at most 64 characters")
	}
	if err := v.Err(); err != nil {
		a.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	ops, err := a.reader(ctx).ListOperations(ctx, principal(c).TenantID, f)
	if err != nil {
		a.fail(c, err)
		return
	}
	page := Page[OperationView]{Data: make([]OperationView, 0, len(ops))}
	for i := range ops {
		page.Data = append(page.Data, operationView(&ops[i]))
	}
	if len(ops) == limit {
		page.NextCursor = ops[len(ops)-1].ID
	}
	c.JSON(200, page)
}

// cancelOperation serves POST /operations/{id}/cancel, best effort: a pending
// operation is cancelled at once and its task removed; a running one is flagged
// and its job stops at its next step; a cancelled one answers 202 again (cancel is
// idempotent); one that succeeded or failed answers 409.
func (a *API) cancelOperation(c *gin.Context) {
	id, ok := a.pathID(c, models.PrefixOperation)
	if !ok {
		return
	}
	if _, err := a.accept(c, map[string]string{"operation_id": id}); err != nil {
		a.fail(c, err) // a malformed Idempotency-Key is still a 4xx
		return
	}
	ctx, cancel := mutationContext(c)
	defer cancel()
	tenant := principal(c).TenantID
	op, err := a.store.GetOperation(ctx, tenant, id)
	if err != nil {
		a.fail(c, err)
		return
	}
	if op.Status == models.OpCancelled {
		writeAccepted(c, op)
		return
	}
	res, err := a.store.CancelOperation(ctx, tenant, id)
	if err != nil {
		a.fail(c, err)
		return
	}
	if a.ops != nil {
		a.ops.forget(id)
	}
	if a.notifier != nil {
		a.notifier.OperationChanged(ctx, id)
	}
	if res.Immediate {
		if _, spec, err := queue.TaskForOperation(res.Operation); err == nil {
			if err := a.inspector.DeletePending(ctx, spec.Queue, id); err != nil {
				a.log.Warn("could not remove cancelled task; its job will see the cancel", "operation_id", id, "error", err)
			}
		}
	}
	writeAccepted(c, res.Operation)
}
