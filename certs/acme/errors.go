package acme

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
)

// Stable error codes: a job puts them on the operation; clients match on them.
const (
	// CodeRateLimited: the CA refused for a rate limit; retry at RetryAt.
	CodeRateLimited = "rate_limited"
	// CodeDeferred: CHOM's own rate-limit budget is spent; the job waits
	// until RetryAt without counting a failure.
	CodeDeferred = "deferred"
	// CodeCARefused: the CA will not issue for these names (blocked
	// identifier, CAA forbids it, unsupported name); permanent.
	CodeCARefused = "ca_refused"
	// CodeChallengeFailed: the CA could not validate a domain; the message
	// names the domain and what the CA said. Permanent until the tenant
	// fixes DNS or the site.
	CodeChallengeFailed = "challenge_failed"
	// CodeChallengeSetup: CHOM could not put the challenge answer in place
	// (the server or the DNS provider failed); temporary.
	CodeChallengeSetup = "challenge_setup_failed"
	// CodeChallengeTimeout: validation or DNS propagation did not finish in
	// time; temporary.
	CodeChallengeTimeout = "challenge_timeout"
	// CodeCAUnreachable: the CA did not answer or answered 5xx; temporary.
	CodeCAUnreachable = "ca_unreachable"
	// CodeInvalidRequest: the request cannot be issued as asked (a wildcard
	// without DNS-01, no domains); permanent.
	CodeInvalidRequest = "invalid_request"
	// CodeInternal: CHOM's own side failed (the database holding the
	// account or the budget, an unexpected error); temporary.
	CodeInternal = "internal_error"
)

// Error is a classified issuance failure.
type Error struct {
	// Code is one of the Code constants.
	Code string
	// Message says what happened in words an operator (or tenant) can act
	// on; it never holds secrets.
	Message string
	// Domain is the domain the failure is about, when there is one.
	Domain string
	// RetryAt is when to try again (CodeRateLimited, CodeDeferred); zero
	// when the CA gave no time.
	RetryAt time.Time
	// Temporary is true when retrying later, unchanged, can succeed.
	Temporary bool
	// Err is the underlying error.
	Err error
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// AsError returns err's *Error, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// challengeProblems are ACME problem types that mean the CA tried to
// validate a domain and could not.
var challengeProblems = map[string]bool{
	legoacme.ConnectionErrorType:        true,
	legoacme.DNSErrorType:               true,
	legoacme.IncorrectResponseErrorType: true,
	legoacme.TLSErrorType:               true,
	legoacme.UnauthorizedErrorType:      true,
}

// refusedProblems are ACME problem types that mean the CA will not issue
// for these names, whatever CHOM does.
var refusedProblems = map[string]bool{
	legoacme.RejectedIdentifierErrorType:      true,
	legoacme.CaaErrorType:                     true,
	legoacme.UnsupportedIdentifierErrorType:   true,
	legoacme.ExternalAccountRequiredErrorType: true,
	legoacme.BadCSRErrorType:                  true,
}

// setupError marks an error of CHOM's own side of a challenge (presenter or
// DNS provider).
type setupError struct {
	domain string
	err    error
}

func (e *setupError) Error() string {
	return fmt.Sprintf("present the challenge for %s: %v", e.domain, e.err)
}
func (e *setupError) Unwrap() error { return e.err }

// classify turns an error of an issuance for domains into an *Error. now is
// the clock for RetryAt.
func classify(err error, domains []string, now time.Time) *Error {
	if e := AsError(err); e != nil {
		return e
	}
	var rl *legoacme.RateLimitedError
	if errors.As(err, &rl) {
		wait := rl.RetryAfter
		if wait <= 0 {
			wait = time.Hour
		}
		return &Error{Code: CodeRateLimited, Message: "the CA's rate limit: " + rl.Detail,
			RetryAt: now.Add(wait), Temporary: true, Err: err}
	}
	var se *setupError
	if errors.As(err, &se) {
		return &Error{Code: CodeChallengeSetup, Domain: se.domain, Temporary: true, Err: err,
			Message: fmt.Sprintf("could not put the %s challenge answer in place: %v", se.domain, se.err)}
	}
	if p := problem(err); p != nil {
		domain := failedDomain(err, domains, p)
		switch {
		case refusedProblems[p.Type]:
			return &Error{Code: CodeCARefused, Domain: domain, Err: err, Message: "the CA refuses to issue: " + p.Detail}
		case challengeProblems[p.Type]:
			return &Error{Code: CodeChallengeFailed, Domain: domain, Err: err,
				Message: fmt.Sprintf("the CA could not validate %s: %s", orAll(domain), p.Detail)}
		case p.Type == legoacme.ServerInternalErrorType || p.HTTPStatus >= 500 || p.Type == legoacme.BadNonceErrorType:
			return &Error{Code: CodeCAUnreachable, Temporary: true, Err: err, Message: "the CA failed: " + p.Detail}
		}
	}
	msg := err.Error()
	switch {
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(msg, "didn't respond to our request"),
		strings.Contains(msg, "time limit exceeded"):
		return &Error{Code: CodeChallengeTimeout, Domain: failedDomain(err, domains, nil), Temporary: true, Err: err,
			Message: "validation did not finish in time: " + msg}
	case errors.Is(err, context.Canceled):
		return &Error{Code: CodeCAUnreachable, Temporary: true, Err: err, Message: "issuance cancelled: " + msg}
	}
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ne) || errors.As(err, &ue) || strings.Contains(msg, "unable to communicate with the API server") {
		return &Error{Code: CodeCAUnreachable, Temporary: true, Err: err, Message: "the CA is unreachable: " + msg}
	}
	if p := problem(err); p != nil {
		return &Error{Code: CodeCARefused, Err: err, Message: "the CA refused the request: " + p.Detail}
	}
	return &Error{Code: CodeInternal, Temporary: true, Err: err, Message: msg}
}

// internal wraps an error of CHOM's own side (store, budget).
func internal(what string, err error) *Error {
	return &Error{Code: CodeInternal, Temporary: true, Err: err, Message: what + ": " + err.Error()}
}

// problem finds the most specific ACME problem in err's tree: a challenge or
// refusal problem over any other.
func problem(err error) *legoacme.ProblemDetails {
	var found []*legoacme.ProblemDetails
	walk(err, func(e error) {
		if p, ok := e.(*legoacme.ProblemDetails); ok {
			found = append(found, p)
		}
	})
	for _, p := range found {
		if challengeProblems[p.Type] || refusedProblems[p.Type] {
			return p
		}
		for _, sp := range p.SubProblems {
			if challengeProblems[sp.Type] || refusedProblems[sp.Type] {
				return &legoacme.ProblemDetails{Type: sp.Type, Detail: sp.Detail, HTTPStatus: p.HTTPStatus, SubProblems: []legoacme.SubProblem{sp}}
			}
		}
	}
	if len(found) > 0 {
		return found[0]
	}
	return nil
}

// walk calls fn on every error of err's tree.
func walk(err error, fn func(error)) {
	if err == nil {
		return
	}
	fn(err)
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			walk(e, fn)
		}
	case interface{ Unwrap() error }:
		walk(u.Unwrap(), fn)
	}
}

// failedDomain names the domain a failure is about: a subproblem's
// identifier, else the one domain of the request, else the domain lego's
// per-domain error lists ("[domain: error]").
func failedDomain(err error, domains []string, p *legoacme.ProblemDetails) string {
	if p != nil {
		for _, sp := range p.SubProblems {
			if sp.Identifier.Value != "" {
				return sp.Identifier.Value
			}
		}
	}
	if len(domains) == 1 {
		return domains[0]
	}
	msg := err.Error()
	for _, d := range domains {
		if strings.Contains(msg, "["+d+": ") {
			return d
		}
	}
	return ""
}

// orAll names a domain, or "a domain" when it is not known.
func orAll(domain string) string {
	if domain == "" {
		return "a domain of the certificate"
	}
	return domain
}
