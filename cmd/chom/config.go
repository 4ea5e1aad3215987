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

	KafkaBrokers        []string
	KafkaTopicPrefix    string
	KafkaPartitions     int
	KafkaReplication    int
	RelayBatch          int
	RelayPollInterval   time.Duration
	RelayBreakerTimeout time.Duration
	OutboxRetention     time.Duration
	BillingGroup        string
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

		KafkaBrokers:        list(getenv("CHOM_KAFKA_BROKERS")),
		KafkaTopicPrefix:    str("CHOM_KAFKA_TOPIC_PREFIX", events.DefaultTopicPrefix),
		KafkaPartitions:     num("CHOM_KAFKA_PARTITIONS", 6),
		KafkaReplication:    num("CHOM_KAFKA_REPLICATION", 3),
		RelayBatch:          num("CHOM_RELAY_BATCH_SIZE", 500),
		RelayPollInterval:   dur("CHOM_RELAY_POLL_INTERVAL", 100*time.Millisecond),
		RelayBreakerTimeout: dur("CHOM_RELAY_BREAKER_TIMEOUT", 10*time.Second),
		OutboxRetention:     dur("CHOM_OUTBOX_RETENTION", 7*24*time.Hour),
		BillingGroup:        str("CHOM_BILLING_GROUP", billing.DefaultGroupID),
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
