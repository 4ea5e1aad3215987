package models

import (
	"time"

	"github.com/uptrace/bun"
)

// Tenant is a customer account: the owner of sites, tokens and usage.
type Tenant struct {
	bun.BaseModel `bun:"table:tenants"`

	ID        string    `bun:"id,pk"`
	Name      string    `bun:"name"`
	Status    string    `bun:"status"`
	CreatedAt time.Time `bun:"created_at"`
	UpdatedAt time.Time `bun:"updated_at"`
}

// User is a person of a tenant. Tokens may be issued on a user's behalf.
type User struct {
	bun.BaseModel `bun:"table:users"`

	ID        string    `bun:"id,pk"`
	TenantID  string    `bun:"tenant_id"`
	Email     string    `bun:"email"`
	Name      string    `bun:"name"`
	Role      string    `bun:"role"`
	CreatedAt time.Time `bun:"created_at"`
}

// APIToken is a bearer credential. Only the SHA-256 of the secret is stored.
type APIToken struct {
	bun.BaseModel `bun:"table:api_tokens"`

	ID        string     `bun:"id,pk"`
	TenantID  string     `bun:"tenant_id"`
	UserID    *string    `bun:"user_id"`
	Name      string     `bun:"name"`
	Prefix    string     `bun:"prefix"`
	TokenHash string     `bun:"token_hash"`
	Scopes    string     `bun:"scopes"`
	ExpiresAt *time.Time `bun:"expires_at"`
	RevokedAt *time.Time `bun:"revoked_at"`
	CreatedAt time.Time  `bun:"created_at"`
	// LastUsedAt is when the token last authenticated a request, to within
	// TokenTouchInterval (the ingress records it when it looks the token up,
	// not on every request). Nil: never used.
	LastUsedAt *time.Time `bun:"last_used_at"`
}

// VPS allocation kinds and statuses.
const (
	AllocationShared    = "shared"
	AllocationDedicated = "dedicated"

	VPSStatusActive         = "active"
	VPSStatusMaintenance    = "maintenance"
	VPSStatusDecommissioned = "decommissioned"

	HealthHealthy   = "healthy"
	HealthDegraded  = "degraded"
	HealthUnhealthy = "unhealthy"
	HealthUnknown   = "unknown"
)

// VPSServer is a server that hosts sites.
type VPSServer struct {
	bun.BaseModel `bun:"table:vps_servers"`

	ID           string  `bun:"id,pk" json:"id"`
	Hostname     string  `bun:"hostname" json:"hostname"`
	IPAddress    string  `bun:"ip_address" json:"ip_address"`
	SSHPort      int     `bun:"ssh_port" json:"ssh_port"`
	Provider     string  `bun:"provider" json:"provider"`
	Region       string  `bun:"region" json:"region"`
	Allocation   string  `bun:"allocation" json:"allocation"`
	TenantID     *string `bun:"tenant_id" json:"tenant_id,omitempty"`
	SiteCapacity int     `bun:"site_capacity" json:"site_capacity"`
	SiteCount    int     `bun:"site_count" json:"site_count"`
	Status       string  `bun:"status" json:"status"`
	HealthStatus string  `bun:"health_status" json:"health_status"`
	HostKey      string  `bun:"host_key" json:"-"`
	// HostKeySHA256 is the fingerprint of the pinned SSH host key (computed
	// from HostKey on read; empty when none is pinned).
	HostKeySHA256 string    `bun:"-" json:"host_key_sha256,omitempty"`
	CreatedAt     time.Time `bun:"created_at" json:"created_at"`
	UpdatedAt     time.Time `bun:"updated_at" json:"updated_at"`

	// HealthCandidate and HealthStreak are the hysteresis state of health checks:
	// the status the latest consecutive results agree on when it differs from
	// HealthStatus, and how many agreed (see RecordHealthCheck).
	HealthCandidate string `bun:"health_candidate" json:"-"`
	HealthStreak    int    `bun:"health_streak" json:"-"`
	// HealthReason says why the latest check classified the server as it did.
	HealthReason    string     `bun:"health_reason" json:"health_reason,omitempty"`
	HealthCheckedAt *time.Time `bun:"health_checked_at" json:"health_checked_at,omitempty"`
}

// Site statuses. A site moves pending → provisioning → active, or to failed; a
// deprovision moves it to deprovisioning → deleted. A site with a domain to
// prove starts pending_verification and moves to pending once proven; a site
// whose unproven domain another tenant proves goes back to
// pending_verification (through deprovisioning when it was on a server).
const (
	SiteStatusPending = "pending"
	// SiteStatusPendingVerification: a domain of the site waits for proof of
	// control (domains.go); the site serves nothing and does not provision.
	SiteStatusPendingVerification = "pending_verification"
	SiteStatusProvisioning        = "provisioning"
	SiteStatusActive              = "active"
	SiteStatusFailed              = "failed"
	SiteStatusDeprovisioning      = "deprovisioning"
	SiteStatusDeleted             = "deleted"
)

// Site is a tenant's website on a VPS.
type Site struct {
	bun.BaseModel `bun:"table:sites"`

	ID       string  `bun:"id,pk" json:"id"`
	TenantID string  `bun:"tenant_id" json:"-"`
	VPSID    *string `bun:"vps_id" json:"vps_id"`
	Domain   string  `bun:"domain" json:"domain"`
	// Aliases are the site's other host names (www. and extra domains),
	// normalised like Domain; each is a domain claim like Domain (domains.go).
	Aliases      Aliases `bun:"aliases" json:"aliases"`
	SiteType     string  `bun:"site_type" json:"site_type"`
	PHPVersion   string  `bun:"php_version" json:"php_version,omitempty"`
	Status       string  `bun:"status" json:"status"`
	DocumentRoot string  `bun:"document_root" json:"document_root,omitempty"`
	SystemUser   string  `bun:"system_user" json:"system_user,omitempty"`
	OperationID  *string `bun:"operation_id" json:"operation_id"`
	// HTTPS is the site's certificate mode: HTTPSAuto (a certificate is
	// issued after the provision and renewed) or HTTPSOff (the tenant opted
	// out; a certificate is issued or uploaded only when asked).
	HTTPS string `bun:"https" json:"https"`
	// HSTS adds Strict-Transport-Security to the site's HTTPS answers
	// (opt-in: browsers remember it).
	HSTS      bool       `bun:"hsts" json:"hsts"`
	CreatedAt time.Time  `bun:"created_at" json:"created_at"`
	UpdatedAt time.Time  `bun:"updated_at" json:"updated_at"`
	DeletedAt *time.Time `bun:"deleted_at" json:"deleted_at,omitempty"`
}

// Site certificate modes (Site.HTTPS).
const (
	// HTTPSAuto: CHOM issues a certificate after the provision and renews it.
	HTTPSAuto = "auto"
	// HTTPSOff: no certificate unless the tenant asks for one or uploads one.
	HTTPSOff = "off"
)

// SiteBackup is an archive of a site's files and database (see backups.go for
// its statuses and life cycle).
type SiteBackup struct {
	bun.BaseModel `bun:"table:site_backups"`

	ID            string     `bun:"id,pk" json:"id"`
	TenantID      string     `bun:"tenant_id" json:"-"`
	SiteID        string     `bun:"site_id" json:"site_id"`
	BackupType    string     `bun:"backup_type" json:"type"`
	Status        string     `bun:"status" json:"status"`
	Format        string     `bun:"format" json:"format"`
	SizeBytes     int64      `bun:"size_bytes" json:"size_bytes"`
	SHA256        string     `bun:"sha256" json:"sha256,omitempty"`
	StorageKey    string     `bun:"storage_key" json:"-"`
	RetentionDays int        `bun:"retention_days" json:"retention_days"`
	OperationID   *string    `bun:"operation_id" json:"operation_id"`
	ScheduleID    *string    `bun:"schedule_id" json:"schedule_id,omitempty"`
	Error         string     `bun:"error" json:"error,omitempty"`
	ExpiresAt     *time.Time `bun:"expires_at" json:"expires_at,omitempty"`
	CreatedAt     time.Time  `bun:"created_at" json:"created_at"`
	CompletedAt   *time.Time `bun:"completed_at" json:"completed_at,omitempty"`
	RestoredAt    *time.Time `bun:"restored_at" json:"restored_at,omitempty"`
	DeletedAt     *time.Time `bun:"deleted_at" json:"deleted_at,omitempty"`
}

// Operation statuses. Status only moves forward: pending → running → one of the
// terminal states, and pending may go straight to cancelled or failed.
const (
	OpPending   = "pending"
	OpRunning   = "running"
	OpSucceeded = "succeeded"
	OpFailed    = "failed"
	OpCancelled = "cancelled"
)

// Operation types: the mutation an operation carries out.
const (
	OpTypeSiteProvision   = "site.provision"
	OpTypeSiteDeprovision = "site.deprovision"
	OpTypeVPSHealthCheck  = "vps.health_check"
	// OpTypeDomainVerify checks a site's unproven domains (domains.go).
	OpTypeDomainVerify = "domain.verify"
	// OpTypeCertificateIssue issues (ACME) or installs (upload) a site's
	// certificate and deploys it to the site's server (certificates.go).
	OpTypeCertificateIssue = "certificate.issue"
)

// Target types name what an operation acts on.
const (
	TargetSite = "site"
	TargetVPS  = "vps"
)

// Operation is the record of one accepted mutation, polled by API callers.
type Operation struct {
	bun.BaseModel `bun:"table:operations"`

	ID                string     `bun:"id,pk"`
	TenantID          string     `bun:"tenant_id"`
	Type              string     `bun:"op_type"`
	Status            string     `bun:"status"`
	Progress          int        `bun:"progress"`
	TargetType        string     `bun:"target_type"`
	TargetID          string     `bun:"target_id"`
	Payload           string     `bun:"payload"`
	Result            *string    `bun:"result"`
	ErrorCode         *string    `bun:"error_code"`
	ErrorMessage      *string    `bun:"error_message"`
	RequestID         string     `bun:"request_id"`
	Attempts          int        `bun:"attempts"`
	CreatedAt         time.Time  `bun:"created_at"`
	UpdatedAt         time.Time  `bun:"updated_at"`
	StartedAt         *time.Time `bun:"started_at"`
	FinishedAt        *time.Time `bun:"finished_at"`
	CancelRequestedAt *time.Time `bun:"cancel_requested_at"`
	// ServerTouchedAt is when a driver call of the job may first have reached
	// its server; nil while every call was refused before it ran (an open
	// breaker, a full limit), so a cancel has nothing to undo there.
	ServerTouchedAt *time.Time `bun:"server_touched_at"`
}

// Terminal reports whether the operation has reached a final status.
func (o *Operation) Terminal() bool { return IsTerminal(o.Status) }

// IsTerminal reports whether status is final.
func IsTerminal(status string) bool {
	return status == OpSucceeded || status == OpFailed || status == OpCancelled
}

// IdempotencyKey remembers which operation a tenant's Idempotency-Key produced.
type IdempotencyKey struct {
	bun.BaseModel `bun:"table:idempotency_keys"`

	TenantID    string    `bun:"tenant_id,pk"`
	Key         string    `bun:"idem_key,pk"`
	RequestHash string    `bun:"request_hash"`
	OperationID string    `bun:"operation_id"`
	CreatedAt   time.Time `bun:"created_at"`
	ExpiresAt   time.Time `bun:"expires_at"`
}

// OutboxEvent is an event waiting to be published to Kafka by the relay.
type OutboxEvent struct {
	bun.BaseModel `bun:"table:outbox_events"`

	ID          int64      `bun:"id,pk,autoincrement"`
	EventID     string     `bun:"event_id"`
	TenantID    string     `bun:"tenant_id"`
	Topic       string     `bun:"topic"`
	Type        string     `bun:"event_type"`
	Source      string     `bun:"source"`
	Subject     string     `bun:"subject"`
	Data        string     `bun:"data"`
	OccurredAt  time.Time  `bun:"occurred_at"`
	CreatedAt   time.Time  `bun:"created_at"`
	PublishedAt *time.Time `bun:"published_at"`
}

// UsageRecord is one metered quantity of a tenant for one period: the tenant's
// total of the metric (SiteID empty) or one site's share of it.
type UsageRecord struct {
	bun.BaseModel `bun:"table:usage_records"`

	ID          string    `bun:"id,pk" json:"id"`
	TenantID    string    `bun:"tenant_id" json:"-"`
	Metric      string    `bun:"metric" json:"metric"`
	SiteID      string    `bun:"site_id" json:"site_id,omitempty"`
	Quantity    int64     `bun:"quantity" json:"quantity"`
	Unit        string    `bun:"unit" json:"unit"`
	PeriodStart time.Time `bun:"period_start" json:"period_start"`
	PeriodEnd   time.Time `bun:"period_end" json:"period_end"`
	CreatedAt   time.Time `bun:"created_at" json:"created_at"`
	UpdatedAt   time.Time `bun:"updated_at" json:"updated_at"`
}

// AuditLog records who asked for a mutation, for the tenant's audit trail.
type AuditLog struct {
	bun.BaseModel `bun:"table:audit_logs"`

	ID          int64     `bun:"id,pk,autoincrement"`
	TenantID    string    `bun:"tenant_id"`
	Actor       string    `bun:"actor"`
	Action      string    `bun:"action"`
	TargetType  string    `bun:"target_type"`
	TargetID    string    `bun:"target_id"`
	OperationID *string   `bun:"operation_id"`
	RequestID   string    `bun:"request_id"`
	CreatedAt   time.Time `bun:"created_at"`
}
