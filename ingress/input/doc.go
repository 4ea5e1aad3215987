// Package input decodes and validates the JSON bodies, headers and query
// parameters that the CHOM API accepts, before anything is written or
// enqueued.
//
// It has no dependency on Gin or on any other package of this module: it works
// on *http.Request and io.Reader so that handlers, tests and fuzzers share one
// implementation.
//
// Two error types cover every rejection, and the ingress maps them to RFC 9457
// problem+json responses in one place:
//
//   - *DecodeError: the body could not be turned into the request struct
//     (wrong Content-Type, too large, malformed JSON, unknown or mistyped
//     field). Its Status field is the HTTP status to answer with (400, 413,
//     415 or 422) and Field, when set, names the offending JSON member.
//   - *ValidationError: the body decoded but one or more fields are invalid.
//     It always maps to 422 and lists every offending field, so a caller can
//     fix all of them in one round trip.
//
// A typical handler does:
//
//	var req input.CreateSiteRequest
//	if err := input.DecodeJSON(r, &req); err != nil {
//		return err // *DecodeError
//	}
//	req, err := req.Normalize()
//	if err != nil {
//		return err // *ValidationError
//	}
//
// Normalize methods return the canonical request (punycode lowercase domains,
// canonical IP addresses, defaults filled in); handlers must persist and hash
// that canonical value, never the raw one.
package input
