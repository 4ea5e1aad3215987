package drivers

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidKey is wrapped by every error that refuses a BackupStore key. It is
// permanent: the same key is refused every time.
var ErrInvalidKey = errors.New("drivers: invalid backup store key")

// MaxBackupKeyLen is the longest key a BackupStore accepts (S3 allows 1024 bytes
// and a store may add a prefix).
const MaxBackupKeyLen = 512

// ValidateBackupKey reports whether key is one every BackupStore accepts: 1 to
// MaxBackupKeyLen characters of [a-z0-9_./-], slash-separated segments that are
// not empty and do not start with "." (which also rules out "." and ".." and
// the stores' own temporary files), no ".." anywhere, no leading or trailing
// "/". The error wraps ErrInvalidKey and quotes the key, cut short.
func ValidateBackupKey(key string) error {
	why := backupKeyProblem(key)
	if why == "" {
		return nil
	}
	return fmt.Errorf("%w %s: %s", ErrInvalidKey, quote(key), why)
}

func backupKeyProblem(key string) string {
	switch {
	case key == "":
		return "must not be empty"
	case len(key) > MaxBackupKeyLen:
		return fmt.Sprintf("is %d characters long, the limit is %d", len(key), MaxBackupKeyLen)
	case strings.HasPrefix(key, "/"):
		return "must not be an absolute path"
	case strings.Contains(key, ".."):
		return `must not contain ".."`
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '/' || c == '-') {
			return fmt.Sprintf("invalid character %q at byte %d (only a-z, 0-9, '_', '.', '/' and '-' are allowed)", c, i)
		}
	}
	for i, seg := range strings.Split(key, "/") {
		switch {
		case seg == "":
			return fmt.Sprintf("segment %d is empty", i+1)
		case seg[0] == '.':
			return fmt.Sprintf("segment %d starts with '.'", i+1)
		}
	}
	return ""
}
