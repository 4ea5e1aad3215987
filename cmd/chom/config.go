package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/events/billing"
	"github.com/chomhq/chom/jobs"
)

// config is every CHOM_* setting. Each field's env name and default are in
// loadConfig; the README's configuration table lists the same.
type config struct {
	DatabaseURL      string
	RedisURL         string
	Listen           string
	LogLevel         slog.Level
	LogFormat        string
	DBMaxConns       int
	Concurrency      int
	Driver           string
	LocalRoot        string
	TokenCacheTTL    time.Duration
	ReconcileEvery   time.Duration
	ReconcileGrace   time.Duration
	MeteringEvery    time.Duration // CHOM_METERING_INTERVAL: the usage period
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
	AcceptCommitters int
	MetricsListen    string

	KafkaBrokers        []string
	KafkaTopicPrefix    string
	KafkaPartitions     int
	KafkaReplication    int
	RelayBatch          int
	RelayPollInterval   time.Duration
	RelayBreakerTimeout time.Duration
	OutboxRetention     time.Duration
	BillingGroup        string

	// Health checks of the servers (jobs/health.go).
	HealthInterval     time.Duration
	HealthHysteresis   int
	HealthCheckTimeout time.Duration
	HealthRetention    time.Duration
	HealthThresholds   jobs.HealthThresholds
	LocalHealthURL     string
	// HealthProbe is how checks reach servers: local (the local driver's
	// directories) or ssh (SSHKeyFile, SSHUser), with a breaker per server.
	HealthProbe string
	SSHKeyFile  string
	SSHUser     string
	// HealthBreakerFailures and HealthBreakerOpen configure the per-VPS breakers.
	// One breaker per server guards health probes and jobs alike.
	HealthBreakerFailures int
	HealthBreakerOpen     time.Duration

	// Backups (jobs/backups.go, ingress/backups.go): the filesystem store's
	// directory, the key that signs download links and their lifetime, the
	// default retention, and how often prune and the schedule sweep run.
	BackupStore string
	BackupDir   string
	// S3 is the S3-compatible bucket of CHOM_BACKUP_STORE=s3.
	S3Endpoint, S3Bucket, S3AccessKey, S3SecretKey, S3Region, S3Prefix string
	S3TLS                                                              bool
	BackupSigningKey                                                   string
	BackupLinkTTL                                                      time.Duration
	BackupRetention                                                    int
	BackupPruneEvery                                                   time.Duration
	BackupScheduleEvery                                                time.Duration

	// Protection of the servers (workers/limits): at most VPSMaxJobs jobs on
	// one server and TenantMaxJobs of one tenant at once, fleet-wide; a held
	// slot frees itself JobSlotLease after its worker died; a task deferred by
	// a limit or an open breaker runs again after about JobDeferDelay.
	VPSMaxJobs    int
	TenantMaxJobs int
	JobSlotLease  time.Duration
	JobDeferDelay time.Duration
}

// loadConfig reads the environment, collecting every bad value into one error.
func loadConfig(getenv func(string) string) (config, error) {
	var errs []error
	str := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	dur := func(name string, def time.Duration) time.Duration {
		v := getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a duration such as 30s", name, v))
			return def
		}
		return d
	}
	num := func(name string, def int) int {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a positive integer", name, v))
			return def
		}
		return n
	}
	nonNegative := func(name string, def float64) float64 {
		v := getenv(name)
		if v == "" {
			return def
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a number ≥ 0", name, v))
			return def
		}
		return f
	}
	boolean := func(name string, def bool) bool {
		v := getenv(name)
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want true or false", name, v))
			return def
		}
		return b
	}
	c := config{
		DatabaseURL:      getenv("CHOM_DATABASE_URL"),
		RedisURL:         getenv("CHOM_REDIS_URL"),
		Listen:           str("CHOM_LISTEN", ":8080"),
		LogFormat:        str("CHOM_LOG_FORMAT", "json"),
		DBMaxConns:       num("CHOM_DB_MAX_CONNS", 40),
		Concurrency:      num("CHOM_WORKER_CONCURRENCY", 20),
		Driver:           str("CHOM_DRIVER", "local"),
		LocalRoot:        getenv("CHOM_LOCAL_ROOT"),
		TokenCacheTTL:    dur("CHOM_TOKEN_CACHE_TTL", 30*time.Second),
		ReconcileEvery:   dur("CHOM_RECONCILE_INTERVAL", 30*time.Second),
		ReconcileGrace:   dur("CHOM_RECONCILE_GRACE", 30*time.Second),
		MeteringEvery:    dur("CHOM_METERING_INTERVAL", time.Hour),
		ShutdownTimeout:  dur("CHOM_SHUTDOWN_TIMEOUT", 30*time.Second),
		RetryBase:        dur("CHOM_RETRY_BASE", 2*time.Second),
		RetryMax:         dur("CHOM_RETRY_MAX", 5*time.Minute),
		OpsUI:            boolean("CHOM_OPS_UI", true),
		PrometheusURL:    getenv("CHOM_PROMETHEUS_URL"),
		AutoMigrate:      boolean("CHOM_AUTO_MIGRATE", false),
		AcceptBatch:      num("CHOM_ACCEPT_MAX_BATCH", 256),
		RedisPoolSize:    num("CHOM_REDIS_POOL_SIZE", 128),
		OpCacheTTL:       dur("CHOM_OPERATION_CACHE_TTL", 250*time.Millisecond),
		RateLimit:        nonNegative("CHOM_RATE_LIMIT", 100),
		RateBurst:        num("CHOM_RATE_BURST", 200),
		AcceptCommitters: num("CHOM_ACCEPT_COMMITTERS", 1),
		MetricsListen:    getenv("CHOM_METRICS_LISTEN"), // per-process default: metricsAddr

		KafkaBrokers:        list(getenv("CHOM_KAFKA_BROKERS")),
		KafkaTopicPrefix:    str("CHOM_KAFKA_TOPIC_PREFIX", events.DefaultTopicPrefix),
		KafkaPartitions:     num("CHOM_KAFKA_PARTITIONS", 6),
		KafkaReplication:    num("CHOM_KAFKA_REPLICATION", 3),
		RelayBatch:          num("CHOM_RELAY_BATCH_SIZE", 500),
		RelayPollInterval:   dur("CHOM_RELAY_POLL_INTERVAL", 100*time.Millisecond),
		RelayBreakerTimeout: dur("CHOM_RELAY_BREAKER_TIMEOUT", 10*time.Second),
		OutboxRetention:     dur("CHOM_OUTBOX_RETENTION", 7*24*time.Hour),
		BillingGroup:        str("CHOM_BILLING_GROUP", billing.DefaultGroupID),

		HealthInterval:     dur("CHOM_HEALTH_INTERVAL", time.Minute),
		HealthHysteresis:   num("CHOM_HEALTH_HYSTERESIS", 3),
		HealthCheckTimeout: dur("CHOM_HEALTH_CHECK_TIMEOUT", 10*time.Second),
		HealthRetention:    dur("CHOM_HEALTH_RETENTION", 24*time.Hour),
		HealthThresholds: jobs.HealthThresholds{
			LoadPerCPUDegraded:   nonNegative("CHOM_HEALTH_LOAD_PER_CPU_DEGRADED", 1.5),
			LoadPerCPUUnhealthy:  nonNegative("CHOM_HEALTH_LOAD_PER_CPU_UNHEALTHY", 4),
			MemPercentDegraded:   nonNegative("CHOM_HEALTH_MEM_PERCENT_DEGRADED", 90),
			MemPercentUnhealthy:  nonNegative("CHOM_HEALTH_MEM_PERCENT_UNHEALTHY", 98),
			DiskPercentDegraded:  nonNegative("CHOM_HEALTH_DISK_PERCENT_DEGRADED", 85),
			DiskPercentUnhealthy: nonNegative("CHOM_HEALTH_DISK_PERCENT_UNHEALTHY", 95),
		},
		LocalHealthURL:        getenv("CHOM_LOCAL_HEALTH_URL"),
		HealthProbe:           str("CHOM_HEALTH_PROBE", str("CHOM_DRIVER", "local")),
		SSHKeyFile:            getenv("CHOM_SSH_KEY_FILE"),
		SSHUser:               str("CHOM_SSH_USER", "root"),
		HealthBreakerFailures: num("CHOM_HEALTH_BREAKER_FAILURES", 3),
		HealthBreakerOpen:     dur("CHOM_HEALTH_BREAKER_OPEN", 5*time.Minute),

		BackupStore:         str("CHOM_BACKUP_STORE", "fs"),
		BackupDir:           getenv("CHOM_BACKUP_DIR"),
		S3Endpoint:          getenv("CHOM_S3_ENDPOINT"),
		S3Bucket:            getenv("CHOM_S3_BUCKET"),
		S3AccessKey:         getenv("CHOM_S3_ACCESS_KEY"),
		S3SecretKey:         getenv("CHOM_S3_SECRET_KEY"),
		S3Region:            getenv("CHOM_S3_REGION"),
		S3Prefix:            getenv("CHOM_S3_PREFIX"),
		S3TLS:               boolean("CHOM_S3_TLS", true),
		BackupSigningKey:    getenv("CHOM_BACKUP_SIGNING_KEY"),
		BackupLinkTTL:       dur("CHOM_BACKUP_LINK_TTL", 5*time.Minute),
		BackupRetention:     num("CHOM_BACKUP_DEFAULT_RETENTION", 30),
		BackupPruneEvery:    dur("CHOM_BACKUP_PRUNE_INTERVAL", time.Hour),
		BackupScheduleEvery: dur("CHOM_BACKUP_SCHEDULE_INTERVAL", 15*time.Minute),

		VPSMaxJobs:    num("CHOM_VPS_MAX_JOBS", 4),
		TenantMaxJobs: num("CHOM_TENANT_MAX_JOBS", 8),
		JobSlotLease:  dur("CHOM_JOB_SLOT_LEASE", 30*time.Second),
		JobDeferDelay: dur("CHOM_JOB_DEFER_DELAY", 2*time.Second),
	}
	switch {
	case c.HealthProbe != "local" && c.HealthProbe != "ssh":
		errs = append(errs, fmt.Errorf("CHOM_HEALTH_PROBE=%q: want local or ssh", c.HealthProbe))
	case c.HealthProbe == "ssh" && c.SSHKeyFile == "":
		errs = append(errs, errors.New("CHOM_HEALTH_PROBE=ssh needs CHOM_SSH_KEY_FILE (the private key the probe logs in with)"))
	}
	if c.HealthBreakerFailures <= 0 || c.HealthBreakerOpen <= 0 {
		errs = append(errs, fmt.Errorf("CHOM_HEALTH_BREAKER_FAILURES=%d, CHOM_HEALTH_BREAKER_OPEN=%s: both must be positive",
			c.HealthBreakerFailures, c.HealthBreakerOpen))
	}
	if c.VPSMaxJobs <= 0 || c.TenantMaxJobs <= 0 {
		errs = append(errs, fmt.Errorf("CHOM_VPS_MAX_JOBS=%d, CHOM_TENANT_MAX_JOBS=%d: both must be positive",
			c.VPSMaxJobs, c.TenantMaxJobs))
	}
	if c.JobSlotLease < time.Second || c.JobDeferDelay <= 0 {
		errs = append(errs, fmt.Errorf("CHOM_JOB_SLOT_LEASE=%s, CHOM_JOB_DEFER_DELAY=%s: want a lease of at least 1s and a positive delay",
			c.JobSlotLease, c.JobDeferDelay))
	}
	if err := c.HealthThresholds.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("CHOM_HEALTH_*: %w", err))
	}
	if c.HealthInterval < time.Second || c.HealthCheckTimeout <= 0 || c.HealthCheckTimeout >= c.HealthInterval {
		errs = append(errs, fmt.Errorf("CHOM_HEALTH_INTERVAL=%s, CHOM_HEALTH_CHECK_TIMEOUT=%s: want an interval of at least 1s and a timeout shorter than it",
			c.HealthInterval, c.HealthCheckTimeout))
	}
	switch c.BackupStore {
	case "fs":
	case "s3":
		if c.S3Endpoint == "" || c.S3Bucket == "" || c.S3AccessKey == "" || c.S3SecretKey == "" {
			errs = append(errs, errors.New("CHOM_BACKUP_STORE=s3 needs CHOM_S3_ENDPOINT, CHOM_S3_BUCKET, CHOM_S3_ACCESS_KEY and CHOM_S3_SECRET_KEY"))
		}
	default:
		errs = append(errs, fmt.Errorf("CHOM_BACKUP_STORE=%q: want fs (a directory, CHOM_BACKUP_DIR) or s3 (CHOM_S3_*)", c.BackupStore))
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
	if c.MeteringEvery < time.Minute {
		errs = append(errs, fmt.Errorf("CHOM_METERING_INTERVAL=%s: want at least 1m", c.MeteringEvery))
	}
	if c.KafkaTopicPrefix != "-" {
		if err := events.ValidTopicPrefix(c.KafkaTopicPrefix); err != nil {
			errs = append(errs, fmt.Errorf("CHOM_KAFKA_TOPIC_PREFIX: %w", err))
		}
	}
	for name, d := range map[string]time.Duration{"CHOM_RELAY_POLL_INTERVAL": c.RelayPollInterval,
		"CHOM_RELAY_BREAKER_TIMEOUT": c.RelayBreakerTimeout, "CHOM_OUTBOX_RETENTION": c.OutboxRetention} {
		if d == 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive", name))
		}
	}
	if err := c.LogLevel.UnmarshalText([]byte(str("CHOM_LOG_LEVEL", "info"))); err != nil {
		errs = append(errs, fmt.Errorf("CHOM_LOG_LEVEL: %w", err))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("CHOM_LOG_FORMAT=%q: want json or text", c.LogFormat))
	}
	switch {
	case c.Driver != "local" && c.Driver != "ssh":
		errs = append(errs, fmt.Errorf("CHOM_DRIVER=%q: want local or ssh", c.Driver))
	case c.Driver == "ssh" && c.SSHKeyFile == "":
		errs = append(errs, errors.New("CHOM_DRIVER=ssh needs CHOM_SSH_KEY_FILE (the private key the driver logs in with)"))
	}
	return c, errors.Join(errs...)
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

// require reports the settings a server subcommand cannot start without.
func (c config) require(names ...string) error {
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
		}
		if strings.TrimSpace(v) == "" {
			errs = append(errs, fmt.Errorf("%s is required", n))
		}
	}
	return errors.Join(errs...)
}
