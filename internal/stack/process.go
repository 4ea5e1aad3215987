package stack

import (
	"context"
	"io"

	"github.com/chomhq/chom/metrics"
)

// Process is one CHOM process: its roles over the backends they share, and
// its /metrics listener. Run runs them all until ctx ends or one fails, then
// closes the backends.
type Process struct {
	runners  []Runner
	backends *Backends // nil for the scheduler, which has none
}

// Run runs the process's roles until ctx ends or one fails.
func (p *Process) Run(ctx context.Context) error {
	if p.backends != nil {
		defer p.backends.Close()
	}
	return RunAll(ctx, p.runners...)
}

// build opens the backends, lets add build the roles over them, and closes
// the backends when that fails.
func build(ctx context.Context, c Config, o BackendOptions, add func(b *Backends) ([]Runner, error)) (*Process, error) {
	b, err := OpenBackends(ctx, c, o)
	if err != nil {
		return nil, err
	}
	runners, err := add(b)
	if err != nil {
		b.Close()
		return nil, err
	}
	return &Process{runners: runners, backends: b}, nil
}

// IngressProcess is `chom ingress`: the API, serving /metrics on its own
// listener.
func IngressProcess(ctx context.Context, c Config, stderr io.Writer) (*Process, error) {
	if err := c.Require("CHOM_DATABASE_URL", "CHOM_REDIS_URL"); err != nil {
		return nil, err
	}
	log := NewLogger(stderr, c).With("process", "ingress")
	return build(ctx, c, BackendOptions{Migrate: c.AutoMigrate, Reads: true}, func(b *Backends) ([]Runner, error) {
		b.TrackPlatform(ctx)
		in, err := NewIngress(c, b, log, Hooks{})
		if err != nil {
			return nil, err
		}
		return []Runner{in.Run}, nil
	})
}

// WorkerProcess is `chom worker`: a queue worker, /metrics on
// CHOM_METRICS_LISTEN (default 127.0.0.1:9464).
func WorkerProcess(ctx context.Context, c Config, stderr io.Writer) (*Process, error) {
	need := []string{"CHOM_DATABASE_URL", "CHOM_REDIS_URL"}
	if c.Driver == "local" {
		need = append(need, "CHOM_LOCAL_ROOT")
	}
	if err := c.Require(need...); err != nil {
		return nil, err
	}
	log := NewLogger(stderr, c).With("process", "worker")
	return build(ctx, c, BackendOptions{Migrate: c.AutoMigrate}, func(b *Backends) ([]Runner, error) {
		b.TrackPlatform(ctx)
		w, err := NewWorker(c, b, log, Hooks{})
		if err != nil {
			return nil, err
		}
		serve, err := metricsServer(metricsAddr(c, MetricsAddrWorker), b.Metrics, c.ShutdownTimeout, log)
		if err != nil {
			return nil, err
		}
		log.Info("worker started", "concurrency", c.Concurrency)
		return append(serve, w.Run), nil
	})
}

// SchedulerProcess is `chom scheduler`: it needs Redis only; /metrics on
// CHOM_METRICS_LISTEN (default 127.0.0.1:9465).
func SchedulerProcess(_ context.Context, c Config, stderr io.Writer) (*Process, error) {
	if err := c.Require("CHOM_REDIS_URL"); err != nil {
		return nil, err
	}
	log := NewLogger(stderr, c).With("process", "scheduler")
	s, err := NewScheduler(c, log)
	if err != nil {
		return nil, err
	}
	serve, err := metricsServer(metricsAddr(c, MetricsAddrScheduler), metrics.New(), c.ShutdownTimeout, log)
	if err != nil {
		return nil, err
	}
	return &Process{runners: append(serve, s.Run)}, nil
}

// RelayProcess is `chom relay`: the outbox relay to Kafka, /metrics on
// CHOM_METRICS_LISTEN (default 127.0.0.1:9466).
func RelayProcess(ctx context.Context, c Config, stderr io.Writer) (*Process, error) {
	if err := c.Require("CHOM_DATABASE_URL", "CHOM_KAFKA_BROKERS"); err != nil {
		return nil, err
	}
	log := NewLogger(stderr, c).With("process", "relay")
	return build(ctx, c, BackendOptions{Migrate: c.AutoMigrate, NoRedis: true, MaxConns: eventPoolConns}, func(b *Backends) ([]Runner, error) {
		r, err := NewRelay(ctx, c, b, log)
		if err != nil {
			return nil, err
		}
		serve, err := metricsServer(metricsAddr(c, MetricsAddrRelay), b.Metrics, c.ShutdownTimeout, log)
		if err != nil {
			return nil, err
		}
		return append(serve, r.Run), nil
	})
}

// BillingProcess is `chom billing-consumer`, /metrics on CHOM_METRICS_LISTEN
// (default 127.0.0.1:9467).
func BillingProcess(ctx context.Context, c Config, stderr io.Writer) (*Process, error) {
	if err := c.Require("CHOM_DATABASE_URL", "CHOM_KAFKA_BROKERS"); err != nil {
		return nil, err
	}
	log := NewLogger(stderr, c).With("process", "billing-consumer")
	return build(ctx, c, BackendOptions{Migrate: c.AutoMigrate, NoRedis: true, MaxConns: eventPoolConns}, func(b *Backends) ([]Runner, error) {
		bc, err := NewBillingConsumer(c, b, log)
		if err != nil {
			return nil, err
		}
		serve, err := metricsServer(metricsAddr(c, MetricsAddrBilling), b.Metrics, c.ShutdownTimeout, log)
		if err != nil {
			return nil, err
		}
		return append(serve, bc.Run), nil
	})
}
