package input

import (
	"errors"
	"strconv"
	"time"
)

// MaxIdempotencyKeyLen is the longest Idempotency-Key header value accepted.
const MaxIdempotencyKeyLen = 255

// ValidIdempotencyKey checks an Idempotency-Key header value
// (draft-ietf-httpapi-idempotency-key-header): 1 to 255 printable ASCII
// characters (0x21–0x7E, so no spaces). It returns nil or a *ValidationError
// naming the header "Idempotency-Key".
//
// The value is compared byte for byte: it is not trimmed, unquoted or
// case-folded, so `"abc"` and `abc` are different keys.
func ValidIdempotencyKey(k string) error {
	var v ValidationError
	ok := len(k) >= 1 && len(k) <= MaxIdempotencyKeyLen
	for i := 0; ok && i < len(k); i++ {
		ok = k[i] >= 0x21 && k[i] <= 0x7e
	}
	if !ok {
		v.Add("Idempotency-Key", "must be 1 to 255 printable ASCII characters without spaces")
	}
	return v.Err()
}

// MaxWait caps the ?wait= long-poll duration.
const MaxWait = 30 * time.Second

// ParseWait parses the ?wait= query parameter of a long poll: a Go duration
// ("10s", "1500ms") or a plain number of seconds ("10"), from 0 to MaxWait.
// An empty string means no wait and returns 0. Errors are *ValidationError
// naming the parameter "wait"; a value above MaxWait is an error, not silently
// capped, so clients learn the limit.
func ParseWait(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	var v ValidationError
	var d time.Duration
	// ParseInt clamps out-of-range values to ±MaxInt64 with ErrRange, which
	// still has the right sign for the checks below.
	if n, err := strconv.ParseInt(s, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		switch {
		case n < 0:
			d = -1
		case n > int64(MaxWait/time.Second):
			d = MaxWait + 1
		default:
			d = time.Duration(n) * time.Second
		}
	} else if d, err = time.ParseDuration(s); err != nil {
		v.Add("wait", "must be a duration such as 10s or a number of seconds")
		return 0, v.Err()
	}
	switch {
	case d < 0:
		v.Add("wait", "must not be negative")
	case d > MaxWait:
		v.Add("wait", "must be at most 30s")
	}
	if err := v.Err(); err != nil {
		return 0, err
	}
	return d, nil
}
