package stack

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/certs/seal"
	"github.com/chomhq/chom/drivers/breaker"
	"github.com/chomhq/chom/drivers/ssh"
	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/events/billing"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/workers"
	"github.com/chomhq/chom/workers/limits"
)

// Role is a set of CHOM processes; a setting names the roles that read it, so
// each command's --help lists only what it reads.
type Role uint8

// The processes of CHOM. RoleAdmin is the one-shot commands (migrate, token).
const (
	RoleIngress Role = 1 << iota
	RoleWorker
	RoleScheduler
	RoleRelay
	RoleBilling
	RoleAdmin

	// RoleDev is `chom dev`: the ingress, a worker, the scheduler and the relay
	// in one process.
	RoleDev = RoleIngress | RoleWorker | RoleScheduler | RoleRelay
	// roleServers is every long-running process.
	roleServers = RoleDev | RoleBilling
	roleAll     = roleServers | RoleAdmin
)

// Setting is one CHOM_* environment variable: its name, its default as an
// operator would write it, chom dev's default where that differs, the roles
// that read it and what it means.
type Setting struct {
	// Env is the variable's name.
	Env string
	// Default is the value used when the variable is unset or empty, in the
	// variable's own syntax; "" means none.
	Default string
	// DefaultNote describes a default that is not a plain value (derived from
	// another setting, or per process); shown instead of Default in docs.
	DefaultNote string
	// Dev is chom dev's default when it differs from Default; "<data-dir>"
	// stands for the dev data directory. DevEmbedded and DevGenerated leave
	// the setting empty for chom dev to fill.
	Dev string
	// Roles are the processes that read it.
	Roles Role
	// Doc says what the setting does, in one or two sentences of Markdown.
	Doc string
	// Secret marks a credential, or a URL that may carry one: errors show its
	// value redacted (a URL's password and secret parameters, anything else
	// whole).
	Secret bool

	set func(c *Config, v string) error
}

// Special values of Setting.Dev: the setting stays empty in LoadDevConfig
// and chom dev fills it.
const (
	// DevEmbedded: chom dev runs the part in its own process (SQLite, Redis,
	// a Kafka-protocol broker, the development CA).
	DevEmbedded = "embedded"
	// DevGenerated: chom dev makes the value once and keeps it in the data
	// directory (the certificate encryption key).
	DevGenerated = "generated"
)

// Config is every CHOM_* setting, parsed. Settings lists each field's
// variable, default and meaning.
type Config struct {
	DatabaseURL      string
	DatabaseReadURL  string
	RedisURL         string
	Listen           string
	PublicURL        string
	LogLevel         slog.Level
	LogFormat        string
	DBMaxConns       int
	Concurrency      int
	Driver           string
	LocalRoot        string
	TokenCacheTTL    time.Duration
	TokenDefaultTTL  time.Duration
	Quotas           models.Limits // CHOM_QUOTA_*: the default per-tenant limits, 0 = unlimited
	ReconcileEvery   time.Duration
	ReconcileGrace   time.Duration
	MeteringEvery    time.Duration
	ShutdownTimeout  time.Duration
	RetryBase        time.Duration
	RetryMax         time.Duration
	OpsUI            bool
	PrometheusURL    string
	AutoMigrate      bool
	AcceptBatch      int
	RedisPoolSize    int
	OpCacheTTL       time.Duration
	RateLimit        float64
	RateBurst        int
	AuthFailRate     float64
	AuthFailBurst    int
	AcceptCommitters int
	MetricsListen    string

	KafkaBrokers        []string
	KafkaTopicPrefix    string
	KafkaPartitions     int
	KafkaReplication    int
	KafkaMinInSync      int // 0: events.DefaultMinInSyncReplicas(KafkaReplication)
	KafkaSecurity       events.KafkaSecurity
	RelayBatch          int
	RelayPollInterval   time.Duration
	RelayBreakerTimeout time.Duration
	OutboxRetention     time.Duration
	BillingGroup        string

	// Issue 13, part C: domain verification.
	DomainVerification  string        // CHOM_DOMAIN_VERIFICATION: models.VerificationStrict or Contested
	DomainVerifyTimeout time.Duration // CHOM_DOMAIN_VERIFY_TIMEOUT
	DNSResolver         string        // CHOM_DNS_RESOLVER: host:port, "" = the system's

	HealthInterval        time.Duration
	HealthHysteresis      int
	HealthCheckTimeout    time.Duration
	HealthRetention       time.Duration
	HealthThresholds      jobs.HealthThresholds
	LocalHealthURL        string
	HealthProbe           string
	SSHKeyFile            string
	SSHUser               string
	SSHHostKeyPolicy      string
	SSHMaxConns           int
	HealthHTTPPort        int
	HealthBreakerFailures int
	HealthBreakerOpen     time.Duration

	BackupStore                                                        string
	BackupDir                                                          string
	S3Endpoint, S3Bucket, S3AccessKey, S3SecretKey, S3Region, S3Prefix string
	S3TLS                                                              bool
	BackupSigningKey                                                   string
	BackupLinkTTL                                                      time.Duration
	BackupRetention                                                    int
	BackupPruneEvery                                                   time.Duration
	BackupScheduleEvery                                                time.Duration
	LayoutMigrateEvery                                                 time.Duration

	VPSMaxJobs    int
	TenantMaxJobs int
	JobSlotLease  time.Duration
	JobDeferDelay time.Duration

	ACME ACMESettings // CHOM_ACME_*, CHOM_CERT_*: issue 13, part A

	Renewal RenewalSettings // CHOM_CERT_RENEW_*, CHOM_CERT_ARI_*: issue 13, the renewal sweep

	// Issue 14, retention: finished operations and audit rows (0 keeps them).
	OperationRetention  time.Duration
	AuditRetention      time.Duration
	OperationPruneEvery time.Duration
}

// Settings is the table of every CHOM_* variable, in the order the docs list
// them. It is the only place a CHOM_* default is set: where a component has
// a zero-value default of its own (workers.DefaultConcurrency, ...), the
// table takes it from there rather than writing the value again.
func Settings() []Setting {
	return []Setting{
		{Env: "CHOM_DATABASE_URL", Secret: true, Dev: "sqlite://<data-dir>/chom.db", Roles: roleAll &^ RoleScheduler, set: text(func(c *Config) *string { return &c.DatabaseURL }),
			Doc: "`postgres://user:pass@host:5432/db?sslmode=…` (a primary with standbys: every host, `postgres://…@h1:5432,h2:5432/db?target_session_attrs=read-write`, so connections follow a promotion) or `sqlite:///path/file.db`; required by every process but `scheduler`. CHOM sends its statements over PostgreSQL's simple protocol and keeps three hot ones prepared on generic plans (performance.md, Round three); the URL's `default_query_exec_mode` (pgx) or `plan_cache_mode` (PostgreSQL) overrides either choice"},
		{Env: "CHOM_DATABASE_READ_URL", Secret: true, Roles: RoleIngress, set: text(func(c *Config) *string { return &c.DatabaseReadURL }),
			Doc: "`postgres://…` of a streaming replica of `CHOM_DATABASE_URL` (hot standby), for operation polls and listings of operations and sites; a read goes there only when the replica has replayed every commit the primary had made when the read arrived, else to the primary (operations.md, Scaling out); unset: every read goes to `CHOM_DATABASE_URL`"},
		{Env: "CHOM_REDIS_URL", Secret: true, Dev: "embedded", Roles: RoleDev, set: text(func(c *Config) *string { return &c.RedisURL }),
			Doc: "`redis://[:pass@]host:6379/0`, `rediss://…`, or under Sentinel `redis-sentinel://[:pass@]host1:26379,host2:26379,host3:26379/0?master=NAME[&sentinel_password=…]` (the user information is the master's password, `sentinel_password` the sentinels' own; see docs/operations.md, Redis under Sentinel), or a Redis Cluster `redis-cluster://[user]:pass@host1:6379,host2:6379,host3:6379` (seed nodes, database 0 only; see docs/operations.md, Redis Cluster); required by `ingress`, `worker` and `scheduler`"},
		{Env: "CHOM_LISTEN", Default: ":8080", Dev: "127.0.0.1:8080", Roles: RoleIngress, set: text(func(c *Config) *string { return &c.Listen }),
			Doc: "HTTP listen address of the API (`chom dev`: its `--listen` flag)"},
		{Env: "CHOM_PUBLIC_URL", Secret: true, Roles: RoleIngress, set: text(func(c *Config) *string { return &c.PublicURL }),
			Doc: "the API's external base URL (`https://api.example.com`), used for the absolute links it returns (backup downloads); unset, links use the request's own scheme and `Host`, so set it behind a proxy or load balancer"},
		{Env: "CHOM_LOG_LEVEL", Default: "info", Roles: roleServers, set: logLevel,
			Doc: "`debug` logs every request; `info` logs server errors and job outcomes; `warn`, `error`"},
		{Env: "CHOM_LOG_FORMAT", Default: "json", Dev: "text", Roles: roleServers, set: oneOf(func(c *Config) *string { return &c.LogFormat }, "json", "text"),
			Doc: "`json` or `text` (slog); request lines carry `request_id` and `tenant_id`, every line logged while a task runs carries `task_id`, `operation_id` and `tenant_id`"},
		{Env: "CHOM_DB_MAX_CONNS", Default: "40", Roles: roleServers, set: positive(func(c *Config) *int { return &c.DBMaxConns }),
			Doc: "database pool size per process (the relay and the billing consumer use at most 4)"},
		{Env: "CHOM_AUTO_MIGRATE", Default: "false", Dev: "true", Roles: roleServers, set: boolean(func(c *Config) *bool { return &c.AutoMigrate }),
			Doc: "apply the schema migrations at start-up (`chom migrate up` does it explicitly)"},
		{Env: "CHOM_WORKER_CONCURRENCY", Default: itoa(workers.DefaultConcurrency), Roles: RoleWorker, set: positive(func(c *Config) *int { return &c.Concurrency }),
			Doc: "tasks a worker process runs at once"},
		{Env: "CHOM_DRIVER", Default: "local", Roles: RoleWorker, set: oneOf(func(c *Config) *string { return &c.Driver }, "local", "ssh"),
			Doc: "how workers reach servers: `local` writes under `CHOM_LOCAL_ROOT`; `ssh` provisions, backs up and meters real servers over SSH (`CHOM_SSH_KEY_FILE`, `CHOM_SSH_USER`)"},
		{Env: "CHOM_LOCAL_ROOT", Dev: "<data-dir>/vps", Roles: RoleWorker, set: text(func(c *Config) *string { return &c.LocalRoot }),
			Doc: "root directory of the local driver, one sub-directory per server; required by `worker` with `CHOM_DRIVER=local`"},
		{Env: "CHOM_RETRY_BASE", Default: durText(workers.DefaultRetryBase), Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.RetryBase }),
			Doc: "first step of the exponential backoff (full jitter) between task attempts"},
		{Env: "CHOM_RETRY_MAX", Default: durText(workers.DefaultRetryMax), Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.RetryMax }),
			Doc: "longest wait between task attempts"},
		{Env: "CHOM_SHUTDOWN_TIMEOUT", Default: durText(workers.DefaultShutdownTimeout), Roles: roleServers, set: duration(func(c *Config) *time.Duration { return &c.ShutdownTimeout }),
			Doc: "on SIGTERM, how long running tasks and HTTP requests get to finish; unfinished tasks return to the queue"},
		{Env: "CHOM_RECONCILE_INTERVAL", Default: "30s", Roles: RoleScheduler, set: duration(func(c *Config) *time.Duration { return &c.ReconcileEvery }),
			Doc: "how often the scheduler enqueues the operation reconciler"},
		{Env: "CHOM_RECONCILE_GRACE", Default: durText(jobs.DefaultReconcileGrace), Roles: RoleWorker | RoleIngress, set: duration(func(c *Config) *time.Duration { return &c.ReconcileGrace }),
			Doc: "an unfinished operation younger than this is left to the ingress's own enqueue, which the ingress retries that long in the background when Redis does not answer (a Sentinel or Cluster failover); `0`: none, straight to the reconciler"},
		{Env: "CHOM_OPERATION_RETENTION", Default: durText(jobs.DefaultOperationRetention), Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.OperationRetention }),
			Doc: "a finished operation is deleted this long after it finished (a poll of it is then 404; see operations.md, Retention); at least `48h`, longer than an idempotency key lives (24h), so a retried request always finds its operation; an operation a site, a backup, a live idempotency key or a certificate upload still names is kept; `0` keeps them all"},
		{Env: "CHOM_AUDIT_RETENTION", Default: durText(jobs.DefaultAuditRetention), Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.AuditRetention }),
			Doc: "audit rows older than this are deleted; at least `CHOM_OPERATION_RETENTION`, as the audit trail outlives the operations it names; `0` keeps them all"},
		{Env: "CHOM_OPERATION_PRUNE_INTERVAL", Default: "1h", Roles: RoleScheduler, set: duration(func(c *Config) *time.Duration { return &c.OperationPruneEvery }),
			Doc: "how often the scheduler enqueues `operations:prune` (batches of 5,000 rows, 50 ms apart, at most 10 minutes a run); at least `1m`"},
		{Env: "CHOM_METERING_INTERVAL", Default: "1h", Dev: "1m", Roles: RoleScheduler, set: duration(func(c *Config) *time.Duration { return &c.MeteringEvery }),
			Doc: "the usage period: the scheduler's `metering` tick at period start P meters [P − interval, P); at least `1m`; changing it changes period boundaries (a period already recorded stays as it is). `chom dev` meters every minute so `/usage` fills within two"},
		{Env: "CHOM_HEALTH_INTERVAL", Default: "60s", Roles: RoleScheduler | RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.HealthInterval }),
			Doc: "how often the scheduler sweeps the servers' health (one `vps:health_check` per active server); at least `1s`"},
		{Env: "CHOM_HEALTH_HYSTERESIS", Default: itoa(jobs.DefaultHysteresis), Roles: RoleWorker, set: positive(func(c *Config) *int { return &c.HealthHysteresis }),
			Doc: "consecutive agreeing checks before a server's health status changes (a never-checked server takes its first result at once)"},
		{Env: "CHOM_HEALTH_CHECK_TIMEOUT", Default: durText(jobs.DefaultCheckTimeout), Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.HealthCheckTimeout }),
			Doc: "bound of one probe; slower is an unreachable result; shorter than the interval"},
		{Env: "CHOM_HEALTH_RETENTION", Default: durText(jobs.DefaultHealthRetention), Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.HealthRetention }),
			Doc: "health checks older than this are pruned by each sweep (`0` keeps them: 10,000 servers at 60s write 14.4 M rows a day)"},
		{Env: "CHOM_HEALTH_LOAD_PER_CPU_DEGRADED", Default: ftoa(jobs.DefaultHealthThresholds().LoadPerCPUDegraded), Roles: RoleWorker, set: number(func(c *Config) *float64 { return &c.HealthThresholds.LoadPerCPUDegraded }),
			Doc: "1-minute load average per CPU at which a check is degraded"},
		{Env: "CHOM_HEALTH_LOAD_PER_CPU_UNHEALTHY", Default: ftoa(jobs.DefaultHealthThresholds().LoadPerCPUUnhealthy), Roles: RoleWorker, set: number(func(c *Config) *float64 { return &c.HealthThresholds.LoadPerCPUUnhealthy }),
			Doc: "… and unhealthy"},
		{Env: "CHOM_HEALTH_MEM_PERCENT_DEGRADED", Default: ftoa(jobs.DefaultHealthThresholds().MemPercentDegraded), Roles: RoleWorker, set: number(func(c *Config) *float64 { return &c.HealthThresholds.MemPercentDegraded }),
			Doc: "memory used, (MemTotal − MemAvailable) / MemTotal in %, at which a check is degraded"},
		{Env: "CHOM_HEALTH_MEM_PERCENT_UNHEALTHY", Default: ftoa(jobs.DefaultHealthThresholds().MemPercentUnhealthy), Roles: RoleWorker, set: number(func(c *Config) *float64 { return &c.HealthThresholds.MemPercentUnhealthy }),
			Doc: "… and unhealthy"},
		{Env: "CHOM_HEALTH_DISK_PERCENT_DEGRADED", Default: ftoa(jobs.DefaultHealthThresholds().DiskPercentDegraded), Roles: RoleWorker, set: number(func(c *Config) *float64 { return &c.HealthThresholds.DiskPercentDegraded }),
			Doc: "disk used on the filesystem holding the sites, in %, at which a check is degraded"},
		{Env: "CHOM_HEALTH_DISK_PERCENT_UNHEALTHY", Default: ftoa(jobs.DefaultHealthThresholds().DiskPercentUnhealthy), Roles: RoleWorker, set: number(func(c *Config) *float64 { return &c.HealthThresholds.DiskPercentUnhealthy }),
			Doc: "… and unhealthy"},
		{Env: "CHOM_HEALTH_PROBE", DefaultNote: "`CHOM_DRIVER`", Roles: RoleWorker, set: oneOf(func(c *Config) *string { return &c.HealthProbe }, "local", "ssh"),
			Doc: "how health checks reach servers: `local` (the local driver's directories) or `ssh` (each server's `ip_address:ssh_port`)"},
		{Env: "CHOM_SSH_KEY_FILE", Roles: RoleWorker, set: text(func(c *Config) *string { return &c.SSHKeyFile }),
			Doc: "private key (unencrypted OpenSSH or PEM; read once, never logged) of the SSH driver and probe; required with `ssh`"},
		{Env: "CHOM_SSH_USER", Default: "root", Roles: RoleWorker, set: text(func(c *Config) *string { return &c.SSHUser }),
			Doc: "user the SSH driver and probe log in as"},
		{Env: "CHOM_SSH_HOST_KEY_POLICY", Default: "strict", Roles: RoleWorker, set: oneOf(func(c *Config) *string { return &c.SSHHostKeyPolicy }, "strict", "tofu"),
			Doc: "`strict`: the SSH driver and probe refuse a server whose host key is not pinned (`host_key` or `host_key_sha256` at `POST /vps`, or `PUT /vps/{id}/host-key`), before dialling; `tofu`: trust on first use, pinning the key a server presents first (a man in the middle of that first connection would be trusted)"},
		{Env: "CHOM_SSH_MAX_CONNS", Default: itoa(ssh.DefaultMaxConns), Roles: RoleWorker, set: positive(func(c *Config) *int { return &c.SSHMaxConns }),
			Doc: "SSH connections the health probe keeps open per worker process, one per server, the least recently used closed beyond it; a sweep reuses them only when it is at least the number of servers (each worker may check every server); each costs memory in the worker (measured in docs/performance.md, the health sweep end to end)"},
		{Env: "CHOM_HEALTH_HTTP_PORT", Default: "80", Roles: RoleWorker, set: positive(func(c *Config) *int { return &c.HealthHTTPPort }),
			Doc: "port of the SSH probe's `GET http://<ip_address>:<port>/` of each server's nginx"},
		{Env: "CHOM_HEALTH_BREAKER_FAILURES", Default: itoa(breaker.DefaultFailures), Roles: RoleWorker, set: positive(func(c *Config) *int { return &c.HealthBreakerFailures }),
			Doc: "consecutive unreachable calls that open a server's circuit breaker (shared by the probe and every job's driver call)"},
		{Env: "CHOM_HEALTH_BREAKER_OPEN", Default: durText(breaker.DefaultOpenTimeout), Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.HealthBreakerOpen }),
			Doc: "how long an open breaker stays open before one call may try again; tasks meeting it wait, they are not failed"},
		{Env: "CHOM_VPS_MAX_JOBS", Default: itoa(limits.DefaultVPSMax), Roles: RoleWorker, set: positive(func(c *Config) *int { return &c.VPSMaxJobs }),
			Doc: "most jobs working on one server at once, across every worker process (Redis semaphores); a task over the limit is deferred, not failed"},
		{Env: "CHOM_TENANT_MAX_JOBS", Default: itoa(limits.DefaultTenantMax), Roles: RoleWorker, set: positive(func(c *Config) *int { return &c.TenantMaxJobs }),
			Doc: "most jobs working for one tenant at once, fleet-wide"},
		{Env: "CHOM_JOB_SLOT_LEASE", Default: durText(limits.DefaultLease), Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.JobSlotLease }),
			Doc: "lease of a held concurrency slot, renewed every third of it; a killed worker's slot frees itself after at most this; at least `1s`"},
		{Env: "CHOM_JOB_DEFER_DELAY", Default: durText(workers.DefaultDeferDelay), Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.JobDeferDelay }),
			Doc: "about how long a task deferred by an open breaker or a full limit waits before it runs again (drawn from [½, 1½] of it); costs no retry"},
		{Env: "CHOM_BACKUP_STORE", Default: "fs", Roles: RoleIngress | RoleWorker, set: oneOf(func(c *Config) *string { return &c.BackupStore }, "fs", "s3"),
			Doc: "where backup archives live: `fs`, a directory (`CHOM_BACKUP_DIR`), or `s3`, an S3-compatible bucket (`CHOM_S3_*`)"},
		{Env: "CHOM_BACKUP_DIR", DefaultNote: "`<CHOM_LOCAL_ROOT>/backups`", Dev: "<data-dir>/backups", Roles: RoleIngress | RoleWorker, set: text(func(c *Config) *string { return &c.BackupDir }),
			Doc: "directory of the filesystem backup store; every worker and the ingress that serves downloads must see the same one (unset on `ingress`: links are signed but the archive route answers 503)"},
		{Env: "CHOM_S3_ENDPOINT", Roles: RoleIngress | RoleWorker, set: text(func(c *Config) *string { return &c.S3Endpoint }),
			Doc: "`host:port` of the bucket of `CHOM_BACKUP_STORE=s3`; with the bucket and both keys, required with `s3`"},
		{Env: "CHOM_S3_BUCKET", Roles: RoleIngress | RoleWorker, set: text(func(c *Config) *string { return &c.S3Bucket }),
			Doc: "the bucket (it must exist)"},
		{Env: "CHOM_S3_ACCESS_KEY", Roles: RoleIngress | RoleWorker, set: text(func(c *Config) *string { return &c.S3AccessKey }),
			Doc: "access key (never reaches logs or errors)"},
		{Env: "CHOM_S3_SECRET_KEY", Secret: true, Roles: RoleIngress | RoleWorker, set: text(func(c *Config) *string { return &c.S3SecretKey }),
			Doc: "secret key (never reaches logs or errors)"},
		{Env: "CHOM_S3_REGION", Roles: RoleIngress | RoleWorker, set: text(func(c *Config) *string { return &c.S3Region }),
			Doc: "the bucket's region"},
		{Env: "CHOM_S3_PREFIX", Roles: RoleIngress | RoleWorker, set: text(func(c *Config) *string { return &c.S3Prefix }),
			Doc: "a key prefix (empty or ending in `/`)"},
		{Env: "CHOM_S3_TLS", Default: "true", Roles: RoleIngress | RoleWorker, set: boolean(func(c *Config) *bool { return &c.S3TLS }),
			Doc: "HTTPS to the endpoint"},
		{Env: "CHOM_BACKUP_SIGNING_KEY", Secret: true, DefaultNote: "random per process", Roles: RoleIngress, set: text(func(c *Config) *string { return &c.BackupSigningKey }),
			Doc: "HMAC-SHA256 key of backup download links, at least 32 characters (`openssl rand -hex 32`); unset, each process signs with its own random key, so behind several ingress replicas set it"},
		{Env: "CHOM_BACKUP_LINK_TTL", Default: "5m", Roles: RoleIngress, set: duration(func(c *Config) *time.Duration { return &c.BackupLinkTTL }),
			Doc: "how long a download link works (1s–24h)"},
		{Env: "CHOM_BACKUP_DEFAULT_RETENTION", Default: "30", Roles: RoleIngress, set: positive(func(c *Config) *int { return &c.BackupRetention }),
			Doc: "days a backup is kept when `POST /sites/{id}/backups` omits `retention_days` (1–3650)"},
		{Env: "CHOM_BACKUP_PRUNE_INTERVAL", Default: "1h", Roles: RoleScheduler, set: duration(func(c *Config) *time.Duration { return &c.BackupPruneEvery }),
			Doc: "how often the scheduler enqueues `backup:prune`; at least `1m`"},
		{Env: "CHOM_BACKUP_SCHEDULE_INTERVAL", Default: "15m", Roles: RoleScheduler, set: duration(func(c *Config) *time.Duration { return &c.BackupScheduleEvery }),
			Doc: "how often the scheduler books due scheduled backups (`backup:schedules`); a scheduled backup starts within this of its due time; at least `1m`"},
		{Env: "CHOM_LAYOUT_MIGRATE_INTERVAL", Default: "24h", Roles: RoleScheduler, set: duration(func(c *Config) *time.Duration { return &c.LayoutMigrateEvery }),
			Doc: "how often the scheduler enqueues `site:migrate_layout_sweep`, which brings every active site's server-side layout to the current one (idempotent: a converged site costs one check); after an upgrade, sites converge within this; at least `1m`"},
		{Env: "CHOM_LOCAL_HEALTH_URL", Roles: RoleWorker, set: text(func(c *Config) *string { return &c.LocalHealthURL }),
			Doc: "URL the local driver's health check GETs for every server (`{id}` becomes the server's ID); unset, HTTP is skipped and not held against the server"},
		{Env: "CHOM_TOKEN_CACHE_TTL", Default: durText(ingress.DefaultTokenCacheTTL), Roles: RoleIngress, set: signedDuration(func(c *Config) *time.Duration { return &c.TokenCacheTTL }),
			Doc: "how long the ingress reuses a successful token lookup (a revoked token works for at most this long; negative disables)"},
		{Env: "CHOM_TOKEN_DEFAULT_TTL", Default: "2160h", Roles: RoleIngress | RoleAdmin, set: duration(func(c *Config) *time.Duration { return &c.TokenDefaultTTL }),
			Doc: "lifetime of a new API token when its creator names none (`chom token create` without `--expires`, `POST /api/v1/tenants/{tenant}/tokens` without `ttl_seconds`); `2160h` is 90 days; `0` = never expires"},
		{Env: "CHOM_QUOTA_MAX_SITES", Default: "0", Roles: RoleIngress, set: limit(func(c *Config) *int64 { return &c.Quotas.MaxSites }),
			Doc: "live sites a tenant may have, unless an admin set its own (`PUT /api/v1/tenants/{tenant}/quota`); beyond it `POST /sites` is 403 `quota-exceeded`; `0` = unlimited"},
		{Env: "CHOM_QUOTA_MAX_BACKUPS", Default: "0", Roles: RoleIngress, set: limit(func(c *Config) *int64 { return &c.Quotas.MaxBackups }),
			Doc: "backups (pending, running or completed) a tenant may have, unless set per tenant; `0` = unlimited"},
		{Env: "CHOM_QUOTA_MAX_BACKUP_BYTES", Default: "0", Roles: RoleIngress, set: limit(func(c *Config) *int64 { return &c.Quotas.MaxBackupBytes }),
			Doc: "bytes of completed backups a tenant may keep, unless set per tenant; a new backup is refused once they reach it; `0` = unlimited"},
		{Env: "CHOM_OPERATION_CACHE_TTL", Default: durText(ingress.DefaultOperationCacheTTL), Roles: RoleIngress, set: duration(func(c *Config) *time.Duration { return &c.OpCacheTTL }),
			Doc: "how long the ingress reuses an unfinished operation read by a poller when no worker announced a change (finished ones are cached 10 min; `0` disables)"},
		{Env: "CHOM_RATE_LIMIT", Default: "100", Roles: RoleIngress, set: number(func(c *Config) *float64 { return &c.RateLimit }),
			Doc: "requests per second allowed to one API token in one ingress process, then 429 with `Retry-After`; `0` disables"},
		{Env: "CHOM_RATE_BURST", Default: "200", Roles: RoleIngress, set: positive(func(c *Config) *int { return &c.RateBurst }),
			Doc: "burst of that limit"},
		{Env: "CHOM_AUTH_FAIL_RATE", Default: "10", Roles: RoleIngress, set: number(func(c *Config) *float64 { return &c.AuthFailRate }),
			Doc: "failed authentications per second allowed to one client address (the TCP peer's IP, IPv6 by /64; never `X-Forwarded-For`) in one ingress process; beyond its burst, requests whose token is not cached get 429 with `Retry-After` before any database lookup; `0` disables"},
		{Env: "CHOM_AUTH_FAIL_BURST", Default: "50", Roles: RoleIngress, set: positive(func(c *Config) *int { return &c.AuthFailBurst }),
			Doc: "burst of that limit"},
		{Env: "CHOM_OPS_UI", Default: "true", Roles: RoleIngress, set: boolean(func(c *Config) *bool { return &c.OpsUI }),
			Doc: "serve asynqmon at `/ops/queues` (an `ops` or `admin` token required)"},
		{Env: "CHOM_PROMETHEUS_URL", Roles: RoleIngress, set: text(func(c *Config) *string { return &c.PrometheusURL }),
			Doc: "Prometheus address (`http://prometheus:9090`) for asynqmon's Metrics page; unset, the page has no data"},
		{Env: "CHOM_METRICS_LISTEN", DefaultNote: "`worker` `127.0.0.1:9464`, `scheduler` `:9465`, `relay` `:9466`, `billing-consumer` `:9467` (loopback)",
			Roles: RoleWorker | RoleScheduler | RoleRelay | RoleBilling, set: text(func(c *Config) *string { return &c.MetricsListen }),
			Doc: "where those processes serve Prometheus `/metrics` (no auth); `off` disables it. `ingress` and `dev` serve `/metrics` on their API listener"},
		{Env: "CHOM_ACCEPT_MAX_BATCH", Default: itoa(models.DefaultAcceptBatch), Roles: RoleIngress, set: positive(func(c *Config) *int { return &c.AcceptBatch }),
			Doc: "most `POST /sites` requests group-committed in one transaction"},
		{Env: "CHOM_ACCEPT_COMMITTERS", Default: itoa(models.DefaultCommitters), Roles: RoleIngress, set: positive(func(c *Config) *int { return &c.AcceptCommitters }),
			Doc: "batch transactions in flight at once (more made batches smaller and PostgreSQL busier on 2 cores)"},
		{Env: "CHOM_REDIS_POOL_SIZE", Default: "128", Roles: RoleIngress | RoleWorker, set: positive(func(c *Config) *int { return &c.RedisPoolSize }),
			Doc: "Redis connections per process (a committed batch is enqueued at once)"},
		{Env: "CHOM_KAFKA_BROKERS", Dev: "embedded", Roles: RoleRelay | RoleBilling, set: func(c *Config, v string) error { c.KafkaBrokers = list(v); return nil },
			Doc: "comma-separated bootstrap brokers (`host:9092,…`); required by `relay` and `billing-consumer` (`chom dev`: an in-process broker on `--kafka-listen`)"},
		{Env: "CHOM_KAFKA_TOPIC_PREFIX", Default: events.DefaultTopicPrefix, Roles: RoleRelay | RoleBilling, set: topicPrefix,
			Doc: "topics are `<prefix>.<topic>` (`chom.sites.v1`); `-` for no prefix"},
		{Env: "CHOM_KAFKA_PARTITIONS", Default: itoa(events.DefaultPartitions), Roles: RoleRelay | RoleBilling, set: positive(func(c *Config) *int { return &c.KafkaPartitions }),
			Doc: "partitions of a topic the relay or the consumer creates; never change it on an existing topic (a tenant's key would move)"},
		{Env: "CHOM_KAFKA_REPLICATION", Default: itoa(events.DefaultReplicationFactor), Dev: "1", Roles: RoleRelay | RoleBilling, set: positive(func(c *Config) *int { return &c.KafkaReplication }),
			Doc: "replication factor of a topic they create"},
		{Env: "CHOM_KAFKA_MIN_INSYNC_REPLICAS", DefaultNote: "2 when `CHOM_KAFKA_REPLICATION` ≥ 3, else 1", Roles: RoleRelay | RoleBilling,
			set: optional(positive(func(c *Config) *int { return &c.KafkaMinInSync })),
			Doc: "`min.insync.replicas` of a topic they create: replicas that must hold an event before the relay's write (acks=all) succeeds; at most `CHOM_KAFKA_REPLICATION`. Topics that already exist keep theirs (see docs/operations.md, Kafka)"},
		{Env: "CHOM_KAFKA_TLS", Default: "false", Roles: RoleRelay | RoleBilling, set: boolean(func(c *Config) *bool { return &c.KafkaSecurity.TLS }),
			Doc: "connect to the brokers over TLS (the broker's certificate must name the host the bootstrap list or the broker's metadata gives); see docs/events.md, Broker security"},
		{Env: "CHOM_KAFKA_TLS_CA_FILE", DefaultNote: "the system roots", Roles: RoleRelay | RoleBilling, set: text(func(c *Config) *string { return &c.KafkaSecurity.CAFile }),
			Doc: "PEM file of the certificate authorities that sign the brokers' certificates; needs `CHOM_KAFKA_TLS=true`"},
		{Env: "CHOM_KAFKA_TLS_CERT_FILE", Roles: RoleRelay | RoleBilling, set: text(func(c *Config) *string { return &c.KafkaSecurity.CertFile }),
			Doc: "PEM client certificate, for brokers that authenticate clients by certificate (with `CHOM_KAFKA_TLS_KEY_FILE`)"},
		{Env: "CHOM_KAFKA_TLS_KEY_FILE", Roles: RoleRelay | RoleBilling, set: text(func(c *Config) *string { return &c.KafkaSecurity.KeyFile }),
			Doc: "PEM private key of `CHOM_KAFKA_TLS_CERT_FILE`"},
		{Env: "CHOM_KAFKA_SASL_MECHANISM", Roles: RoleRelay | RoleBilling, set: text(func(c *Config) *string { return &c.KafkaSecurity.SASLMechanism }),
			Doc: "`scram-sha-512`, `plain` (only with `CHOM_KAFKA_TLS=true`: it sends the password as it is) or empty for no SASL"},
		{Env: "CHOM_KAFKA_SASL_USERNAME", Roles: RoleRelay | RoleBilling, set: text(func(c *Config) *string { return &c.KafkaSecurity.Username }),
			Doc: "SASL user; give the relay and the billing consumer users of their own (the broker's ACLs tell them apart)"},
		{Env: "CHOM_KAFKA_SASL_PASSWORD", Secret: true, Roles: RoleRelay | RoleBilling, set: text(func(c *Config) *string { return &c.KafkaSecurity.Password }),
			Doc: "SASL password; never logged nor shown in an error"},
		{Env: "CHOM_RELAY_BATCH_SIZE", Default: itoa(events.DefaultRelayBatchSize), Roles: RoleRelay, set: positive(func(c *Config) *int { return &c.RelayBatch }),
			Doc: "outbox rows read and published at once"},
		{Env: "CHOM_RELAY_POLL_INTERVAL", Default: durText(events.DefaultRelayPollInterval), Roles: RoleRelay, set: duration(func(c *Config) *time.Duration { return &c.RelayPollInterval }),
			Doc: "the fallback: on PostgreSQL every commit that writes the outbox wakes the relay (LISTEN/NOTIFY on `chom_outbox`), and the relay looks at a drained outbox again after this long only when no commit woke it (a lost notification, its listener reconnecting); on SQLite (`chom dev`), which has no notifications, it is the most an event waits in the database"},
		{Env: "CHOM_RELAY_BREAKER_TIMEOUT", Default: durText(events.DefaultRelayBreakerTimeout), Roles: RoleRelay, set: duration(func(c *Config) *time.Duration { return &c.RelayBreakerTimeout }),
			Doc: "Kafka unreachable: after 3 failed publishes the circuit opens and the relay probes again every this long"},
		{Env: "CHOM_OUTBOX_RETENTION", Default: durText(events.DefaultOutboxRetention), Roles: RoleRelay, set: duration(func(c *Config) *time.Duration { return &c.OutboxRetention }),
			Doc: "published outbox rows older than this are pruned"},
		{Env: "CHOM_BILLING_GROUP", Default: billing.DefaultGroupID, Roles: RoleBilling, set: text(func(c *Config) *string { return &c.BillingGroup }),
			Doc: "consumer group of `billing-consumer`, and its name in `processed_events`"},

		// Issue 13, part A: certificates (certs/acme, certs/seal; docs/certificates.md).
		{Env: "CHOM_CERT_ENCRYPTION_KEYS", Secret: true, Dev: DevGenerated, Roles: RoleIngress | RoleWorker | RoleAdmin, set: sealKeys,
			Doc: "key ring sealing ACME account keys and certificate keys at rest: comma-separated `id:base64(32 bytes)` (`k2026:$(openssl rand -base64 32)`); the first seals, all open. Rotate by putting a new key first, re-sealing, then dropping the old one (docs/certificates.md, Key rotation). Unset, certificates are off: no issuance, no renewal sweep (the scheduler reads only whether it is set), sites on plain HTTP"},
		{Env: "CHOM_ACME_DIRECTORY_URL", Default: acme.LetsEncryptProduction, Dev: DevEmbedded, Roles: RoleWorker, set: text(func(c *Config) *string { return &c.ACME.DirectoryURL }),
			Doc: "the CA's ACME directory; Let's Encrypt's staging CA (`" + acme.LetsEncryptStaging + "`) for trying a setup out"},
		{Env: "CHOM_ACME_CA_CERTS", DefaultNote: "the system's roots", Roles: RoleWorker, set: text(func(c *Config) *string { return &c.ACME.CACerts }),
			Doc: "PEM file of the roots the worker trusts for the CA's ACME directory: a private CA's (step-ca, Pebble in tests); `chom dev` writes its development CA's here"},
		{Env: "CHOM_ACME_EMAIL", Roles: RoleWorker, set: text(func(c *Config) *string { return &c.ACME.Email }),
			Doc: "contact of the platform's ACME account; a new email makes a new account"},
		{Env: "CHOM_ACME_TIMEOUT", Default: "5m", Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.ACME.Timeout }),
			Doc: "longest one issuance may take (order, challenges, certificate); past it the operation fails with `challenge_timeout` and is retried"},
		{Env: "CHOM_ACME_DNS_PROVIDER", Roles: RoleWorker, set: dnsProvider,
			Doc: "how DNS-01 challenges (wildcards) are answered: `rfc2136` (BIND, PowerDNS, Knot: dynamic updates), `challtestsrv` (tests and development only) or empty (DNS-01 off: wildcards are refused)"},
		{Env: "CHOM_ACME_DNS_RFC2136_NAMESERVER", Roles: RoleWorker, set: text(func(c *Config) *string { return &c.ACME.RFC2136Nameserver }),
			Doc: "`host:port` of the primary server taking the updates"},
		{Env: "CHOM_ACME_DNS_RFC2136_ZONE", Roles: RoleWorker, set: text(func(c *Config) *string { return &c.ACME.RFC2136Zone }),
			Doc: "the zone the updates are for (`example.com.`); every DNS-01 domain must be in it"},
		{Env: "CHOM_ACME_DNS_RFC2136_TSIG", Secret: true, Roles: RoleWorker, set: text(func(c *Config) *string { return &c.ACME.RFC2136TSIG }),
			Doc: "TSIG key signing the updates: `name:base64secret` (hmac-sha256) or `name:algorithm:base64secret`; empty sends them unsigned"},
		{Env: "CHOM_ACME_DNS_CHALLTESTSRV_URL", Roles: RoleWorker, set: text(func(c *Config) *string { return &c.ACME.ChallTestSrvURL }),
			Doc: "management API of pebble-challtestsrv, with `CHOM_ACME_DNS_PROVIDER=challtestsrv`"},
		{Env: "CHOM_ACME_DNS_RESOLVERS", DefaultNote: "the zone's authoritative servers, found through the system resolver", Roles: RoleWorker,
			set: func(c *Config, v string) error { c.ACME.DNSResolvers = list(v); return nil },
			Doc: "comma-separated `host:port` resolvers where a DNS-01 record must be visible before the CA is asked to look"},
		{Env: "CHOM_ACME_DNS_PROPAGATION_TIMEOUT", Default: "2m", Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.ACME.DNSPropagationTimeout }),
			Doc: "longest wait for a DNS-01 record to be visible there"},
		{Env: "CHOM_ACME_ORDERS_PER_ACCOUNT", Default: "300", Roles: RoleWorker, set: positive(func(c *Config) *int { return &c.ACME.Budget.OrdersPerAccount }),
			Doc: "new orders the fleet sends per account per `CHOM_ACME_ORDERS_WINDOW` (Let's Encrypt: 300 per 3 h); beyond it issuance is deferred, not failed"},
		{Env: "CHOM_ACME_ORDERS_WINDOW", Default: "3h", Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.ACME.Budget.OrdersWindow }),
			Doc: "window of that limit"},
		{Env: "CHOM_ACME_CERTS_PER_DOMAIN", Default: "50", Roles: RoleWorker, set: positive(func(c *Config) *int { return &c.ACME.Budget.CertsPerDomain }),
			Doc: "certificates the fleet issues per registered domain (`example.co.uk` for `shop.example.co.uk`) per `CHOM_ACME_CERTS_WINDOW` (Let's Encrypt: 50 per 7 days)"},
		{Env: "CHOM_ACME_CERTS_WINDOW", Default: "168h", Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.ACME.Budget.CertsWindow }),
			Doc: "window of that limit"},

		// Issue 13: the renewal sweep (docs/certificates.md, "Renewal").
		{Env: "CHOM_CERT_RENEW_INTERVAL", Default: "1h", Roles: RoleScheduler, set: duration(func(c *Config) *time.Duration { return &c.Renewal.Every }),
			Doc: "how often the scheduler enqueues `certificate:renew_sweep`, which asks the CA about certificates (`CHOM_CERT_ARI_*`) and starts the renewal of every certificate whose `renew_after` has passed; at least `1m`"},
		{Env: "CHOM_CERT_RENEW_BATCH", Default: itoa(jobs.DefaultRenewBatch), Roles: RoleWorker, set: positive(func(c *Config) *int { return &c.Renewal.Batch }),
			Doc: "most renewals one sweep starts, the most overdue first; the rest wait for the next sweep (100 an hour is Let's Encrypt's 300 new orders per account per 3 h)"},
		{Env: "CHOM_CERT_ARI_INTERVAL", Default: durText(jobs.DefaultARIInterval), Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.Renewal.ARIEvery }),
			Doc: "how often the CA is asked for its ACME Renewal Information (RFC 9773) about each certificate, or longer when its Retry-After says so (at most a day): a revoked certificate, or one the CA wants replaced early, renews at the first sweep after the question; at least `1m`; `0` never asks"},
		{Env: "CHOM_CERT_ARI_BATCH", Default: itoa(jobs.DefaultARIBatch), Roles: RoleWorker, set: positive(func(c *Config) *int { return &c.Renewal.ARIBatch }),
			Doc: "most certificates one sweep asks the CA about; keep it above certificates × `CHOM_CERT_RENEW_INTERVAL` ÷ `CHOM_CERT_ARI_INTERVAL`, or questions fall behind"},

		// Issue 13, part C: domains proven before they are taken (docs/api.md, "Domains").
		{Env: "CHOM_DOMAIN_VERIFICATION", Default: models.VerificationContested, Roles: RoleIngress | RoleWorker,
			set: oneOf(func(c *Config) *string { return &c.DomainVerification }, models.VerificationContested, models.VerificationStrict),
			Doc: "`contested`: a new site waits `pending_verification` only for a domain another tenant already claims; `strict`: for every domain it claims that is not proven yet"},
		{Env: "CHOM_DOMAIN_VERIFY_TIMEOUT", Default: durText(jobs.DefaultVerifyTimeout), Roles: RoleWorker, set: duration(func(c *Config) *time.Duration { return &c.DomainVerifyTimeout }),
			Doc: "how long a `domain.verify` operation keeps checking (5s after the start, then doubling waits up to 2 min) before it fails with `domain_not_verified`"},
		{Env: "CHOM_DNS_RESOLVER", Roles: RoleWorker, set: hostPort(func(c *Config) *string { return &c.DNSResolver }),
			Doc: "DNS server (`host:port`) domain verification resolves TXT records and challenge hosts through; unset, the system's resolver"},
	}
}

// hostPort takes a host:port, or nothing.
func hostPort(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		*field(c) = v
		if v == "" {
			return nil
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			return errors.New("want host:port, such as 127.0.0.1:53")
		}
		return nil
	}
}

// ACMESettings are the certificate settings (CHOM_ACME_*, CHOM_CERT_*):
// issue 13, part A. The processes read them from the next session on.
type ACMESettings struct {
	EncryptionKeys        string // CHOM_CERT_ENCRYPTION_KEYS, checked by seal.ParseKeys
	DirectoryURL          string
	CACerts               string // CHOM_ACME_CA_CERTS: a PEM file of roots
	Email                 string
	Timeout               time.Duration
	DNSProvider           string // "", "rfc2136" or "challtestsrv"
	RFC2136Nameserver     string
	RFC2136Zone           string
	RFC2136TSIG           string
	ChallTestSrvURL       string
	DNSResolvers          []string
	DNSPropagationTimeout time.Duration
	Budget                models.BudgetLimits
}

// sealKeys checks the key ring's syntax at start-up (the error names the
// key, never its bytes).
func sealKeys(c *Config, v string) error {
	if v != "" {
		if _, err := seal.ParseKeys(v); err != nil {
			return err
		}
	}
	c.ACME.EncryptionKeys = v
	return nil
}

// dnsProvider reads CHOM_ACME_DNS_PROVIDER.
func dnsProvider(c *Config, v string) error {
	switch v {
	case "", "rfc2136", "challtestsrv":
		c.ACME.DNSProvider = v
		return nil
	}
	return errors.New("want rfc2136, challtestsrv or empty")
}

// validate checks the certificate settings that go together.
func (a ACMESettings) validate() []error {
	var errs []error
	switch a.DNSProvider {
	case "rfc2136":
		if _, err := acme.NewRFC2136(acme.RFC2136Config{Nameserver: a.RFC2136Nameserver, Zone: a.RFC2136Zone}); err != nil {
			errs = append(errs, fmt.Errorf("CHOM_ACME_DNS_PROVIDER=rfc2136 needs CHOM_ACME_DNS_RFC2136_NAMESERVER and _ZONE: %w", err))
		}
		if a.RFC2136TSIG != "" {
			if _, _, _, err := acme.ParseTSIG(a.RFC2136TSIG); err != nil {
				errs = append(errs, fmt.Errorf("CHOM_ACME_DNS_RFC2136_TSIG: %w", err))
			}
		}
	case "challtestsrv":
		if a.ChallTestSrvURL == "" {
			errs = append(errs, errors.New("CHOM_ACME_DNS_PROVIDER=challtestsrv needs CHOM_ACME_DNS_CHALLTESTSRV_URL"))
		}
	}
	return errs
}

// LoadConfig reads every CHOM_* variable through getenv (os.Getenv in
// production) with the production defaults, and returns every bad value in
// one error.
func LoadConfig(getenv func(string) string) (Config, error) {
	return load(getenv, "")
}

// LoadDevConfig is LoadConfig with chom dev's defaults (Setting.Dev), the
// data directory dataDir (an absolute path) standing for "<data-dir>".
// Settings whose dev default is DevEmbedded or DevGenerated stay empty:
// chom dev starts the in-process part, or makes the value, for them.
func LoadDevConfig(getenv func(string) string, dataDir string) (Config, error) {
	if dataDir == "" {
		return Config{}, errors.New("stack: LoadDevConfig needs the data directory")
	}
	return load(getenv, dataDir)
}

// shown is v as an error or a log line may show it: redacted when s is Secret.
func (s Setting) shown(v string) string {
	switch {
	case !s.Secret || v == "":
		return v
	case strings.Contains(v, "://"):
		return models.RedactURL(v)
	default:
		return "<redacted>"
	}
}

func load(getenv func(string) string, devDir string) (Config, error) {
	var c Config
	var errs []error
	for _, s := range Settings() {
		v := strings.TrimSpace(getenv(s.Env))
		if v == "" {
			v = s.Default
			if devDir != "" && s.Dev != "" {
				v = strings.ReplaceAll(s.Dev, "<data-dir>", devDir)
				if s.Dev == DevEmbedded || s.Dev == DevGenerated {
					v = ""
				}
			}
		}
		if err := s.set(&c, v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", s.Env, s.shown(v), err))
		}
	}
	if c.HealthProbe == "" {
		c.HealthProbe = c.Driver
	}
	errs = append(errs, c.validate()...)
	return c, errors.Join(errs...)
}

// validate checks what one setting alone cannot: the settings that go together.
func (c Config) validate() []error {
	var errs []error
	errs = append(errs, c.ACME.validate()...)
	errs = append(errs, c.Renewal.validate()...)
	if c.Driver == "ssh" && c.SSHKeyFile == "" {
		errs = append(errs, errors.New("CHOM_DRIVER=ssh needs CHOM_SSH_KEY_FILE (the private key the driver logs in with)"))
	}
	if c.HealthProbe == "ssh" && c.SSHKeyFile == "" {
		errs = append(errs, errors.New("CHOM_HEALTH_PROBE=ssh needs CHOM_SSH_KEY_FILE (the private key the probe logs in with)"))
	}
	if c.JobSlotLease < time.Second || c.JobDeferDelay <= 0 {
		errs = append(errs, fmt.Errorf("CHOM_JOB_SLOT_LEASE=%s, CHOM_JOB_DEFER_DELAY=%s: want a lease of at least 1s and a positive delay",
			c.JobSlotLease, c.JobDeferDelay))
	}
	if c.HealthHTTPPort > 65535 {
		errs = append(errs, fmt.Errorf("CHOM_HEALTH_HTTP_PORT=%d: want a port (1..65535)", c.HealthHTTPPort))
	}
	if c.HealthBreakerOpen <= 0 {
		errs = append(errs, fmt.Errorf("CHOM_HEALTH_BREAKER_OPEN=%s: want a positive duration", c.HealthBreakerOpen))
	}
	if err := c.HealthThresholds.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("CHOM_HEALTH_*: %w", err))
	}
	if c.HealthInterval < time.Second || c.HealthCheckTimeout <= 0 || c.HealthCheckTimeout >= c.HealthInterval {
		errs = append(errs, fmt.Errorf("CHOM_HEALTH_INTERVAL=%s, CHOM_HEALTH_CHECK_TIMEOUT=%s: want an interval of at least 1s and a timeout shorter than it",
			c.HealthInterval, c.HealthCheckTimeout))
	}
	if c.BackupStore == "s3" && (c.S3Endpoint == "" || c.S3Bucket == "" || c.S3AccessKey == "" || c.S3SecretKey == "") {
		errs = append(errs, errors.New("CHOM_BACKUP_STORE=s3 needs CHOM_S3_ENDPOINT, CHOM_S3_BUCKET, CHOM_S3_ACCESS_KEY and CHOM_S3_SECRET_KEY"))
	}
	if k := c.BackupSigningKey; k != "" && len(k) < 32 {
		errs = append(errs, fmt.Errorf("CHOM_BACKUP_SIGNING_KEY: %d characters; want at least 32 (e.g. openssl rand -hex 32)", len(k)))
	}
	if c.BackupLinkTTL < time.Second || c.BackupLinkTTL > 24*time.Hour {
		errs = append(errs, fmt.Errorf("CHOM_BACKUP_LINK_TTL=%s: want 1s to 24h", c.BackupLinkTTL))
	}
	if c.BackupRetention > 3650 {
		errs = append(errs, fmt.Errorf("CHOM_BACKUP_DEFAULT_RETENTION=%d: want 1 to 3650 days", c.BackupRetention))
	}
	if c.BackupPruneEvery < time.Minute || c.BackupScheduleEvery < time.Minute {
		errs = append(errs, fmt.Errorf("CHOM_BACKUP_PRUNE_INTERVAL=%s, CHOM_BACKUP_SCHEDULE_INTERVAL=%s: want at least 1m",
			c.BackupPruneEvery, c.BackupScheduleEvery))
	}
	if c.LayoutMigrateEvery < time.Minute {
		errs = append(errs, fmt.Errorf("CHOM_LAYOUT_MIGRATE_INTERVAL=%s: want at least 1m", c.LayoutMigrateEvery))
	}
	if c.OperationRetention != 0 && c.OperationRetention < 48*time.Hour {
		errs = append(errs, fmt.Errorf("CHOM_OPERATION_RETENTION=%s: want 0 (keep) or at least 48h, longer than an idempotency key lives", c.OperationRetention))
	}
	if c.AuditRetention != 0 && (c.OperationRetention == 0 || c.AuditRetention < c.OperationRetention) {
		errs = append(errs, fmt.Errorf("CHOM_AUDIT_RETENTION=%s: want 0 (keep) or at least CHOM_OPERATION_RETENTION (%s), which must then be set",
			c.AuditRetention, c.OperationRetention))
	}
	if c.OperationPruneEvery < time.Minute {
		errs = append(errs, fmt.Errorf("CHOM_OPERATION_PRUNE_INTERVAL=%s: want at least 1m", c.OperationPruneEvery))
	}
	if c.MeteringEvery < time.Minute {
		errs = append(errs, fmt.Errorf("CHOM_METERING_INTERVAL=%s: want at least 1m", c.MeteringEvery))
	}
	for name, d := range map[string]time.Duration{"CHOM_RELAY_POLL_INTERVAL": c.RelayPollInterval,
		"CHOM_RELAY_BREAKER_TIMEOUT": c.RelayBreakerTimeout, "CHOM_OUTBOX_RETENTION": c.OutboxRetention,
		"CHOM_RETRY_BASE": c.RetryBase, "CHOM_RETRY_MAX": c.RetryMax, "CHOM_SHUTDOWN_TIMEOUT": c.ShutdownTimeout,
		"CHOM_RECONCILE_INTERVAL": c.ReconcileEvery} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%s: want a positive duration", name, d))
		}
	}
	if u := c.DatabaseReadURL; u != "" && !strings.HasPrefix(u, "postgres://") && !strings.HasPrefix(u, "postgresql://") {
		errs = append(errs, fmt.Errorf("CHOM_DATABASE_READ_URL=%s: want a postgres:// URL (a PostgreSQL streaming replica)", models.RedactURL(u)))
	}
	if c.PublicURL != "" {
		if _, err := ingress.ParsePublicURL(c.PublicURL); err != nil {
			errs = append(errs, fmt.Errorf("CHOM_PUBLIC_URL: %w", err))
		}
	}
	if c.KafkaMinInSync > c.KafkaReplication && c.KafkaReplication > 0 {
		errs = append(errs, fmt.Errorf("CHOM_KAFKA_MIN_INSYNC_REPLICAS=%d: at most CHOM_KAFKA_REPLICATION (%d), or no write could ever succeed",
			c.KafkaMinInSync, c.KafkaReplication))
	}
	if err := c.KafkaSecurity.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// Require reports the settings a process cannot start without, by name
// (CHOM_DATABASE_URL, CHOM_REDIS_URL, CHOM_LOCAL_ROOT, CHOM_KAFKA_BROKERS).
func (c Config) Require(names ...string) error {
	var errs []error
	for _, n := range names {
		var v string
		switch n {
		case "CHOM_DATABASE_URL":
			v = c.DatabaseURL
		case "CHOM_REDIS_URL":
			v = c.RedisURL
		case "CHOM_LOCAL_ROOT":
			v = c.LocalRoot
		case "CHOM_KAFKA_BROKERS":
			v = strings.Join(c.KafkaBrokers, ",")
		default:
			errs = append(errs, fmt.Errorf("stack: Require(%q): not a required setting", n))
			continue
		}
		if strings.TrimSpace(v) == "" {
			errs = append(errs, fmt.Errorf("%s is required", n))
		}
	}
	return errors.Join(errs...)
}

// The parsers of Setting.set: each turns the variable's text into its field,
// or says what a good value looks like.

func text(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *field(c) = v; return nil }
}

func oneOf(field func(*Config) *string, allowed ...string) func(*Config, string) error {
	return func(c *Config, v string) error {
		*field(c) = v
		if v == "" {
			return nil // a derived default (CHOM_HEALTH_PROBE) is filled in after
		}
		for _, a := range allowed {
			if v == a {
				return nil
			}
		}
		return fmt.Errorf("want %s", strings.Join(allowed, " or "))
	}
}

func positive(field func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return errors.New("want a positive integer")
		}
		*field(c) = n
		return nil
	}
}

// optional is set for a setting whose default is derived from others: unset
// (empty) leaves the field zero, for the code that derives it.
func optional(set func(*Config, string) error) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v == "" {
			return nil
		}
		return set(c, v)
	}
}

// limit is a quota: an integer ≥ 0, 0 meaning unlimited.
func limit(field func(*Config) *int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return errors.New("want an integer ≥ 0 (0 = unlimited)")
		}
		*field(c) = n
		return nil
	}
}

func number(field func(*Config) *float64) func(*Config, string) error {
	return func(c *Config, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			return errors.New("want a number ≥ 0")
		}
		*field(c) = f
		return nil
	}
}

func duration(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return errors.New("want a duration such as 30s")
		}
		*field(c) = d
		return nil
	}
}

// signedDuration is a duration that may be negative (a negative cache TTL
// disables the cache).
func signedDuration(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return errors.New("want a duration such as 30s")
		}
		*field(c) = d
		return nil
	}
}

func boolean(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("want true or false")
		}
		*field(c) = b
		return nil
	}
}

func logLevel(c *Config, v string) error {
	if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
		return errors.New("want debug, info, warn or error")
	}
	return nil
}

func topicPrefix(c *Config, v string) error {
	c.KafkaTopicPrefix = v
	if v == "-" {
		return nil
	}
	return events.ValidTopicPrefix(v)
}

// itoa, ftoa and durText write a component's default as an operator would
// set it (durText: 5m, not 5m0s).
func itoa(n int) string     { return strconv.Itoa(n) }
func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
func durText(d time.Duration) string {
	s := d.String()
	s, _ = strings.CutSuffix(s, "m0s")
	if strings.HasSuffix(d.String(), "m0s") {
		s += "m"
	}
	s, _ = strings.CutSuffix(s, "h0m")
	if strings.HasSuffix(d.String(), "h0m0s") {
		s += "h"
	}
	return s
}

// list splits a comma-separated value, dropping blanks.
func list(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
