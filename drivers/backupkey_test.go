package drivers

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateBackupKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key  string
		want string // substring of the error; "" when valid
	}{
		{"ten_1/site_1/bkp_0193.tar.gz", ""},
		{"a", ""},
		{"a-b_c.d/e", ""},
		{strings.Repeat("a", MaxBackupKeyLen), ""},
		{"", "must not be empty"},
		{strings.Repeat("a", MaxBackupKeyLen+1), "the limit is 512"},
		{"/etc/passwd", "absolute path"},
		{"../x", `".."`},
		{"a/../b", `".."`},
		{"a..b", `".."`},
		{"a//b", "segment 2 is empty"},
		{"a/", "segment 2 is empty"},
		{"./a", "segment 1 starts with '.'"},
		{"a/.put-1", "segment 2 starts with '.'"},
		{"A", `invalid character 'A' at byte 0`},
		{"a b", `invalid character ' '`},
		{"a\\b", `invalid character '\\'`},
		{"a\nb", `invalid character '\n'`},
		{"a;b", `invalid character ';'`},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			t.Parallel()
			err := ValidateBackupKey(tt.key)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ValidateBackupKey(%q) = %v", tt.key, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ValidateBackupKey(%q) = %v, want ErrInvalidKey containing %q", tt.key, err, tt.want)
			}
		})
	}
}
