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
//     (wrong Content-Type, too large, malformed JSON, unknown, repeated or
//     mistyped fields). Its Status field is the HTTP status to answer with
//     (400, 413, 415 or 422) and, on a 422, Fields names every offending
//     JSON member while the struct still holds the others.
//   - *ValidationError: one or more fields are invalid. It always maps to
//     422 and lists every offending field, so a caller can fix all of them in
//     one round trip.
//
// A typical handler decodes, normalises what decoded, and joins both
// outcomes, so that an unknown member and an invalid value are reported
// together:
//
//	var raw input.CreateSiteRequest
//	decodeErr := input.DecodeJSON(r, &raw)
//	req, err := raw.Normalize()
//	if err := input.Join(decodeErr, err); err != nil {
//		return err // a 400/413/415 *DecodeError, or one *ValidationError
//	}
//
// Normalize methods return the canonical request (punycode lowercase domains,
// canonical IP addresses, defaults filled in); handlers must persist and hash
// that canonical value, never the raw one.
package input
