package deploycheck_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/chomhq/chom/deploy/deploycheck"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/metrics"
)

// vocab is the names of the chom binary TestMain builds and of the settings
// table; keda the KEDA module's directory.
var (
	vocab *deploycheck.Vocabulary
	keda  string
)

// TestMain builds cmd/chom (its --help is the command table) and fetches the
// KEDA module once for every test.
func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploycheck:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "deploycheck-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	bin, err := testenv.BuildChom(dir, false)
	if err != nil {
		return 0, err
	}
	built := time.Since(start)
	if err := noDeployModules(bin); err != nil {
		return 0, err
	}
	vocab, err = deploycheck.LoadVocabulary(func(args ...string) (string, error) {
		out, err := exec.Command(bin, args...).Output()
		return string(out), err
	})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if keda, err = deploycheck.DownloadKEDA(ctx); err != nil {
		return 0, err
	}
	fmt.Fprintf(os.Stderr, "deploycheck: built chom in %s, %d commands; KEDA %s in %s\n",
		built.Round(time.Millisecond), len(vocab.Commands), deploycheck.KEDAVersion, keda)
	return m.Run(), nil
}

// The vocabulary holds what the binary's help says, or every check below
// would pass for want of names.
func TestVocabularyComesFromTheBinary(t *testing.T) {
	for _, c := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"worker"}, true},
		{[]string{"migrate", "up"}, true},
		{[]string{"dev", "--data-dir", "/x", "--listen=:1"}, true},
		{[]string{"token", "create", "--tenant", "a", "--scope", "ops"}, true},
		{[]string{"token", "revoke", "tok_1"}, true},
		{[]string{"migrate"}, false},
		{[]string{"migrate", "sideways"}, false},
		{[]string{"ingress", "extra"}, false},
		{[]string{"worker", "--bogus"}, false},
		{[]string{"token"}, false},
		{[]string{"token", "frobnicate"}, false},
		{[]string{"wroker"}, false},
	} {
		if err := vocab.CheckArgs(c.args); (err == nil) != c.ok {
			t.Errorf("CheckArgs(%q) = %v, want ok=%v", c.args, err, c.ok)
		}
	}
}

// repoPath is a path from the repository root.
func repoPath(p string) string { return filepath.Join("..", "..", p) }

func checkCompose(t *testing.T, path string) error {
	t.Helper()
	p, err := deploycheck.LoadCompose(t.Context(), path)
	if err != nil {
		return err
	}
	if err := vocab.CheckCompose(p); err != nil {
		return err
	}
	// Prometheus: its configuration loads (strictly, as Prometheus does), its
	// jobs are the ones TargetDown watches, and its rule files, read through
	// the service's mounts, are CHOM's.
	prom, ok := p.Services["prometheus"]
	if !ok {
		return fmt.Errorf("compose: no prometheus service")
	}
	mounts := map[string]string{}
	for _, v := range prom.Volumes {
		mounts[v.Target] = v.Source
	}
	cfgFile, ok := mounts["/etc/prometheus/prometheus.yml"]
	if !ok {
		return fmt.Errorf("compose: prometheus mounts no /etc/prometheus/prometheus.yml")
	}
	raw, err := os.ReadFile(cfgFile)
	if err != nil {
		return err
	}
	var cfg struct {
		RuleFiles     []string `json:"rule_files"`
		ScrapeConfigs []struct {
			JobName string `json:"job_name"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("prometheus config %s: %w", cfgFile, err)
	}
	jobs := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		jobs[sc.JobName] = true
	}
	for _, name := range p.ServiceNames() {
		if strings.HasPrefix(p.Services[name].Image, deploycheck.Image) && name != "migrate" && !jobs["chom-"+name] {
			return fmt.Errorf("prometheus config: no job chom-%s scrapes compose service %s", name, name)
		}
	}
	rules := 0
	for _, rf := range cfg.RuleFiles {
		for target, source := range mounts {
			if rest, ok := strings.CutPrefix(rf, target+"/"); ok {
				m, _ := filepath.Glob(filepath.Join(source, rest))
				rules += len(m)
			}
		}
	}
	if rules == 0 {
		return fmt.Errorf("prometheus config: rule_files %q match no mounted file", cfg.RuleFiles)
	}
	return nil
}

func TestCompose(t *testing.T) {
	start := time.Now()
	if err := checkCompose(t, repoPath("deploy/compose.yaml")); err != nil {
		t.Fatal(err)
	}
	// Prometheus's own check of the configuration (promtool, as
	// dashboards_test.go runs it): skipped without promtool, failed under CI.
	promtool, err := exec.LookPath("promtool")
	switch {
	case err == nil:
		if out, err := exec.CommandContext(t.Context(), promtool, "check", "config", "--syntax-only", repoPath("deploy/compose/prometheus.yml")).CombinedOutput(); err != nil {
			t.Errorf("promtool check config deploy/compose/prometheus.yml: %v\n%s", err, out)
		}
	case os.Getenv("CI") != "":
		t.Fatalf("promtool not on PATH and CI=%q: install the Debian package prometheus (.ci/run does)", os.Getenv("CI"))
	default:
		t.Log("promtool not on PATH: prometheus.yml checked by its structure only")
	}
	t.Logf("deploy/compose.yaml: loaded with compose-go and checked in %s", time.Since(start).Round(time.Millisecond))
}

// checkKustomize builds dir and runs every Kubernetes check on it.
func checkKustomize(t *testing.T, dir string) ([]deploycheck.Object, error) {
	t.Helper()
	objs, err := deploycheck.Build(dir)
	if err != nil {
		return nil, err
	}
	custom, err := deploycheck.DecodeStrict(objs)
	if err != nil {
		return nil, err
	}
	crd, err := deploycheck.LoadCRD(filepath.Join(keda, "config", "crd", "bases", "keda.sh_scaledobjects.yaml"), "v1alpha1")
	if err != nil {
		return nil, err
	}
	for _, o := range custom {
		if o.Kind != crd.Kind || !strings.HasPrefix(o.APIVersion, crd.Group+"/") {
			return nil, fmt.Errorf("%s %s (%s): %w", o.Kind, o.Name, o.APIVersion, deploycheck.ErrUnknownKind)
		}
	}
	promKeys, err := deploycheck.ScalerKeys(keda, "prometheus")
	if err != nil {
		return nil, err
	}
	rules := deploycheck.ScaledObjectRules{ScalerKeys: map[string][]string{"prometheus": promKeys}, Metrics: metrics.New().Names()}
	if err := crd.CheckScaledObjects(objs, rules); err != nil {
		return nil, err
	}
	if err := vocab.CheckKubernetes(objs); err != nil {
		return nil, err
	}
	if err := deploycheck.CheckSelectors(objs); err != nil {
		return nil, err
	}
	// The connection budget holds against the PostgreSQL settings CHOM ships
	// (deploy/postgresql.conf, beside the kubernetes directory).
	deployDir, _, _ := strings.Cut(filepath.ToSlash(dir), "/kubernetes/")
	conf, err := os.ReadFile(filepath.Join(deployDir, "postgresql.conf"))
	if err != nil {
		return nil, err
	}
	maxConns, err := deploycheck.MaxConnections(conf)
	if err != nil {
		return nil, err
	}
	return objs, deploycheck.CheckBudget(objs, maxConns)
}

func TestKubernetes(t *testing.T) {
	for _, dir := range []string{"base", "overlays/production"} {
		start := time.Now()
		objs, err := checkKustomize(t, repoPath("deploy/kubernetes/"+dir))
		if err != nil {
			t.Fatalf("deploy/kubernetes/%s: %v", dir, err)
		}
		kinds := map[string]int{}
		for _, o := range objs {
			kinds[o.Kind]++
		}
		if kinds["ScaledObject"] != 1 || kinds["Deployment"] != 5 || kinds["Job"] != 1 {
			t.Errorf("deploy/kubernetes/%s: %v; want 5 Deployments, 1 Job, 1 ScaledObject", dir, kinds)
		}
		t.Logf("deploy/kubernetes/%s: %d objects %v built and checked in %s", dir, len(objs), kinds, time.Since(start).Round(time.Millisecond))
		total, shares, err := deploycheck.ConnectionBudget(objs)
		if err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, s := range shares {
			parts = append(parts, fmt.Sprintf("%s %d×%d", s.Workload, s.Pods, s.PerPod))
		}
		t.Logf("deploy/kubernetes/%s: at most %d PostgreSQL connections at full scale (%s)", dir, total, strings.Join(parts, ", "))
	}
}

// TestDeployTree checks every file under deploy/: systemd units, env files,
// the Dockerfile, and every CHOM_* name in any file, comments included.
func TestDeployTree(t *testing.T) {
	n, err := vocab.CheckTree(repoPath("deploy"), repoPath("deploy/deploycheck"))
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("checked %d files under deploy/, want the whole tree", n)
	}
	t.Logf("%d files under deploy/ name only known settings and commands", n)
}

// noDeployModules fails when the chom binary links a module only deploycheck
// should: the validation libraries stay out of the product.
func noDeployModules(bin string) error {
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		return fmt.Errorf("go version -m %s: %w", bin, err)
	}
	if !strings.Contains(string(out), "\tdep\t") {
		return fmt.Errorf("go version -m %s lists no dependency:\n%s", bin, out)
	}
	return linkedDeployModule(string(out))
}

// linkedDeployModule reads `go version -m` output.
func linkedDeployModule(out string) error {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || (f[0] != "dep" && f[0] != "=>") {
			continue
		}
		for _, m := range []string{"k8s.io/", "sigs.k8s.io/", "github.com/compose-spec/", "github.com/kedacore/"} {
			if strings.HasPrefix(f[1], m) {
				return fmt.Errorf("the chom binary links %s (go version -m): deployment checks must stay in tests", f[1])
			}
		}
	}
	return nil
}

// A Dockerfile's chom command lines and CHOM_* variables are checked; the
// build stage's toolchain variables are not chom's.
func TestDockerfile(t *testing.T) {
	good := `FROM golang:1.26 AS build
ENV CGO_ENABLED=0 GOOS=linux
RUN go build -o /chom ./cmd/chom
FROM scratch
ENV CHOM_LOG_FORMAT=json
ENTRYPOINT ["/chom"]
CMD ["ingress"]
HEALTHCHECK --interval=10s CMD ["/chom", "version"]
`
	if err := vocab.CheckDockerfile("Dockerfile", []byte(good)); err != nil {
		t.Fatalf("a good Dockerfile: %v", err)
	}
	for _, c := range []struct{ old, new, want string }{
		{`CMD ["ingress"]`, `CMD ["ingres"]`, `unknown subcommand "ingres"`},
		{`CMD ["/chom", "version"]`, `CMD ["/chom", "version", "--short"]`, "unknown flag -short"},
		{`CHOM_LOG_FORMAT=json`, `CHOM_LOGFORMAT=json`, "CHOM_LOGFORMAT is not a CHOM setting"},
	} {
		bad := strings.Replace(good, c.old, c.new, 1)
		err := vocab.CheckDockerfile("Dockerfile", []byte(bad))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("planted %q → %q: %v, want %q", c.old, c.new, err, c.want)
			continue
		}
		t.Logf("planted in a Dockerfile: %q → %q; caught: %v", c.old, c.new, err)
	}
}

// The binary check can fail: a build that linked k8s.io/api is refused.
func TestLinkedDeployModuleIsRefused(t *testing.T) {
	out := "/tmp/chom: go1.26.11\n\tpath\tgithub.com/chomhq/chom/cmd/chom\n\tdep\tgithub.com/hibiken/asynq\tv0.26.0\th1:x=\n\tdep\tk8s.io/api\tv0.37.2\th1:y=\n"
	err := linkedDeployModule(out)
	if err == nil || !strings.Contains(err.Error(), "k8s.io/api") {
		t.Fatalf("%v, want k8s.io/api refused", err)
	}
	if err := linkedDeployModule(strings.Replace(out, "k8s.io/api", "golang.org/x/net", 1)); err != nil {
		t.Fatalf("a binary without deployment modules: %v", err)
	}
	t.Logf("caught: %v", err)
}
