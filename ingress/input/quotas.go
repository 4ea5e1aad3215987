package input

// QuotaRequest is the body of PUT /api/v1/tenants/{tenant}/quota: a
// tenant's limits. An absent or null member takes the platform default
// (CHOM_QUOTA_*); 0 is unlimited.
type QuotaRequest struct {
	MaxSites       *int64 `json:"max_sites"`
	MaxBackups     *int64 `json:"max_backups"`
	MaxBackupBytes *int64 `json:"max_backup_bytes"`
}

// Normalize checks that every limit given is ≥ 0 and returns the request, or
// a *ValidationError naming every negative one.
func (r QuotaRequest) Normalize() (QuotaRequest, error) {
	var v ValidationError
	for _, f := range []struct {
		name string
		val  *int64
	}{{"max_sites", r.MaxSites}, {"max_backups", r.MaxBackups}, {"max_backup_bytes", r.MaxBackupBytes}} {
		if f.val != nil && *f.val < 0 {
			v.Add(f.name, "must be an integer ≥ 0 (0 = unlimited), or null for the default")
		}
	}
	if err := v.Err(); err != nil {
		return QuotaRequest{}, err
	}
	return r, nil
}
