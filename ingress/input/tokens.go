package input

import (
	"fmt"
	"slices"
	"unicode"
	"unicode/utf8"
)

// CreateTokenRequest is the body of POST /api/v1/tenants/{tenant}/tokens (an
// admin operation that issues a token to a tenant).
//
// TTLSeconds is a pointer so that an absent member (the default lifetime,
// CHOM_TOKEN_DEFAULT_TTL) differs from an explicit 0 (never expires).
type CreateTokenRequest struct {
	Name       string   `json:"name"`
	Scopes     []string `json:"scopes"`
	TTLSeconds *int64   `json:"ttl_seconds,omitempty"`
}

// Bounds of CreateTokenRequest.
const (
	MaxTokenNameLen = 64
	// MaxTokenTTLSeconds is ten years: a longer lifetime is a typo.
	MaxTokenTTLSeconds = 10 * 365 * 24 * 3600
)

// TokenScopes are the scopes a token may hold (models.Scope*): read, write
// and admin nest; ops is the read-only ops UI.
var TokenScopes = []string{"read", "write", "admin", "ops"}

// Normalize validates every field and returns the canonical request, or a
// *ValidationError listing every offending field by its JSON name.
//
//   - name: required, 1–64 characters, no control characters.
//   - scopes: required, at least one, each one of TokenScopes; returned
//     sorted without repeats.
//   - ttl_seconds: 0 (never expires) to MaxTokenTTLSeconds; absent: the
//     server's default.
//
// On error the returned request is the zero value.
func (r CreateTokenRequest) Normalize() (CreateTokenRequest, error) {
	var v ValidationError
	switch {
	case r.Name == "":
		v.Add("name", "is required")
	case !utf8.ValidString(r.Name) || utf8.RuneCountInString(r.Name) > MaxTokenNameLen:
		v.Add("name", fmt.Sprintf("must be at most %d characters of UTF-8", MaxTokenNameLen))
	case slices.ContainsFunc([]rune(r.Name), unicode.IsControl):
		v.Add("name", "must not contain control characters")
	}
	if len(r.Scopes) == 0 {
		v.Add("scopes", "must name at least one scope: read, write, admin or ops")
	}
	for _, s := range r.Scopes {
		if !slices.Contains(TokenScopes, s) {
			v.Add("scopes", fmt.Sprintf("%q is not a scope: want read, write, admin or ops", s))
			break
		}
	}
	if r.TTLSeconds != nil && (*r.TTLSeconds < 0 || *r.TTLSeconds > MaxTokenTTLSeconds) {
		v.Add("ttl_seconds", fmt.Sprintf("must be between 0 (never expires) and %d (ten years)", MaxTokenTTLSeconds))
	}
	if err := v.Err(); err != nil {
		return CreateTokenRequest{}, err
	}
	scopes := slices.Clone(r.Scopes)
	slices.Sort(scopes)
	return CreateTokenRequest{Name: r.Name, Scopes: slices.Compact(scopes), TTLSeconds: r.TTLSeconds}, nil
}
