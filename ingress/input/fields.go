package input

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// FieldError names one offending field of a request.
//
// Field is the JSON member name (for example "domain") or, for headers and
// query parameters, the header or parameter name ("Idempotency-Key", "wait").
// Detail is a sentence fragment meant to follow the field name, such as
// "is required" or "must be one of wordpress, laravel, php, html".
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

// ValidationError lists every offending field; Error() joins them. Maps to HTTP 422.
//
// Validators collect all problems before returning, so Fields is never
// truncated to the first failure.
type ValidationError struct {
	Fields []FieldError
}

// Error joins every field problem into one line, for logs and plain-text
// clients: "invalid request: domain is required; site_type must be one of ...".
func (e *ValidationError) Error() string {
	if len(e.Fields) == 0 {
		return "invalid request"
	}
	var b strings.Builder
	b.WriteString("invalid request: ")
	for i, f := range e.Fields {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.Field)
		b.WriteByte(' ')
		b.WriteString(f.Detail)
	}
	return b.String()
}

// Add appends one field problem; helper used by validators.
func (e *ValidationError) Add(field, detail string) {
	e.Fields = append(e.Fields, FieldError{Field: field, Detail: detail})
}

// Err returns e when it has fields, nil otherwise (so validators can `return v.Err()`).
//
// It returns an untyped nil, never a nil *ValidationError wrapped in a non-nil
// error interface.
func (e *ValidationError) Err() error {
	if e == nil || len(e.Fields) == 0 {
		return nil
	}
	return e
}

// DecodeError reports a request body that could not be decoded into the
// request struct. Status is the HTTP status the ingress answers with:
//
//   - 400 Bad Request: empty body, malformed JSON (Detail carries the byte
//     offset), a top-level value that is not an object, trailing data after
//     the object, or a body that could not be read.
//   - 413 Content Too Large: more than MaxBodyBytes bytes.
//   - 415 Unsupported Media Type: Content-Type missing or not JSON.
//   - 422 Unprocessable Content: unknown or duplicated members, or members of
//     the wrong JSON type. Fields names every one of them, in body order;
//     Field and Detail repeat the first. The request struct still holds
//     every other member, so the caller can validate those too and answer
//     with all the problems at once (see Join).
//
// Detail never contains more of the request than a field name or a byte
// offset, so it is safe to return to the client verbatim.
type DecodeError struct {
	// Status is the HTTP status code for the response.
	Status int
	// Field is the JSON path of the offending member ("domain"), empty when
	// the problem concerns the body as a whole.
	Field string
	// Detail says what is wrong, as a sentence fragment for the client.
	Detail string
	// Fields lists every offending member of a 422, in body order; nil for
	// the other statuses.
	Fields []FieldError

	err error // underlying cause, for logs only
}

// Error describes the problem as "decode request: <field> <detail>".
func (e *DecodeError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("decode request (%d %s): %s %s", e.Status, http.StatusText(e.Status), e.Field, e.Detail)
	}
	return fmt.Sprintf("decode request (%d %s): %s", e.Status, http.StatusText(e.Status), e.Detail)
}

// Unwrap returns the underlying cause (a *json.SyntaxError, a read error...),
// if any. It is meant for logs; clients only ever see Field and Detail.
func (e *DecodeError) Unwrap() error { return e.err }

// Join merges the outcomes of one request's checks (DecodeJSON, then
// Normalize, then a handler's own checks) into the one error the client
// gets, so that a body with several problems is answered once with all of
// them:
//
//   - nil when every err is nil;
//   - otherwise the first error, in argument order, that is not about fields
//     (a 400, 413 or 415 *DecodeError, or an internal error), unchanged: a
//     body that cannot be read has no fields to report;
//   - otherwise one *ValidationError naming every field of the 422
//     *DecodeErrors and *ValidationErrors, in argument order. A field named
//     by an earlier error is not named again by a later one, so a mistyped
//     "domain" (which the decoder left empty) is not also "is required".
func Join(errs ...error) error {
	var fieldErrs [][]FieldError
	for _, err := range errs {
		if err == nil {
			continue
		}
		if de, ok := errors.AsType[*DecodeError](err); ok && de.Status == http.StatusUnprocessableEntity {
			fields := de.Fields
			if len(fields) == 0 {
				fields = []FieldError{{Field: de.Field, Detail: de.Detail}}
			}
			fieldErrs = append(fieldErrs, fields)
			continue
		}
		if ve, ok := errors.AsType[*ValidationError](err); ok {
			fieldErrs = append(fieldErrs, ve.Fields)
			continue
		}
		return err
	}
	var out ValidationError
	named := make(map[string]struct{})
	for _, fields := range fieldErrs {
		mine := make(map[string]struct{})
		for _, f := range fields {
			if _, earlier := named[f.Field]; earlier {
				continue
			}
			mine[f.Field] = struct{}{}
			out.Fields = append(out.Fields, f)
		}
		for f := range mine {
			named[f] = struct{}{}
		}
	}
	return out.Err()
}
