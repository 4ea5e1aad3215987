package ingress

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/ingress/input"
	"github.com/chomhq/chom/models"
)

// OperationView is the API representation of an operation.
type OperationView struct {
	ID              string          `json:"id"`
	Type            string          `json:"type"`
	Status          string          `json:"status"`
	Progress        int             `json:"progress"`
	TargetType      string          `json:"target_type"`
	TargetID        string          `json:"target_id"`
	Error           *OperationError `json:"error,omitempty"`
	Result          json.RawMessage `json:"result"`
	CancelRequested bool            `json:"cancel_requested"`
	CreatedAt       time.Time       `json:"created_at"`
	StartedAt       *time.Time      `json:"started_at"`
	FinishedAt      *time.Time      `json:"finished_at"`
}

// OperationError says why an operation failed or was cancelled.
type OperationError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func operationView(op *models.Operation) OperationView {
	v := OperationView{
		ID: op.ID, Type: op.Type, Status: op.Status, Progress: op.Progress,
		TargetType: op.TargetType, TargetID: op.TargetID, Result: json.RawMessage("null"),
		CancelRequested: op.CancelRequestedAt != nil,
		CreatedAt:       op.CreatedAt.UTC(), StartedAt: utc(op.StartedAt), FinishedAt: utc(op.FinishedAt),
	}
	if op.Result != nil && json.Valid([]byte(*op.Result)) {
		v.Result = json.RawMessage(*op.Result)
	}
	if op.ErrorCode != nil && *op.ErrorCode != "" {
		v.Error = &OperationError{Code: *op.ErrorCode}
		if op.ErrorMessage != nil {
			v.Error.Message = *op.ErrorMessage
		}
	}
	return v
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// operationETag changes whenever anything a poller can see changes.
func operationETag(op *models.Operation) string {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%s|%d|%d|%t", op.ID, op.Status, op.Progress, op.UpdatedAt.UnixMicro(), op.CancelRequestedAt != nil)
	return `"` + strconv.FormatUint(h.Sum64(), 36) + `"`
}

// etagMatches implements If-None-Match: a list of tags or "*"; weak tags compare
// by their opaque part.
func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// writeAccepted answers 202 with the operation, where to poll it and when.
func writeAccepted(c *gin.Context, op *models.Operation) {
	c.Header("Location", "/api/v1/operations/"+op.ID)
	c.Header("ETag", operationETag(op))
	retryAfter(c, 1)
	c.JSON(202, operationView(op))
}

// Page is a page of a listing; NextCursor is empty on the last page.
type Page[T any] struct {
	Data       []T    `json:"data"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// pageParams reads ?limit (1–100, default 20) and ?cursor (an ID with prefix).
func pageParams(c *gin.Context, prefix string, v *input.ValidationError) (cursor string, limit int) {
	limit = 20
	if s := c.Query("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100 {
			v.Add("limit", "must be an integer between 1 and 100")
		} else {
			limit = n
		}
	}
	cursor = c.Query("cursor")
	if cursor != "" && !wellFormedID(cursor, prefix) {
		v.Add("cursor", "must be the next_cursor of a previous page")
	}
	return cursor, limit
}

// pathID reads the :id path parameter and returns it when it is a well-formed
// ID of prefix; otherwise it answers 404 (an ID that cannot exist is as absent
// as one that does not) and returns false.
func (a *API) pathID(c *gin.Context, prefix string) (string, bool) {
	id := c.Param("id")
	if !wellFormedID(id, prefix) {
		a.fail(c, models.ErrNotFound)
		return "", false
	}
	return id, true
}

// wellFormedID reports whether id is prefix followed by 32 lowercase hex digits.
func wellFormedID(id, prefix string) bool {
	if len(id) != len(prefix)+32 || !strings.HasPrefix(id, prefix) {
		return false
	}
	for _, c := range id[len(prefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// oneOf checks an optional enum query parameter.
func oneOf(v *input.ValidationError, field, value string, allowed ...string) {
	if value == "" {
		return
	}
	for _, a := range allowed {
		if value == a {
			return
		}
	}
	v.Add(field, "must be one of "+strings.Join(allowed, ", "))
}

// normalizer is a request body type: Normalize validates every field and
// returns the canonical request or an error naming every offending field.
type normalizer[R any] interface {
	Normalize() (R, error)
}

// decodeBody decodes the request's JSON body into R and normalizes it. On
// failure it answers one problem naming every bad field (unknown, repeated
// and mistyped members with the invalid values) and returns false.
func decodeBody[R normalizer[R]](a *API, c *gin.Context, extra ...error) (R, bool) {
	var raw R
	decodeErr := input.DecodeJSON(c.Request, &raw)
	req, err := raw.Normalize()
	if err := input.Join(append([]error{decodeErr, err}, extra...)...); err != nil {
		a.fail(c, err)
		return req, false
	}
	return req, true
}
