package models

import (
	"encoding/hex"

	"github.com/google/uuid"
)

// ID prefixes say what an ID names, so a site ID pasted where an operation ID is
// expected reads as wrong at a glance.
const (
	PrefixTenant    = "ten_"
	PrefixUser      = "usr_"
	PrefixToken     = "tok_"
	PrefixVPS       = "vps_"
	PrefixSite      = "site_"
	PrefixBackup    = "bak_"
	PrefixOperation = "op_"
	PrefixUsage     = "use_"
)

// NewID returns prefix followed by the 32 hex digits of a UUIDv7. The UUID's leading
// bits are a millisecond timestamp, so IDs sort by creation time: listings ordered by
// ID are ordered by age, and an index on (tenant_id, id) serves "newest first" pages.
func NewID(prefix string) string {
	u := uuid.Must(uuid.NewV7())
	var buf [32]byte
	hex.Encode(buf[:], u[:])
	return prefix + string(buf[:])
}
