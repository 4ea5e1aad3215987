package deploycheck_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyTree copies deploy/ and dashboards/ (compose mounts the latter) into a
// temporary repository root and returns it.
func copyTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, dir := range []string{"deploy", "dashboards"} {
		err := filepath.WalkDir(repoPath(dir), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(repoPath(""), p)
			if d.IsDir() {
				return os.MkdirAll(filepath.Join(root, rel), 0o755)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(root, rel), data, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// plant replaces old by new in root/file; old must be there, so a planted
// mistake cannot silently miss.
func plant(t *testing.T, root, file, old, new string) {
	t.Helper()
	p := filepath.Join(root, file)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s does not contain %q", file, old)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Every check fails on a mistake planted in a copy of the files, and its
// message names the mistake.
func TestPlantedMistakesFail(t *testing.T) {
	type check func(t *testing.T, root string) error
	compose := func(t *testing.T, root string) error {
		return checkCompose(t, filepath.Join(root, "deploy/compose.yaml"))
	}
	kube := func(dir string) check {
		return func(t *testing.T, root string) error {
			_, err := checkKustomize(t, filepath.Join(root, "deploy/kubernetes", dir))
			return err
		}
	}
	tree := func(t *testing.T, root string) error {
		_, err := vocab.CheckTree(filepath.Join(root, "deploy"), filepath.Join(root, "deploy/deploycheck"))
		return err
	}
	for _, c := range []struct {
		name, file, old, new string
		check                check
		want                 string
	}{
		{"compose: misspelled CHOM_ variable", "deploy/compose.yaml", "CHOM_WORKER_CONCURRENCY:", "CHOM_WORKER_CONCURENCY:", compose, "CHOM_WORKER_CONCURENCY is not a CHOM setting"},
		{"compose: unknown flag", "deploy/compose.yaml", "command: [worker]", "command: [worker, --concurrency, \"20\"]", compose, "unknown flag -concurrency"},
		{"compose: unknown subcommand", "deploy/compose.yaml", "command: [relay]", "command: [relayer]", compose, `unknown subcommand "relayer"`},
		{"compose: unknown service key", "deploy/compose.yaml", "  stop_grace_period: 45s", "  stop_grace_periode: 45s", compose, "stop_grace_periode"},
		{"compose: stop grace shorter than the shutdown timeout", "deploy/compose.yaml", "stop_grace_period: 45s", "stop_grace_period: 20s", compose, "not longer than CHOM_SHUTDOWN_TIMEOUT"},
		{"compose: a mounted file missing", "deploy/compose.yaml", "./compose/prometheus.yml:", "./compose/prometheus.yaml:", compose, "bind mount source"},
		{"compose: no scrape job for a service", "deploy/compose/prometheus.yml", "job_name: chom-relay", "job_name: relay", compose, "no job chom-relay"},
		{"kubernetes: unknown field in a Deployment", "deploy/kubernetes/base/worker.yaml", "      terminationGracePeriodSeconds: 45", "      terminationGracePeriod: 45", kube("base"), `unknown field "spec.template.spec.terminationGracePeriod"`},
		{"kubernetes: misspelled variable in the ConfigMap", "deploy/kubernetes/base/chom.env", "CHOM_DB_MAX_CONNS=", "CHOM_DB_MAX_CONN=", kube("base"), "CHOM_DB_MAX_CONN is not a CHOM setting"},
		{"kubernetes: unknown flag", "deploy/kubernetes/base/scheduler.yaml", "args: [scheduler]", "args: [scheduler, --once]", kube("base"), "unknown flag -once"},
		{"kubernetes: bad migrate argument", "deploy/kubernetes/base/migrate-job.yaml", "args: [migrate, up]", "args: [migrate, upgrade]", kube("base"), `"upgrade" is not one of up|down|status`},
		{"kubernetes: grace not longer than the shutdown timeout", "deploy/kubernetes/base/relay.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 30", kube("base"), "not longer than CHOM_SHUTDOWN_TIMEOUT"},
		{"kubernetes: grace without room for the preStop pause", "deploy/kubernetes/base/ingress.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 32", kube("base"), "plus the 5s pre-stop pause"},
		{"kubernetes: secret setting in the ConfigMap", "deploy/kubernetes/overlays/production/chom.env", "CHOM_S3_REGION=", "CHOM_REDIS_URL=redis://redis:6379/0\nCHOM_S3_REGION=", kube("overlays/production"), "CHOM_REDIS_URL is a secret setting"},
		{"kubernetes: writable root filesystem", "deploy/kubernetes/base/billing-consumer.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", kube("base"), "readOnlyRootFilesystem must be true"},
		{"kubernetes: a capability kept", "deploy/kubernetes/base/ingress.yaml", "capabilities: {drop: [ALL]}", "capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}", kube("base"), "capabilities must drop ALL"},
		{"kubernetes: probe on the wrong port", "deploy/kubernetes/base/chom.env", "CHOM_METRICS_LISTEN=:9464", "CHOM_METRICS_LISTEN=:9465", kube("base"), `the process listens on ":9465"`},
		{"kubernetes: a setting the loader refuses", "deploy/kubernetes/base/chom.env", "CHOM_DRIVER=ssh", "CHOM_DRIVER=docker", kube("base"), "CHOM_DRIVER=\"docker\": want local or ssh"},
		{"keda: bad trigger field", "deploy/kubernetes/base/worker-scaledobject.yaml", "      metadata:\n", "      metdata:\n", kube("base"), "metdata"},
		{"keda: misspelled scaler metadata key", "deploy/kubernetes/base/worker-scaledobject.yaml", "threshold: \"16\"", "treshold: \"16\"", kube("base"), `reads no "treshold"`},
		{"keda: metric CHOM does not export", "deploy/kubernetes/overlays/production/worker-scaling.yaml", "chom_queue_jobs_active)", "chom_queue_jobs_running)", kube("overlays/production"), "chom_queue_jobs_running, which CHOM does not export"},
		{"keda: wrong type in the spec", "deploy/kubernetes/base/worker-scaledobject.yaml", "maxReplicaCount: 8", "maxReplicaCount: twenty", kube("base"), "maxReplicaCount"},
		{"keda: scaling a Deployment that does not exist", "deploy/kubernetes/base/worker-scaledobject.yaml", "    name: chom-worker\n", "    name: chom-workers\n", kube("base"), `scaleTargetRef  "chom-workers"`},
		{"kubernetes: more pods than PostgreSQL connections", "deploy/kubernetes/overlays/production/worker-scaling.yaml", "maxReplicaCount: 8", "maxReplicaCount: 40", kube("overlays/production"), "more than the 297 that max_connections=300 leaves"},
		{"compose: a fixed container name on the scaled workers", "deploy/compose.yaml", "    command: [worker]\n", "    command: [worker]\n    container_name: chom-worker\n", compose, "stops `--scale worker=N`"},
		{"compose: waiting for a health check that does not exist", "deploy/compose.yaml", "      test: [CMD, redis-cli, ping]\n", "      disable: true\n", compose, "waits for redis to be healthy, which has no health check"},
		{"compose: waiting for a one-shot that restarts", "deploy/compose.yaml", "    command: [migrate, up]\n    restart: \"no\"", "    command: [migrate, up]\n    restart: on-failure", compose, "waits for migrate to complete, which restarts"},
		{"kubernetes: a PodDisruptionBudget selecting nothing", "deploy/kubernetes/base/pdb.yaml", "app.kubernetes.io/component: relay}", "app.kubernetes.io/component: relays}", kube("base"), "PodDisruptionBudget chom-relay: selector"},
		{"kubernetes: a NetworkPolicy selecting nothing", "deploy/kubernetes/base/networkpolicy.yaml", "values: [relay, billing-consumer]", "values: [relay-0, billing]", kube("base"), "NetworkPolicy chom-to-kafka: selector"},
		{"kubernetes: the Service selecting nothing", "deploy/kubernetes/base/ingress.yaml", "  selector:\n    app.kubernetes.io/name: chom\n    app.kubernetes.io/component: ingress", "  selector:\n    app.kubernetes.io/name: chom\n    app.kubernetes.io/component: api", kube("base"), "Service chom-ingress: selector"},
		{"systemd: unknown subcommand", "deploy/systemd/chom-worker@.service", "chom worker", "chom wroker", tree, `unknown subcommand "wroker"`},
		{"env file: misspelled variable", "deploy/chom.env.example", "CHOM_LOG_LEVEL=", "CHOM_LOGLEVEL=", tree, "CHOM_LOGLEVEL is not a CHOM setting (internal/stack/settings.go); did you mean CHOM_LOG_LEVEL?"},
		{"any file: misspelled variable in a comment", "deploy/README.md", "`CHOM_SHUTDOWN_TIMEOUT`", "`CHOM_SHUTDOWN_TIMOUT`", tree, "CHOM_SHUTDOWN_TIMOUT is not a CHOM setting"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			root := copyTree(t)
			if err := c.check(t, root); err != nil {
				t.Fatalf("the unchanged copy fails: %v", err)
			}
			plant(t, root, c.file, c.old, c.new)
			err := c.check(t, root)
			switch {
			case err == nil:
				t.Fatalf("planted %q → %q in %s: no check failed", c.old, c.new, c.file)
			case !strings.Contains(err.Error(), c.want):
				t.Fatalf("planted %q → %q in %s: failed with %v; want it to say %q", c.old, c.new, c.file, err, c.want)
			}
			t.Logf("planted in %s: %q → %q; caught: %s", c.file, c.old, c.new, firstLine(err.Error()))
		})
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
