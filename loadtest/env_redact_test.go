package loadtest

import (
	"strings"
	"testing"
)

// A malformed Redis URL is reported without its password: go-redis's parse
// error quotes the URL whole.
func TestClaimRedisDBRedactsTheURL(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"redis://:Pw-Leak-41d9@127.0.0.1:notaport/0", "redis://:Pw-Leak-41d9@127.0.0.1:6379/0\x7f"} {
		_, err := ClaimRedisDB(t.Context(), raw, "run")
		if err == nil || strings.Contains(err.Error(), "Pw-Leak-41d9") {
			t.Errorf("ClaimRedisDB(%q) = %v; want an error without the password", raw, err)
		}
	}
}
