package main

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/chomhq/chom/metrics"
)

func runIngress(ctx context.Context, stderr io.Writer, getenv func(string) string) error {
	c, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if err := c.require("CHOM_DATABASE_URL", "CHOM_REDIS_URL"); err != nil {
		return err
	}
	log := newLogger(stderr, c).With("process", "ingress")
	m := metrics.New() // served at /metrics on the API listener
	b, err := openBackends(ctx, c, c.AutoMigrate, m)
	if err != nil {
		return err
	}
	defer b.Close()
	trackPlatform(ctx, m, b)
	parts, err := newIngress(c, b, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	log.Info("ingress listening", "addr", ln.Addr().String())
	return runAll(ctx, parts.runners(ln, c.ShutdownTimeout, log)...)
}

func runWorker(ctx context.Context, stderr io.Writer, getenv func(string) string) error {
	c, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	need := []string{"CHOM_DATABASE_URL", "CHOM_REDIS_URL"}
	if c.Driver == "local" {
		need = append(need, "CHOM_LOCAL_ROOT")
	}
	if err := c.require(need...); err != nil {
		return err
	}
	log := newLogger(stderr, c).With("process", "worker")
	m := metrics.New()
	b, err := openBackends(ctx, c, c.AutoMigrate, m)
	if err != nil {
		return err
	}
	defer b.Close()
	trackPlatform(ctx, m, b)
	w, err := newWorker(c, b, log, c.LocalRoot)
	if err != nil {
		return err
	}
	serveMetrics, err := metricsServer(metricsAddr(c, metricsAddrWorker), m, c.ShutdownTimeout, log)
	if err != nil {
		return err
	}
	log.Info("worker started", "concurrency", c.Concurrency)
	return runAll(ctx, append(serveMetrics, w.Run)...)
}

func runScheduler(ctx context.Context, stderr io.Writer, getenv func(string) string) error {
	c, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if err := c.require("CHOM_REDIS_URL"); err != nil {
		return err
	}
	log := newLogger(stderr, c).With("process", "scheduler")
	s, err := newScheduler(c, log)
	if err != nil {
		return err
	}
	serveMetrics, err := metricsServer(metricsAddr(c, metricsAddrScheduler), metrics.New(), c.ShutdownTimeout, log)
	if err != nil {
		return err
	}
	log.Info("scheduler started", "reconcile_every", c.ReconcileEvery.String())
	return runAll(ctx, append(serveMetrics, s.Run)...)
}
