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
	HealthBreakerFailures int
	HealthBreakerOpen     time.Duration
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
		HealthProbe:           str("CHOM_HEALTH_PROBE", "local"),
		SSHKeyFile:            getenv("CHOM_SSH_KEY_FILE"),
		SSHUser:               str("CHOM_SSH_USER", "root"),
		HealthBreakerFailures: num("CHOM_HEALTH_BREAKER_FAILURES", 3),
		HealthBreakerOpen:     dur("CHOM_HEALTH_BREAKER_OPEN", 5*time.Minute),
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
	if err := c.HealthThresholds.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("CHOM_HEALTH_*: %w", err))
	}
	if c.HealthInterval < time.Second || c.HealthCheckTimeout <= 0 || c.HealthCheckTimeout >= c.HealthInterval {
		errs = append(errs, fmt.Errorf("CHOM_HEALTH_INTERVAL=%s, CHOM_HEALTH_CHECK_TIMEOUT=%s: want an interval of at least 1s and a timeout shorter than it",
			c.HealthInterval, c.HealthCheckTimeout))
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
	if c.Driver != "local" {
		errs = append(errs, fmt.Errorf("CHOM_DRIVER=%q: only \"local\" is available in this build", c.Driver))
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
