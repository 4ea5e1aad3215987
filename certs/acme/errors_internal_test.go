package acme

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
)

// TestClassify covers the failures a Pebble run cannot produce on demand:
// the CA's rate limit, its internal errors, compound problems.
func TestClassify(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	rl := &legoacme.RateLimitedError{RetryAfter: 3 * time.Hour, ProblemDetails: &legoacme.ProblemDetails{
		Type: legoacme.RateLimitedErrorType, Detail: "too many certificates (50) already issued for \"example.com\"", HTTPStatus: 429}}
	for _, tc := range []struct {
		name      string
		err       error
		code      string
		temporary bool
		domain    string
		retryAt   time.Time
	}{
		{"rate limited", fmt.Errorf("obtain: %w", rl), CodeRateLimited, true, "", now.Add(3 * time.Hour)},
		{"rate limited without time", &legoacme.RateLimitedError{ProblemDetails: rl.ProblemDetails}, CodeRateLimited, true, "", now.Add(time.Hour)},
		{"server internal", &legoacme.ProblemDetails{Type: legoacme.ServerInternalErrorType, HTTPStatus: 500}, CodeCAUnreachable, true, "", time.Time{}},
		{"caa", &legoacme.ProblemDetails{Type: legoacme.CaaErrorType, Detail: "CAA record forbids issuance"}, CodeCARefused, false, "", time.Time{}},
		{"compound", &legoacme.ProblemDetails{Type: legoacme.CompoundErrorType, SubProblems: []legoacme.SubProblem{
			{Type: legoacme.DNSErrorType, Detail: "NXDOMAIN", Identifier: legoacme.Identifier{Type: "dns", Value: "b.example.com"}}}},
			CodeChallengeFailed, false, "b.example.com", time.Time{}},
		{"per-domain", errors.Join(fmt.Errorf("resolver: one or more domains had a problem: [b.example.com: %w]",
			&legoacme.ProblemDetails{Type: legoacme.ConnectionErrorType, Detail: "refused"})), CodeChallengeFailed, false, "b.example.com", time.Time{}},
		{"presenter", &setupError{domain: "a.example.com", err: errors.New("ssh: connection refused")}, CodeChallengeSetup, true, "a.example.com", time.Time{}},
		{"deadline", fmt.Errorf("obtain: %w", context.DeadlineExceeded), CodeChallengeTimeout, true, "", time.Time{}},
	} {
		e := classify(tc.err, []string{"a.example.com", "b.example.com"}, now)
		if e.Code != tc.code || e.Temporary != tc.temporary || e.Domain != tc.domain || !e.RetryAt.Equal(tc.retryAt) {
			t.Errorf("%s: %+v; want code %s temporary %v domain %q retry at %v", tc.name, e, tc.code, tc.temporary, tc.domain, tc.retryAt)
		}
		if !errors.Is(e, tc.err) && e.Err != tc.err {
			t.Errorf("%s: the cause is lost", tc.name)
		}
	}
}
