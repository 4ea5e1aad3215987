package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/chomhq/chom/drivers"
)

var _ drivers.Provisioner = (*Provisioner)(nil)

// Progress reported after each step of Provision.
const (
	progressSiteRoot    = 20
	progressIndexPage   = 40
	progressPHPPool     = 60
	progressNginxConfig = 80
	progressReload      = 100
)

const (
	dirPerm  fs.FileMode = 0o755
	filePerm fs.FileMode = 0o644
)

// Config configures a Provisioner.
type Config struct {
	// Root is the directory that holds one sub-directory per VPS. It must be an
	// absolute path made of [A-Za-z0-9._+-] elements, because it is written into
	// nginx and php-fpm files. It is created on first use.
	Root string
	// Logger is required.
	Logger *slog.Logger
}

// Validate reports every problem with c at once, or nil.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Root == "":
		errs = append(errs, errors.New("root is required"))
	case !filepath.IsAbs(c.Root):
		errs = append(errs, fmt.Errorf("root %q must be an absolute path", c.Root))
	case filepath.Clean(c.Root) == "/":
		errs = append(errs, errors.New("root must not be /"))
	case !pathPattern.MatchString(filepath.Clean(c.Root)):
		errs = append(errs, fmt.Errorf("root %q may only contain the characters A-Z a-z 0-9 . _ + - and /", c.Root))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("logger is required"))
	}
	return errors.Join(errs...)
}

// Provisioner puts sites into directories under Config.Root. It is safe for
// concurrent use; operations on the same server are serialised within one
// Provisioner (not across processes, where atomic writes keep each file whole).
type Provisioner struct {
	root   string
	logger *slog.Logger

	locks drivers.ServerLocks // one change at a time per server
}

// New returns a Provisioner for cfg, or an error naming every problem with cfg.
func New(cfg Config) (*Provisioner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("local: invalid config: %w", err)
	}
	return &Provisioner{
		root:   filepath.Clean(cfg.Root),
		logger: cfg.Logger,
	}, nil
}

// sitePaths are the absolute paths of one site's files, each checked to lie inside
// the server directory.
type sitePaths struct {
	server       string // <Root>/<server-id>
	siteDir      string // sites/<domain>
	docRoot      string // sites/<domain>/public
	logDir       string // sites/<domain>/logs
	tmpDir       string // sites/<domain>/tmp
	indexPage    string // sites/<domain>/public/index.html|index.php
	runDir       string // run
	socket       string // run/php-<user>.sock
	nginxDir     string // nginx/sites-enabled
	nginxConf    string // nginx/sites-enabled/<domain>.conf
	reloadMarker string // nginx/reload-requested
	pool         string // php/<version>/fpm/pool.d/<domain>.conf; empty for html
	allPools     []string
}

func (p *Provisioner) paths(site drivers.SiteSpec) (sitePaths, error) {
	server := filepath.Join(p.root, site.Server.ID)
	user := drivers.SystemUser(site.ID)
	sp := sitePaths{
		server:       server,
		siteDir:      filepath.Join(server, "sites", site.Domain),
		runDir:       filepath.Join(server, "run"),
		socket:       filepath.Join(server, "run", "php-"+user+".sock"),
		nginxDir:     filepath.Join(server, "nginx", "sites-enabled"),
		nginxConf:    filepath.Join(server, "nginx", "sites-enabled", site.Domain+".conf"),
		reloadMarker: filepath.Join(server, "nginx", "reload-requested"),
	}
	sp.docRoot = filepath.Join(sp.siteDir, "public")
	sp.logDir = filepath.Join(sp.siteDir, "logs")
	sp.tmpDir = filepath.Join(sp.siteDir, "tmp")
	index := "index.html"
	if site.UsesPHP() {
		index = "index.php"
	}
	sp.indexPage = filepath.Join(sp.docRoot, index)
	for _, v := range drivers.SupportedPHPVersions() {
		pool := filepath.Join(server, "php", v, "fpm", "pool.d", site.Domain+".conf")
		sp.allPools = append(sp.allPools, pool)
		if v == site.PHPVersion {
			sp.pool = pool
		}
	}

	if !inside(p.root, server) {
		return sitePaths{}, fmt.Errorf("%w: server directory %q is outside %q", drivers.ErrInvalidSpec, server, p.root)
	}
	check := []string{sp.siteDir, sp.docRoot, sp.logDir, sp.tmpDir, sp.indexPage, sp.runDir, sp.socket,
		sp.nginxDir, sp.nginxConf, sp.reloadMarker}
	check = append(check, sp.allPools...)
	for _, path := range check {
		if !inside(server, path) {
			return sitePaths{}, fmt.Errorf("%w: path %q is outside %q", drivers.ErrInvalidSpec, path, server)
		}
	}
	// The site directory is removed recursively by Deprovision: it must be a
	// directory of its own under sites/, never sites/ or the server itself.
	if filepath.Dir(sp.siteDir) != filepath.Join(server, "sites") {
		return sitePaths{}, fmt.Errorf("%w: site directory %q is not directly under sites/", drivers.ErrInvalidSpec, sp.siteDir)
	}
	return sp, nil
}

// inside reports whether path, once cleaned, is strictly below base.
func inside(base, path string) bool {
	rel, err := filepath.Rel(filepath.Clean(base), filepath.Clean(path))
	if err != nil || filepath.IsAbs(rel) {
		return false
	}
	return rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// values are what the templates render for site; with TLS when its
// certificate is deployed (tls/<domain>/ holds a chain, a key and tls.env), so
// a Provision of a TLS site keeps serving it over HTTPS.
func (p *Provisioner) values(site drivers.SiteSpec, sp sitePaths, tp tlsPaths) siteValues {
	return siteValues{
		Aliases:         site.Aliases,
		ChallengeDir:    tp.challenges,
		TLS:             tlsState(tp),
		SiteID:          site.ID,
		TenantID:        site.TenantID,
		Domain:          site.Domain,
		SiteType:        site.SiteType,
		PHPVersion:      site.PHPVersion,
		User:            drivers.SystemUser(site.ID),
		SiteDir:         sp.siteDir,
		DocumentRoot:    sp.docRoot,
		LogDir:          sp.logDir,
		TmpDir:          sp.tmpDir,
		Socket:          sp.socket,
		PHP:             site.UsesPHP(),
		FrontController: site.SiteType == drivers.SiteTypeLaravel || site.SiteType == drivers.SiteTypeWordPress,
	}
}

// Provision creates or converges the site's directories, starter page, php-fpm pool
// and nginx server block, checks the server's nginx configuration and requests a
// reload, calling progress (which may be nil) after each step. It stops at the first
// failure, at an error from progress, or when ctx ends, and returns that error
// wrapped; whatever was written stays, and running Provision again completes it.
//
// Changing the spec's PHP version or site type and provisioning again moves the pool:
// pool files of the site's domain under other PHP versions are removed. The starter
// index page is written only if no index page exists.
func (p *Provisioner) Provision(ctx context.Context, site drivers.SiteSpec, progress drivers.ProgressFunc) (drivers.Result, error) {
	if err := drivers.ValidateSiteSpec(site); err != nil {
		return drivers.Result{}, fmt.Errorf("local: provision: %w", err)
	}
	sp, err := p.paths(site)
	if err != nil {
		return drivers.Result{}, fmt.Errorf("local: provision %s: %w", site.Domain, err)
	}
	tp, err := p.tlsPaths(site, sp)
	if err != nil {
		return drivers.Result{}, fmt.Errorf("local: provision %s: %w", site.Domain, err)
	}
	if progress == nil {
		progress = func(context.Context, drivers.Step) error { return nil }
	}
	if err := checkUp(sp.server); err != nil {
		return drivers.Result{}, fmt.Errorf("local: provision %s: %w", site.Domain, err)
	}
	log := p.logger.With("vps_id", site.Server.ID, "site_id", site.ID, "tenant_id", site.TenantID, "domain", site.Domain)

	unlock, err := p.locks.Lock(ctx, site.Server.ID)
	if err != nil {
		return drivers.Result{}, fmt.Errorf("local: provision %s: wait for server %s: %w", site.Domain, site.Server.ID, err)
	}
	defer unlock()
	// Rendered under the lock, so a concurrent DeployCertificate is seen whole.
	vals := p.values(site, sp, tp)
	files, err := render(vals)
	if err != nil {
		return drivers.Result{}, fmt.Errorf("local: provision %s: %w", site.Domain, err)
	}

	steps := []struct {
		name     string
		progress int
		run      func() (changed bool, err error)
	}{
		{drivers.StepSiteRoot, progressSiteRoot, func() (bool, error) { return p.siteRoot(sp) }},
		{drivers.StepIndexPage, progressIndexPage, func() (bool, error) { return writeIfMissing(sp.indexPage, files.Index) }},
		{drivers.StepPHPPool, progressPHPPool, func() (bool, error) { return p.phpPool(sp, files.Pool) }},
		{drivers.StepNginxConfig, progressNginxConfig, func() (bool, error) { return p.nginxConfig(sp, files.Nginx) }},
		{drivers.StepReload, progressReload, func() (bool, error) { return true, p.reload(sp, vals) }},
	}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return drivers.Result{}, fmt.Errorf("local: provision %s: before step %s: %w", site.Domain, step.name, err)
		}
		changed, err := step.run()
		if err != nil {
			return drivers.Result{}, fmt.Errorf("local: provision %s: step %s: %w", site.Domain, step.name, err)
		}
		log.DebugContext(ctx, "provision step done", "step", step.name, "progress", step.progress, "changed", changed)
		if err := progress(ctx, drivers.Step{Name: step.name, Progress: step.progress}); err != nil {
			return drivers.Result{}, fmt.Errorf("local: provision %s: progress after step %s: %w", site.Domain, step.name, err)
		}
	}
	log.InfoContext(ctx, "site provisioned", "document_root", sp.docRoot)
	return drivers.Result{
		DocumentRoot: sp.docRoot,
		SystemUser:   vals.User,
		NginxConfig:  sp.nginxConf,
		PHPPool:      sp.pool,
	}, nil
}

func (p *Provisioner) siteRoot(sp sitePaths) (bool, error) {
	created := false
	for _, dir := range []string{sp.docRoot, sp.logDir, sp.tmpDir, sp.runDir} {
		if _, err := os.Stat(dir); err == nil {
			continue
		}
		if err := os.MkdirAll(dir, dirPerm); err != nil {
			return false, fmt.Errorf("create %s: %w", dir, err)
		}
		created = true
	}
	return created, nil
}

// phpPool writes the pool for the spec's PHP version (pool is nil for html) and
// removes the domain's pools under every other version, so a version or type change
// never leaves two pools listening on one socket.
func (p *Provisioner) phpPool(sp sitePaths, pool []byte) (bool, error) {
	changed := false
	for _, path := range sp.allPools {
		if path == sp.pool {
			continue
		}
		removed, err := removeFile(path)
		if err != nil {
			return false, fmt.Errorf("remove stale pool: %w", err)
		}
		changed = changed || removed
	}
	if sp.pool == "" {
		return changed, nil
	}
	if err := os.MkdirAll(filepath.Dir(sp.pool), dirPerm); err != nil {
		return false, fmt.Errorf("create pool directory: %w", err)
	}
	wrote, err := writeAtomic(sp.pool, pool)
	if err != nil {
		return false, fmt.Errorf("write php-fpm pool: %w", err)
	}
	return changed || wrote, nil
}

func (p *Provisioner) nginxConfig(sp sitePaths, conf []byte) (bool, error) {
	if err := os.MkdirAll(sp.nginxDir, dirPerm); err != nil {
		return false, fmt.Errorf("create nginx directory: %w", err)
	}
	changed, err := writeAtomic(sp.nginxConf, conf)
	if err != nil {
		return false, fmt.Errorf("write nginx config: %w", err)
	}
	return changed, nil
}

// reload does locally what `nginx -t && nginx -s reload` and `php-fpm -t` do on a
// server: it reads back every server block in sites-enabled (one broken file stops
// nginx reloading for every site, so all are checked, not only this one), checks
// this site's block and pool say what was rendered, and touches reload-requested for
// a watcher (or a test) to act on.
func (p *Provisioner) reload(sp sitePaths, v siteValues) error {
	entries, err := os.ReadDir(sp.nginxDir)
	if err != nil {
		return fmt.Errorf("read nginx directory: %w", err)
	}
	owners := map[string]string{} // server_name → file
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".conf") {
			continue // temp files of a concurrent atomic write, editor backups
		}
		path := filepath.Join(sp.nginxDir, name)
		conf, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed by a concurrent deprovision
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		names, err := checkServerBlocks(conf)
		if err != nil {
			return fmt.Errorf("nginx config %s: %w", path, err)
		}
		for _, n := range names {
			// A site's HTTP and HTTPS blocks share a file and its names.
			if other, ok := owners[n]; ok && other != path && (n == v.Domain || slices.Contains(v.Aliases, n)) {
				return fmt.Errorf("nginx config: server_name %s is claimed by both %s and %s", n, other, path)
			}
			owners[n] = path
		}
	}
	for _, n := range append([]string{v.Domain}, v.Aliases...) {
		if owners[n] != sp.nginxConf {
			return fmt.Errorf("nginx config %s: server_name %s not found", sp.nginxConf, n)
		}
	}

	serverName := "server_name " + strings.Join(append([]string{v.Domain}, v.Aliases...), " ") + ";"
	want := map[string][]string{
		sp.nginxConf: {serverName, "root " + v.DocumentRoot + ";", "alias " + v.ChallengeDir + "/;"},
	}
	if v.TLS != nil {
		want[sp.nginxConf] = append(want[sp.nginxConf], "ssl_certificate "+v.TLS.Certificate+";", "ssl_certificate_key "+v.TLS.Key+";")
		if err := checkTLSFiles(v.TLS); err != nil {
			return err
		}
	}
	if v.PHP {
		want[sp.nginxConf] = append(want[sp.nginxConf], "fastcgi_pass unix:"+v.Socket+";")
		want[sp.pool] = []string{"[" + v.User + "]", "user = " + v.User, "listen = " + v.Socket}
	}
	for path, lines := range want {
		if err := containsLines(path, lines); err != nil {
			return err
		}
	}

	if err := touch(sp.reloadMarker); err != nil {
		return fmt.Errorf("request reload: %w", err)
	}
	return nil
}

// containsLines checks that each of lines appears, trimmed, as a whole line of path.
func containsLines(path string, lines []string) error {
	content, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read back %s: %w", path, err)
	}
	have := map[string]bool{}
	for _, l := range strings.Split(string(content), "\n") {
		have[strings.TrimSpace(l)] = true
	}
	for _, l := range lines {
		if !have[l] {
			return fmt.Errorf("read back %s: line %q missing", path, l)
		}
	}
	return nil
}

// Deprovision removes the site's nginx server block, its php-fpm pools (under every
// PHP version), its socket, its site directory (document root included), its
// certificate (tls/<domain>/) and its ACME challenges (acme/<domain>/), then
// requests a reload. Files already gone are not an error, so it may run any number
// of times. It stops when ctx ends; running it again finishes the job.
func (p *Provisioner) Deprovision(ctx context.Context, site drivers.SiteSpec) error {
	if err := drivers.ValidateSiteSpec(site); err != nil {
		return fmt.Errorf("local: deprovision: %w", err)
	}
	sp, err := p.paths(site)
	if err != nil {
		return fmt.Errorf("local: deprovision %s: %w", site.Domain, err)
	}
	if err := checkUp(sp.server); err != nil {
		return fmt.Errorf("local: deprovision %s: %w", site.Domain, err)
	}
	unlock, err := p.locks.Lock(ctx, site.Server.ID)
	if err != nil {
		return fmt.Errorf("local: deprovision %s: wait for server %s: %w", site.Domain, site.Server.ID, err)
	}
	defer unlock()

	// The server block goes first so nginx stops routing to the site before its
	// pool and files disappear.
	files := append([]string{sp.nginxConf}, sp.allPools...)
	files = append(files, sp.socket)
	for _, path := range files {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("local: deprovision %s: %w", site.Domain, err)
		}
		if _, err := removeFile(path); err != nil {
			return fmt.Errorf("local: deprovision %s: %w", site.Domain, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("local: deprovision %s: %w", site.Domain, err)
	}
	// RemoveAll does not follow symbolic links, so a link a tenant planted in the
	// document root cannot lead it outside the site directory.
	if err := os.RemoveAll(sp.siteDir); err != nil {
		return fmt.Errorf("local: deprovision %s: remove site directory: %w", site.Domain, err)
	}
	tp, err := p.tlsPaths(site, sp)
	if err != nil {
		return fmt.Errorf("local: deprovision %s: %w", site.Domain, err)
	}
	for _, dir := range []string{tp.dir, tp.challenges} {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("local: deprovision %s: remove %s: %w", site.Domain, dir, err)
		}
	}
	// Request a reload only on a server that has an nginx directory: deprovisioning
	// from a server that never had a site creates nothing.
	if _, err := os.Stat(filepath.Dir(sp.reloadMarker)); err == nil {
		if err := touch(sp.reloadMarker); err != nil {
			return fmt.Errorf("local: deprovision %s: request reload: %w", site.Domain, err)
		}
	}
	p.logger.InfoContext(ctx, "site deprovisioned",
		"vps_id", site.Server.ID, "site_id", site.ID, "tenant_id", site.TenantID, "domain", site.Domain)
	return nil
}

// checkUp returns an error wrapping drivers.ErrUnreachable when the server
// directory holds a DownMarker: a server taken "down" refuses provisioning
// and deprovisioning as well as health probes, as a real unreachable VPS
// would, and changes nothing.
func checkUp(serverDir string) error {
	if _, err := os.Stat(filepath.Join(serverDir, DownMarker)); err == nil {
		return fmt.Errorf("server %s marked down: %w", filepath.Base(serverDir), drivers.ErrUnreachable)
	}
	return nil
}

// writeAtomic replaces path with data unless it already holds exactly data. The new
// content is written to a temp file in the same directory and renamed over path, so
// readers (nginx, php-fpm, the reload check) see the old file or the new one, never
// half of one. It reports whether it wrote.
func writeAtomic(path string, data []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	tmp, err := writeTemp(path, data)
	if err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return false, fmt.Errorf("replace %s: %w", path, err)
	}
	return true, nil
}

// writeIfMissing creates path with data only if nothing exists at path. It links a
// complete temp file into place, which fails if path exists, so even a tenant's
// upload racing with it is never overwritten.
func writeIfMissing(path string, data []byte) (bool, error) {
	if _, err := os.Lstat(path); err == nil {
		return false, nil
	}
	tmp, err := writeTemp(path, data)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("create %s: %w", path, err)
	}
	return true, nil
}

// writeTemp writes data to a new hidden file next to path and returns its name.
func writeTemp(path string, data []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("create temp file for %s: %w", path, err)
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(f.Name(), filePerm)); err != nil {
		_ = os.Remove(f.Name())
		return "", fmt.Errorf("write temp file for %s: %w", path, err)
	}
	return f.Name(), nil
}

// removeFile removes path and reports whether it existed.
func removeFile(path string) (bool, error) {
	err := os.Remove(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("remove %s: %w", path, err)
	}
}

// touch creates path if needed and sets its modification time to now; its content
// stays empty, so provisioning twice leaves identical files.
func touch(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, filePerm)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	now := time.Now()
	return os.Chtimes(path, now, now)
}

var _ drivers.LayoutMigrator = (*Provisioner)(nil)

// MigrateLayout brings a site provisioned under an earlier layout to the
// current one, as the ssh driver's does, and reports whether its server block
// or pool changed. Here one user owns everything, so there are no owners or
// modes to take back: it re-renders the site's configuration (Provision,
// which converges and leaves content alone) and compares. A second run
// reports false.
func (p *Provisioner) MigrateLayout(ctx context.Context, site drivers.SiteSpec) (bool, error) {
	if err := drivers.ValidateSiteSpec(site); err != nil {
		return false, fmt.Errorf("local: migrate layout: %w", err)
	}
	sp, err := p.paths(site)
	if err != nil {
		return false, fmt.Errorf("local: migrate layout of %s: %w", site.Domain, err)
	}
	read := func() string {
		var b strings.Builder
		for _, f := range append([]string{sp.nginxConf}, sp.allPools...) {
			data, _ := os.ReadFile(f) // a missing file reads as empty
			b.WriteString(f + "\x00" + string(data) + "\x00")
		}
		return b.String()
	}
	before := read()
	if _, err := p.Provision(ctx, site, nil); err != nil {
		return false, fmt.Errorf("local: migrate layout of %s: %w", site.Domain, err)
	}
	return read() != before, nil
}
