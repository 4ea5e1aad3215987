package deploycheck

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/chomhq/chom/internal/stack"
)

// Image is the repository of CHOM's image: a container running it runs chom,
// its arguments being a chom command line.
const Image = "ghcr.io/chomhq/chom"

// isChomImage reports whether image (with a tag or digest) is CHOM's.
func isChomImage(image string) bool {
	return image == Image || strings.HasPrefix(image, Image+":") || strings.HasPrefix(image, Image+"@")
}

// LoadCompose loads a compose file with compose-go, as `docker compose config`
// does: the compose specification's JSON schema (an unknown key fails),
// interpolation, extension fields and merges, relative paths resolved.
func LoadCompose(ctx context.Context, path string) (*types.Project, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	p, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("chom", true) })
	if err != nil {
		return nil, fmt.Errorf("compose %s: %w", path, err)
	}
	return p, nil
}

// placeholderSecret stands for a value kept in a Kubernetes Secret when the
// configuration is loaded: long enough for CHOM_BACKUP_SIGNING_KEY.
const placeholderSecret = "secret-from-a-kubernetes-secret-0123456789"

// CheckCompose checks a loaded compose project against v: the chom services'
// commands and variables, that their environment loads (stack.LoadConfig),
// that bind mounts exist, and that stop_grace_period outlasts
// CHOM_SHUTDOWN_TIMEOUT.
func (v *Vocabulary) CheckCompose(p *types.Project) error {
	var errs []error
	for _, name := range p.ServiceNames() {
		s := p.Services[name]
		for dep, d := range s.DependsOn {
			ds, ok := p.Services[dep]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("compose service %s: depends on %s, which is not a service", name, dep))
			case d.Condition == types.ServiceConditionHealthy && (ds.HealthCheck == nil || ds.HealthCheck.Disable) && !isChomImage(ds.Image):
				// (a chom service's health check is the image's HEALTHCHECK)
				errs = append(errs, fmt.Errorf("compose service %s: waits for %s to be healthy, which has no health check", name, dep))
			case d.Condition == types.ServiceConditionCompletedSuccessfully && ds.Restart != "" && ds.Restart != "no":
				errs = append(errs, fmt.Errorf("compose service %s: waits for %s to complete, which restarts (%s)", name, dep, ds.Restart))
			}
		}
		for _, vol := range s.Volumes {
			if vol.Type == types.VolumeTypeBind {
				if _, err := os.Stat(vol.Source); err != nil {
					errs = append(errs, fmt.Errorf("compose service %s: bind mount source: %w", name, err))
				}
			}
		}
		if !isChomImage(s.Image) {
			continue
		}
		if len(s.Entrypoint) > 0 && !IsChom(s.Entrypoint[0]) {
			errs = append(errs, fmt.Errorf("compose service %s: entrypoint %q is not chom", name, s.Entrypoint))
		}
		if err := v.CheckArgs(s.Command); err != nil {
			errs = append(errs, fmt.Errorf("compose service %s: %w", name, err))
		}
		if len(s.Command) > 0 && s.Command[0] == "worker" && (s.ContainerName != "" || len(s.Ports) > 0) {
			errs = append(errs, fmt.Errorf("compose service %s: a container name or a published port stops `--scale %s=N`", name, name))
		}
		env := map[string]string{}
		for k, val := range s.Environment {
			if err := v.CheckEnv(k); err != nil {
				errs = append(errs, fmt.Errorf("compose service %s: %w", name, err))
			}
			if val != nil {
				env[k] = *val
			}
		}
		if err := v.checkLoads(env); err != nil {
			errs = append(errs, fmt.Errorf("compose service %s: %w", name, err))
		}
		if err := v.checkGrace(env, durationOf(s.StopGracePeriod), 0); err != nil {
			errs = append(errs, fmt.Errorf("compose service %s: stop_grace_period: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func durationOf(d *types.Duration) time.Duration {
	if d == nil {
		return 10 * time.Second // Docker's default
	}
	return time.Duration(*d)
}

// checkLoads runs the configuration loader over env, as the process would.
func (v *Vocabulary) checkLoads(env map[string]string) error {
	if _, err := stack.LoadConfig(func(k string) string { return env[k] }); err != nil {
		return fmt.Errorf("its environment does not load: %w", err)
	}
	return nil
}

// checkGrace checks that grace outlasts pause plus the process's
// CHOM_SHUTDOWN_TIMEOUT, else the kill would cut its drain short.
func (v *Vocabulary) checkGrace(env map[string]string, grace, pause time.Duration) error {
	c, err := stack.LoadConfig(func(k string) string { return env[k] })
	if err != nil && c.ShutdownTimeout == 0 {
		return err
	}
	if grace <= pause+c.ShutdownTimeout {
		return fmt.Errorf("%s is not longer than CHOM_SHUTDOWN_TIMEOUT (%s) plus the %s pre-stop pause", grace, c.ShutdownTimeout, pause)
	}
	return nil
}

// CheckKubernetes checks the typed objects of a kustomize build (DecodeStrict
// filled them): every container running CHOM's image has a known command line
// and variables, takes Secret settings from Secrets only, loads its
// configuration, outlasts CHOM_SHUTDOWN_TIMEOUT on termination, runs
// non-root on a read-only root filesystem with every capability dropped and
// the RuntimeDefault seccomp profile, and probes the port it serves.
func (v *Vocabulary) CheckKubernetes(objs []Object) error {
	configMaps := map[string]map[string]string{}
	for _, o := range objs {
		if cm, ok := o.Typed.(*corev1.ConfigMap); ok {
			configMaps[cm.Name] = cm.Data
		}
	}
	var errs []error
	for _, o := range objs {
		var spec *corev1.PodSpec
		switch t := o.Typed.(type) {
		case *appsv1.Deployment:
			spec = &t.Spec.Template.Spec
		case *batchv1.Job:
			spec = &t.Spec.Template.Spec
		case *corev1.ConfigMap:
			for k := range t.Data {
				if err := v.CheckEnv(k); err != nil {
					errs = append(errs, fmt.Errorf("ConfigMap %s: %w", t.Name, err))
				} else if s := v.Settings[k]; s.Secret {
					errs = append(errs, fmt.Errorf("ConfigMap %s: %s is a secret setting: take it from a Secret", t.Name, k))
				}
			}
			continue
		default:
			continue
		}
		for _, c := range spec.Containers {
			if !isChomImage(c.Image) {
				continue
			}
			where := fmt.Sprintf("%s %s container %s", o.Kind, o.Name, c.Name)
			if err := v.checkContainer(c, spec, configMaps); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (v *Vocabulary) checkContainer(c corev1.Container, spec *corev1.PodSpec, configMaps map[string]map[string]string) error {
	var errs []error
	if len(c.Command) > 0 && (len(c.Command) != 1 || !IsChom(c.Command[0])) {
		errs = append(errs, fmt.Errorf("command %q replaces the chom entrypoint", c.Command))
	}
	if err := v.CheckArgs(c.Args); err != nil {
		errs = append(errs, err)
	}
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			errs = append(errs, errors.New("envFrom other than a ConfigMap: its variables cannot be checked"))
			continue
		}
		data, ok := configMaps[ef.ConfigMapRef.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("envFrom ConfigMap %s is not in the build", ef.ConfigMapRef.Name))
		}
		for k, val := range data {
			env[k] = val
		}
	}
	for _, e := range c.Env {
		if err := v.CheckEnv(e.Name); err != nil {
			errs = append(errs, err)
		}
		fromSecret := e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
		if s, ok := v.Settings[e.Name]; ok && s.Secret && !fromSecret {
			errs = append(errs, fmt.Errorf("%s is a secret setting: take it from a Secret (valueFrom.secretKeyRef)", e.Name))
		}
		switch {
		case fromSecret && e.ValueFrom.SecretKeyRef.Optional != nil && *e.ValueFrom.SecretKeyRef.Optional:
			delete(env, e.Name) // absent unless the operator sets it
		case fromSecret:
			env[e.Name] = placeholderSecret
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		}
	}
	if err := v.checkLoads(env); err != nil {
		errs = append(errs, err)
	}
	var pause time.Duration
	if l := c.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		pause = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	grace := 30 * time.Second // Kubernetes' default
	if spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	if err := v.checkGrace(env, grace, pause); err != nil {
		errs = append(errs, fmt.Errorf("terminationGracePeriodSeconds: %w", err))
	}
	errs = append(errs, checkSecurity(c, spec)...)
	errs = append(errs, checkProbes(c, env)...)
	return errors.Join(errs...)
}

func checkSecurity(c corev1.Container, spec *corev1.PodSpec) []error {
	var errs []error
	ps, cs := spec.SecurityContext, c.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
		errs = append(errs, errors.New("the pod must set runAsNonRoot and a non-zero runAsUser"))
	}
	if ps == nil || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		errs = append(errs, errors.New("the pod must use the RuntimeDefault seccomp profile"))
	}
	if cs == nil || cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem {
		errs = append(errs, errors.New("readOnlyRootFilesystem must be true"))
	}
	if cs == nil || cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation {
		errs = append(errs, errors.New("allowPrivilegeEscalation must be false"))
	}
	if cs == nil || cs.Capabilities == nil || len(cs.Capabilities.Drop) != 1 || cs.Capabilities.Drop[0] != "ALL" || len(cs.Capabilities.Add) > 0 {
		errs = append(errs, errors.New("capabilities must drop ALL and add none"))
	}
	return errs
}

// checkProbes checks that each HTTP probe targets the port the process
// serves: CHOM_LISTEN for the ingress, CHOM_METRICS_LISTEN for the others.
func checkProbes(c corev1.Container, env map[string]string) []error {
	listen := env["CHOM_METRICS_LISTEN"]
	if len(c.Args) > 0 && c.Args[0] == "ingress" {
		listen = env["CHOM_LISTEN"]
	}
	_, want, _ := net.SplitHostPort(listen)
	var errs []error
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if p == nil || p.HTTPGet == nil {
			continue
		}
		port := p.HTTPGet.Port.String()
		for _, cp := range c.Ports {
			if cp.Name == port {
				port = fmt.Sprint(cp.ContainerPort)
			}
		}
		if port != want {
			errs = append(errs, fmt.Errorf("%s probe on port %s; the process listens on %q", name, port, listen))
		}
	}
	return errs
}

// CheckSystemd checks a systemd unit: chom command lines of its Exec*= lines
// and the variables of its Environment= lines.
func (v *Vocabulary) CheckSystemd(path string, data []byte) error {
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		key, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(key, "#") || strings.HasPrefix(key, ";") {
			continue
		}
		switch {
		case strings.HasPrefix(key, "Exec"):
			f := strings.Fields(strings.TrimLeft(val, "-@:+!"))
			if len(f) > 0 && IsChom(f[0]) {
				if err := v.CheckArgs(f[1:]); err != nil {
					errs = append(errs, fmt.Errorf("%s:%d: %w", path, n, err))
				}
			}
		case key == "Environment":
			for _, kv := range strings.Fields(val) {
				name, _, _ := strings.Cut(strings.Trim(kv, `"`), "=")
				if err := v.CheckEnv(name); err != nil {
					errs = append(errs, fmt.Errorf("%s:%d: %w", path, n, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// CheckEnvFile checks an environment file (chom.env.example): every
// assignment, commented out or not, names a variable chom reads.
func (v *Vocabulary) CheckEnvFile(path string, data []byte) error {
	var errs []error
	assign := regexp.MustCompile(`^#?\s*([A-Z][A-Z0-9_]*)=`)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		if m := assign.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
			if err := v.CheckEnv(m[1]); err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: %w", path, n, err))
			}
		}
	}
	return errors.Join(errs...)
}

// CheckDockerfile checks the chom command lines of a Dockerfile's exec-form
// ENTRYPOINT, CMD and HEALTHCHECK instructions and the variables of its ENV
// instructions (CHOM_* ones). CMD is checked as chom's arguments when
// ENTRYPOINT is chom.
func (v *Vocabulary) CheckDockerfile(path string, data []byte) error {
	var errs []error
	entrypointChom := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		instr, rest, _ := strings.Cut(line, " ")
		argv := func(s string) []string {
			var a []string
			if i := strings.Index(s, "["); i >= 0 && json.Unmarshal([]byte(s[i:]), &a) == nil {
				return a
			}
			return strings.Fields(s)
		}
		check := func(a []string) {
			if len(a) > 0 && IsChom(a[0]) && len(a) > 1 {
				if err := v.CheckArgs(a[1:]); err != nil {
					errs = append(errs, fmt.Errorf("%s:%d: %w", path, n, err))
				}
			}
		}
		switch strings.ToUpper(instr) {
		case "ENTRYPOINT":
			a := argv(rest)
			entrypointChom = len(a) > 0 && IsChom(a[0])
			check(a)
		case "CMD":
			a := argv(rest)
			if entrypointChom && len(a) > 0 && !IsChom(a[0]) {
				a = append([]string{"chom"}, a...)
			}
			check(a)
		case "HEALTHCHECK":
			if _, c, ok := strings.Cut(rest, "CMD "); ok {
				check(argv(c))
			}
		case "ENV":
			// Build stages set the toolchain's variables (CGO_ENABLED, GOOS):
			// only CHOM_* names are chom's to check here.
			for _, kv := range strings.Fields(rest) {
				if name, _, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(name, "CHOM_") {
					if err := v.CheckEnv(name); err != nil {
						errs = append(errs, fmt.Errorf("%s:%d: %w", path, n, err))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// chomName is a CHOM_* name in any text; a trailing * makes it a prefix
// (CHOM_HEALTH_*).
var chomName = regexp.MustCompile(`\bCHOM_[A-Z0-9_]*[A-Z0-9]\*?`)

// CheckText reports every CHOM_* name in text (comments included) that is
// not a setting; NAME_* must be the prefix of one.
func (v *Vocabulary) CheckText(path string, data []byte) error {
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		for _, name := range chomName.FindAllString(sc.Text(), -1) {
			if prefix, ok := strings.CutSuffix(name, "*"); ok {
				found := false
				for s := range v.Settings {
					found = found || strings.HasPrefix(s, prefix)
				}
				if !found {
					errs = append(errs, fmt.Errorf("%s:%d: no setting starts with %s", path, n, prefix))
				}
				continue
			}
			if err := v.CheckEnv(name); err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: %w", path, n, err))
			}
		}
	}
	return errors.Join(errs...)
}

// CheckTree runs the file checks over every file under root but skip: the
// text check on each, and the systemd, env-file and Dockerfile checks on the
// files they apply to. It returns how many files it read.
func (v *Vocabulary) CheckTree(root string, skip ...string) (int, error) {
	var errs []error
	files := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, s := range skip {
			if p == s {
				return filepath.SkipDir
			}
		}
		if d.IsDir() || strings.HasSuffix(p, ".go") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		errs = append(errs, v.CheckText(p, data))
		base := filepath.Base(p)
		switch {
		case strings.HasSuffix(base, ".service") || strings.HasSuffix(base, ".socket") || strings.HasSuffix(base, ".timer"):
			errs = append(errs, v.CheckSystemd(p, data))
		case strings.HasSuffix(base, ".env") || strings.HasSuffix(base, ".env.example"):
			errs = append(errs, v.CheckEnvFile(p, data))
		case base == "Dockerfile" || strings.HasSuffix(base, ".Dockerfile"):
			errs = append(errs, v.CheckDockerfile(p, data))
		}
		return nil
	})
	if err != nil {
		return files, err
	}
	return files, errors.Join(errs...)
}
