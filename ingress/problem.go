package ingress

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/chomhq/chom/ingress/input"
	"github.com/chomhq/chom/models"
)

// Problem is an RFC 9457 problem details object.
type Problem struct {
	Type      string             `json:"type"`
	Title     string             `json:"title"`
	Status    int                `json:"status"`
	Detail    string             `json:"detail,omitempty"`
	Instance  string             `json:"instance,omitempty"`
	RequestID string             `json:"request_id,omitempty"`
	Errors    []input.FieldError `json:"errors,omitempty"`
	// OperationID names the operation in the way, on a 409.
	OperationID string `json:"operation_id,omitempty"`
	// Quota names the quota a refused request would exceed (quota-exceeded:
	// sites, backups, backup_bytes), with its Limit and the Used amount.
	Quota string `json:"quota,omitempty"`
	Limit int64  `json:"limit,omitempty"`
	Used  int64  `json:"used,omitempty"`
}

// Problem types. They are URNs: stable identifiers, not links.
const (
	problemValidation  = "urn:chom:problem:validation"
	problemMalformed   = "urn:chom:problem:malformed-request"
	problemTooLarge    = "urn:chom:problem:body-too-large"
	problemMediaType   = "urn:chom:problem:unsupported-media-type"
	problemAuth        = "urn:chom:problem:unauthorized"
	problemForbidden   = "urn:chom:problem:forbidden"
	problemNotFound    = "urn:chom:problem:not-found"
	problemConflict    = "urn:chom:problem:conflict"
	problemIdempotency = "urn:chom:problem:idempotency-key-reused"
	problemUnavailable = "urn:chom:problem:unavailable"
	problemInternal    = "urn:chom:problem:internal"
	problemMethod      = "urn:chom:problem:method-not-allowed"
	problemRateLimited = "urn:chom:problem:rate-limited"
	problemQuota       = "urn:chom:problem:quota-exceeded"
	// problemHTTPSOff: the platform cannot store certificate keys
	// (certificates.go).
	problemHTTPSOff = "urn:chom:problem:https-not-configured"
)

// Errors the handlers raise themselves.
var (
	errUnauthorized = errors.New("a valid API token is required")
	errForbidden    = errors.New("the token lacks the scope this route requires")
	errRouteMissing = errors.New("no such route")
	errMethod       = errors.New("method not allowed on this route")
)

// writeProblem sends p as application/problem+json.
func writeProblem(c *gin.Context, p Problem) {
	p.Instance = c.Request.URL.Path
	p.RequestID = c.GetString(ctxRequestID)
	if p.Status == http.StatusUnauthorized {
		c.Header("WWW-Authenticate", `Bearer realm="chom"`)
	}
	if p.Status == http.StatusServiceUnavailable {
		c.Header("Retry-After", "5")
	}
	c.Header("Content-Type", "application/problem+json")
	c.Header("Cache-Control", "no-store")
	c.AbortWithStatusJSON(p.Status, p)
}

// fail maps err to its HTTP status and problem: the one place where errors become
// responses. Internal errors are logged with the request ID and never shown.
func (a *API) fail(c *gin.Context, err error) {
	var (
		decodeErr   *input.DecodeError
		validErr    *input.ValidationError
		conflictErr *models.ConflictError
		limitedErr  *authLimitedError
		quotaErr    *models.QuotaError
	)
	switch {
	case errors.As(err, &decodeErr):
		p := Problem{Status: decodeErr.Status, Detail: decodeErr.Detail}
		switch decodeErr.Status {
		case http.StatusRequestEntityTooLarge:
			p.Type, p.Title = problemTooLarge, "Request body too large"
		case http.StatusUnsupportedMediaType:
			p.Type, p.Title = problemMediaType, "Unsupported media type"
		case http.StatusUnprocessableEntity:
			p.Type, p.Title = problemValidation, "Invalid request"
		default:
			p.Type, p.Title = problemMalformed, "Malformed request body"
		}
		if decodeErr.Status == http.StatusUnprocessableEntity {
			p.Detail = "one or more fields are invalid"
			p.Errors = decodeErr.Fields
			if len(p.Errors) == 0 {
				p.Errors = []input.FieldError{{Field: decodeErr.Field, Detail: decodeErr.Detail}}
			}
		}
		writeProblem(c, p)
	case errors.As(err, &validErr):
		writeProblem(c, Problem{Type: problemValidation, Title: "Invalid request", Status: http.StatusUnprocessableEntity,
			Detail: "one or more fields are invalid", Errors: validErr.Fields})
	case errors.As(err, &limitedErr):
		retryAfter(c, max(1, int(math.Ceil(limitedErr.wait.Seconds()))))
		writeProblem(c, Problem{Type: problemRateLimited, Title: "Too many requests", Status: http.StatusTooManyRequests,
			Detail: "too many requests without a valid API token from this address; retry after the time in Retry-After"})
	case errors.Is(err, errUnauthorized):
		writeProblem(c, Problem{Type: problemAuth, Title: "Unauthorized", Status: http.StatusUnauthorized, Detail: errUnauthorized.Error()})
	case errors.Is(err, errForbidden):
		writeProblem(c, Problem{Type: problemForbidden, Title: "Forbidden", Status: http.StatusForbidden, Detail: errForbidden.Error()})
	case errors.Is(err, errRouteMissing):
		writeProblem(c, Problem{Type: problemNotFound, Title: "Not found", Status: http.StatusNotFound, Detail: "no such route"})
	case errors.Is(err, errMethod):
		writeProblem(c, Problem{Type: problemMethod, Title: "Method not allowed", Status: http.StatusMethodNotAllowed})
	case errors.Is(err, errHTTPSNotConfigured):
		writeProblem(c, Problem{Type: problemHTTPSOff, Title: "HTTPS not configured", Status: http.StatusConflict,
			Detail: "HTTPS is not configured on this platform: certificates can be neither issued nor uploaded until its operator sets it up; nothing was changed"})
	case errors.Is(err, models.ErrNotFound):
		writeProblem(c, Problem{Type: problemNotFound, Title: "Not found", Status: http.StatusNotFound, Detail: "no such resource"})
	case errors.As(err, &conflictErr):
		if conflictErr.OperationID != "" {
			// The operation in the way is where the caller waits before trying again.
			c.Header("Location", "/api/v1/operations/"+conflictErr.OperationID)
		}
		p := Problem{Type: problemConflict, Title: "Conflict", Status: http.StatusConflict,
			Detail: conflictErr.Reason, OperationID: conflictErr.OperationID}
		if conflictErr.Field != "" {
			// A value already taken (a domain) is named like an invalid one.
			p.Errors = []input.FieldError{{Field: conflictErr.Field, Detail: conflictErr.Detail}}
		}
		writeProblem(c, p)
	case errors.As(err, &quotaErr):
		a.metrics.SecurityRefused("quota")
		writeProblem(c, Problem{Type: problemQuota, Title: "Quota exceeded", Status: http.StatusForbidden,
			Detail: fmt.Sprintf("the tenant has reached its %s quota (%d of %d); nothing was changed", quotaErr.Quota, quotaErr.Used, quotaErr.Limit),
			Quota:  quotaErr.Quota, Limit: quotaErr.Limit, Used: quotaErr.Used})
	case errors.Is(err, models.ErrIdempotencyMismatch):
		writeProblem(c, Problem{Type: problemIdempotency, Title: "Idempotency key reused", Status: http.StatusUnprocessableEntity,
			Detail: "this Idempotency-Key was used with a different request",
			Errors: []input.FieldError{{Field: "Idempotency-Key", Detail: "was already used with a different request body"}}})
	case errors.Is(err, context.Canceled) && c.Request.Context().Err() != nil:
		// The client went away; nothing to answer. Not a server fault.
		a.log.DebugContext(c.Request.Context(), "client went away", "request_id", c.GetString(ctxRequestID))
		c.Abort()
	case errors.Is(err, context.DeadlineExceeded) || unavailable(err):
		a.log.WarnContext(c.Request.Context(), "dependency unavailable", "request_id", c.GetString(ctxRequestID), "error", err)
		writeProblem(c, Problem{Type: problemUnavailable, Title: "Service unavailable", Status: http.StatusServiceUnavailable,
			Detail: "a backing service is unavailable; retry later"})
	default:
		a.log.ErrorContext(c.Request.Context(), "request failed", "request_id", c.GetString(ctxRequestID),
			"route", c.FullPath(), "error", err)
		writeProblem(c, Problem{Type: problemInternal, Title: "Internal error", Status: http.StatusInternalServerError,
			Detail: "the request failed; quote the request_id when reporting it"})
	}
}

// unavailable reports whether err means a backing service (the database) could not
// be reached, as opposed to a bug: those answer 503 with Retry-After.
func unavailable(err error) bool {
	var opErr *net.OpError
	var connErr *pgconn.ConnectError
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08: connection exceptions; 57P01-57P03: the server is shutting
		// down, crashed or not yet accepting connections.
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03"
	}
	return errors.As(err, &opErr) || errors.As(err, &connErr) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		pgconn.SafeToRetry(err)
}

// retryAfter sets Retry-After in seconds.
func retryAfter(c *gin.Context, seconds int) { c.Header("Retry-After", strconv.Itoa(seconds)) }
