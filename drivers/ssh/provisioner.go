package ssh

import (
	"context"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/chomhq/chom/drivers"
)

var (
	_ drivers.Provisioner    = (*Provisioner)(nil)
	_ drivers.BackupSource   = (*Provisioner)(nil)
	_ drivers.LayoutMigrator = (*Provisioner)(nil)
)

// Progress reported after each step of Provision.
const (
	progressSystemUser  = 10
	progressSiteRoot    = 25
	progressIndexPage   = 40
	progressDatabase    = 55
	progressPHPPool     = 70
	progressNginxConfig = 85
	progressReload      = 100
)

// exitRejected is the exit status of scriptCheckOrRollback when the check
// failed and the previous configuration was put back.
const exitRejected = 3

// Provisioner puts sites on real servers over SSH: it implements
// drivers.Provisioner, drivers.BackupSource and drivers.UsageProbe. It keeps one SSH connection
// per server (its own pool, configured like the Probe's) and is safe for
// concurrent use; mutations of one server are serialised within one
// Provisioner, and useradd / userdel also take a lock file on the server.
// Close it to release the connections.
//
// The SSH user must be root: steps create users, write under /etc and run
// the MariaDB client through its unix-socket authentication.
type Provisioner struct {
	r      *remote
	layout Layout
	cfg    Config

	locks drivers.ServerLocks // one change at a time per server
}

// NewProvisioner returns a Provisioner for cfg (the HTTP fields of Config are
// not used), or an error naming every problem with cfg, its Layout or its key
// file.
func NewProvisioner(cfg Config) (*Provisioner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ssh: invalid config: %w", err)
	}
	cfg.setDefaults()
	cfg.Layout = cfg.Layout.withDefaults()
	if err := cfg.Layout.Validate(); err != nil {
		return nil, fmt.Errorf("ssh: invalid config: %w", err)
	}
	signer, err := cfg.signer()
	if err != nil {
		return nil, err
	}
	return &Provisioner{
		r:      &remote{cfg: cfg, signer: signer, log: cfg.Logger, pool: newPool(cfg.MaxConns, cfg.IdleTimeout)},
		layout: cfg.Layout,
		cfg:    cfg,
	}, nil
}

// Layout returns the layout in use, defaults filled in.
func (p *Provisioner) Layout() Layout { return p.layout }

// Close closes every pooled connection; later calls fail. It is safe to call
// more than once.
func (p *Provisioner) Close() error {
	p.r.pool.close()
	return nil
}

// PooledConns returns how many SSH connections are pooled.
func (p *Provisioner) PooledConns() int { return p.r.pool.size() }

// dbNamePattern is what a database or MariaDB user name must look like before
// a script puts it into SQL.
var dbNamePattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,31}$`)

// sitePaths are where one site's parts live on its server.
type sitePaths struct {
	user, db                       string
	siteRoot, docRoot, tmp, index  string
	sessions, phpLogs              string // the pool's own, in siteRoot
	logDir, stateDir, dbEnv, stage string
	avail, enabled, socket, lock   string
	pool                           string            // "" for html
	pools                          map[string]string // PHP version → pool path, every version
}

// paths derives every path from a validated spec and checks each lies
// strictly inside its Layout directory, so no spec can name a path elsewhere
// (and rm -rf only ever sees a site's own directories).
func (p *Provisioner) paths(site drivers.SiteSpec) (sitePaths, error) {
	l := p.layout
	user := drivers.SystemUser(site.ID)
	sp := sitePaths{
		user:     user,
		db:       user,
		siteRoot: path.Join(l.WebRoot, site.Domain),
		logDir:   path.Join(l.LogDir, site.Domain),
		stateDir: path.Join(l.StateDir, site.ID),
		avail:    path.Join(l.NginxAvailable, site.Domain+".conf"),
		enabled:  path.Join(l.NginxEnabled, site.Domain+".conf"),
		socket:   path.Join(l.RunDir, "chom-"+user+".sock"),
		lock:     path.Join(l.StateDir, ".users.lock"),
		pools:    map[string]string{},
	}
	sp.docRoot = path.Join(sp.siteRoot, "public")
	sp.tmp = path.Join(sp.siteRoot, "tmp")
	sp.sessions = path.Join(sp.siteRoot, "sessions")
	sp.phpLogs = path.Join(sp.siteRoot, "logs")
	sp.dbEnv = path.Join(sp.stateDir, "db.env")
	sp.stage = path.Join(sp.stateDir, "restore")
	index := "index.html"
	if site.UsesPHP() {
		index = "index.php"
	}
	sp.index = path.Join(sp.docRoot, index)
	for _, v := range drivers.SupportedPHPVersions() {
		dir := strings.ReplaceAll(l.PHPPoolDir, versionPlaceholder, v)
		sp.pools[v] = path.Join(dir, site.Domain+".conf")
		if !directlyIn(dir, sp.pools[v]) {
			return sitePaths{}, fmt.Errorf("%w: pool %q is not in %q", drivers.ErrInvalidSpec, sp.pools[v], dir)
		}
	}
	if site.UsesPHP() {
		sp.pool = sp.pools[site.PHPVersion]
	}
	for _, c := range []struct{ base, p string }{
		{l.WebRoot, sp.siteRoot}, {l.LogDir, sp.logDir}, {l.StateDir, sp.stateDir},
		{l.NginxAvailable, sp.avail}, {l.NginxEnabled, sp.enabled}, {l.RunDir, sp.socket},
	} {
		if !directlyIn(c.base, c.p) {
			return sitePaths{}, fmt.Errorf("%w: path %q is not directly in %q", drivers.ErrInvalidSpec, c.p, c.base)
		}
	}
	if !userPattern.MatchString(user) || !dbNamePattern.MatchString(sp.db) {
		return sitePaths{}, fmt.Errorf("%w: derived user name %q is unusable", drivers.ErrInvalidSpec, user)
	}
	return sp, nil
}

// directlyIn reports whether p is a direct child of dir (after cleaning), not
// dir itself and not anything reached through "..".
func directlyIn(dir, p string) bool {
	p = path.Clean(p)
	base := path.Base(p)
	return path.Dir(p) == path.Clean(dir) && base != "." && base != ".." && base != "/"
}

func (p *Provisioner) values(site drivers.SiteSpec, sp sitePaths, tp tlsPaths) siteValues {
	return siteValues{
		Aliases: site.Aliases, ChallengeDir: tp.challenges,
		SiteID: site.ID, TenantID: site.TenantID, Domain: site.Domain, SiteType: site.SiteType,
		PHPVersion: site.PHPVersion, User: sp.user, WebGroup: p.layout.WebGroup,
		SiteRoot: sp.siteRoot, DocumentRoot: sp.docRoot, LogDir: sp.logDir, TmpDir: sp.tmp, Socket: sp.socket,
		SessionDir: sp.sessions, PHPLogDir: sp.phpLogs,
		Listen:          p.layout.Listen,
		PHP:             site.UsesPHP(),
		FrontController: site.SiteType == drivers.SiteTypeLaravel || site.SiteType == drivers.SiteTypeWordPress,
	}
}

// session is one Provision or Deprovision against one server: it runs each
// command within StepTimeout and remembers the host key the server showed.
type session struct {
	p       *Provisioner
	ep      endpoint
	hostKey string
}

func (s *session) run(ctx context.Context, script string, o runOpts, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.p.cfg.StepTimeout)
	defer cancel()
	out, hk, err := s.p.r.run(ctx, s.ep, script, args, o)
	if hk != "" {
		s.hostKey = hk
	}
	return strings.TrimSpace(out), err
}

// changed runs a script that prints "changed" or "same".
func (s *session) changed(ctx context.Context, script string, o runOpts, args ...string) (bool, error) {
	out, err := s.run(ctx, script, o, args...)
	return out == "changed", err
}

// start validates site and returns its paths and a session to its server.
func (p *Provisioner) start(site drivers.SiteSpec) (sitePaths, *session, error) {
	if err := drivers.ValidateSiteSpec(site); err != nil {
		return sitePaths{}, nil, err
	}
	sp, err := p.paths(site)
	if err != nil {
		return sitePaths{}, nil, err
	}
	ep, err := serverEndpoint(site.Server, site.Server.HostKey)
	if err != nil {
		return sitePaths{}, nil, fmt.Errorf("server %s: %w", site.Server.ID, err)
	}
	return sp, &session{p: p, ep: ep}, nil
}

// Provision creates or converges, in order: the site's system user, its
// directories, a starter page (only if no index page exists), its MariaDB
// database and user (wordpress, laravel; the password is generated on the
// server and stays in <StateDir>/<site>/db.env, 0600), its php-fpm pool
// (checked with PHPFPMCheck, then reloaded; pools of the domain under other
// PHP versions are removed) and its nginx server block (with the HTTPS block
// when the site's certificate is deployed: the TLS state is read from the
// server, see DeployCertificate), then checks nginx and reloads it. A configuration the server's check rejects is put back as it
// was and the error wraps drivers.ErrConfigRejected (permanent). progress
// (may be nil) is called after each step.
//
// The host key is pinned as the Probe pins it: site.Server.HostKey, when set,
// must match (else an error wrapping drivers.ErrHostKeyMismatch, before
// anything runs); the key seen is returned in Result.HostKey.
func (p *Provisioner) Provision(ctx context.Context, site drivers.SiteSpec, progress drivers.ProgressFunc) (drivers.Result, error) {
	sp, s, err := p.start(site)
	if err != nil {
		return drivers.Result{}, fmt.Errorf("ssh: provision: %w", err)
	}
	if _, err := p.tlsPaths(site, sp); err != nil {
		return drivers.Result{}, fmt.Errorf("ssh: provision: %w", err)
	}
	if progress == nil {
		progress = func(context.Context, drivers.Step) error { return nil }
	}
	log := p.cfg.Logger.With("vps_id", site.Server.ID, "site_id", site.ID, "tenant_id", site.TenantID, "domain", site.Domain)
	unlock, err := p.locks.Lock(ctx, site.Server.ID)
	if err != nil {
		return drivers.Result{}, fmt.Errorf("ssh: provision %s: wait for server %s: %w", site.Domain, site.Server.ID, err)
	}
	defer unlock()
	// Rendered under the lock, from the server's TLS state: a site with a
	// deployed certificate keeps its HTTPS block (see DeployCertificate).
	files, err := p.renderSite(ctx, s, site, sp)
	if err != nil {
		return drivers.Result{}, fmt.Errorf("ssh: provision %s: %w", site.Domain, err)
	}

	l := p.layout
	nginxChanged := false
	steps := []struct {
		name     string
		progress int
		run      func() (bool, error)
	}{
		{drivers.StepSystemUser, progressSystemUser, func() (bool, error) {
			return s.changed(ctx, scriptUser, runOpts{}, sp.user, sp.siteRoot, sp.lock)
		}},
		{drivers.StepSiteRoot, progressSiteRoot, func() (bool, error) {
			_, err := s.run(ctx, scriptDirs, runOpts{}, sp.user, l.WebGroup, sp.siteRoot, sp.docRoot, sp.tmp, sp.sessions, sp.phpLogs, sp.logDir, sp.stateDir)
			return false, err
		}},
		{drivers.StepIndexPage, progressIndexPage, func() (bool, error) {
			return s.changed(ctx, scriptWriteIfMissing, runOpts{stdin: strings.NewReader(string(files.Index))}, sp.index, sp.user)
		}},
		{drivers.StepDatabase, progressDatabase, func() (bool, error) {
			if !site.HasDatabase() {
				return false, nil
			}
			_, err := s.run(ctx, scriptDatabase, runOpts{}, append([]string{sp.dbEnv, sp.db, sp.user}, l.MySQL...)...)
			return false, err
		}},
		{drivers.StepPHPPool, progressPHPPool, func() (bool, error) { return p.phpPool(ctx, s, site, sp, files.Pool) }},
		{drivers.StepNginxConfig, progressNginxConfig, func() (bool, error) {
			c, err := s.changed(ctx, scriptWriteFile, runOpts{stdin: strings.NewReader(string(files.Nginx))}, sp.avail, sp.enabled)
			nginxChanged = c
			return c, err
		}},
		{drivers.StepReload, progressReload, func() (bool, error) {
			if err := p.check(ctx, s, "nginx", sp.avail, sp.enabled, nginxChanged, l.NginxCheck); err != nil {
				return false, err
			}
			_, err := s.run(ctx, scriptExec, runOpts{}, l.NginxReload...)
			return true, err
		}},
	}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return drivers.Result{}, fmt.Errorf("ssh: provision %s: before step %s: %w", site.Domain, step.name, err)
		}
		changed, err := step.run()
		if err != nil {
			return drivers.Result{}, fmt.Errorf("ssh: provision %s: step %s: %w", site.Domain, step.name, err)
		}
		log.DebugContext(ctx, "provision step done", "step", step.name, "progress", step.progress, "changed", changed)
		if err := progress(ctx, drivers.Step{Name: step.name, Progress: step.progress}); err != nil {
			return drivers.Result{}, fmt.Errorf("ssh: provision %s: progress after step %s: %w", site.Domain, step.name, err)
		}
	}
	log.InfoContext(ctx, "site provisioned", "document_root", sp.docRoot)
	return drivers.Result{
		DocumentRoot: sp.docRoot, SystemUser: sp.user, NginxConfig: sp.avail, PHPPool: sp.pool, HostKey: s.hostKey,
	}, nil
}

// MigrateLayout brings a site provisioned under an earlier layout to the
// current one and reports whether anything changed: the directories' owners
// and modes (the nginx log directory root's and cleared of links, the
// document root 0750; scriptDirs), the php-fpm pool (disable_functions,
// sessions; checked and reloaded when rewritten) and the server block
// (disable_symlinks; checked, then nginx reloaded). nginx is reloaded when
// any of these changed, so its master reopens the logs in the directory it
// now owns instead of keeping what a planted link pointed at. It touches no
// content (the index page, the database) and is idempotent: a second run
// changes nothing and reports false.
func (p *Provisioner) MigrateLayout(ctx context.Context, site drivers.SiteSpec) (bool, error) {
	sp, s, err := p.start(site)
	if err != nil {
		return false, fmt.Errorf("ssh: migrate layout: %w", err)
	}
	unlock, err := p.locks.Lock(ctx, site.Server.ID)
	if err != nil {
		return false, fmt.Errorf("ssh: migrate layout of %s: wait for server %s: %w", site.Domain, site.Server.ID, err)
	}
	defer unlock()
	files, err := p.renderSite(ctx, s, site, sp)
	if err != nil {
		return false, fmt.Errorf("ssh: migrate layout of %s: %w", site.Domain, err)
	}
	l := p.layout
	fail := func(what string, err error) (bool, error) {
		return false, fmt.Errorf("ssh: migrate layout of %s: %s: %w", site.Domain, what, err)
	}
	dirs, err := s.changed(ctx, scriptDirs, runOpts{}, sp.user, l.WebGroup, sp.siteRoot, sp.docRoot, sp.tmp, sp.sessions, sp.phpLogs, sp.logDir, sp.stateDir)
	if err != nil {
		return fail("directories", err)
	}
	pool, err := p.phpPool(ctx, s, site, sp, files.Pool)
	if err != nil {
		return fail("php-fpm pool", err)
	}
	block, err := s.changed(ctx, scriptWriteFile, runOpts{stdin: strings.NewReader(string(files.Nginx))}, sp.avail, sp.enabled)
	if err != nil {
		return fail("server block", err)
	}
	if dirs || block {
		if err := p.check(ctx, s, "nginx", sp.avail, sp.enabled, block, l.NginxCheck); err != nil {
			return fail("check nginx", err)
		}
		if _, err := s.run(ctx, scriptExec, runOpts{}, l.NginxReload...); err != nil {
			return fail("reload nginx", err)
		}
	}
	changed := dirs || pool || block
	p.cfg.Logger.InfoContext(ctx, "site layout migrated", "vps_id", site.Server.ID, "site_id", site.ID,
		"tenant_id", site.TenantID, "domain", site.Domain, "changed", changed,
		"directories", dirs, "php_pool", pool, "server_block", block)
	return changed, nil
}

// phpPool removes the domain's pools under other PHP versions (reloading
// those php-fpm), then writes this version's pool, checks and reloads it.
func (p *Provisioner) phpPool(ctx context.Context, s *session, site drivers.SiteSpec, sp sitePaths, pool []byte) (bool, error) {
	l := p.layout
	changed := false
	for _, v := range drivers.SupportedPHPVersions() {
		if sp.pools[v] == sp.pool {
			continue
		}
		removed, err := s.changed(ctx, scriptRemove, runOpts{}, sp.pools[v], sp.pools[v]+".chom-prev")
		if err != nil {
			return false, fmt.Errorf("remove stale pool: %w", err)
		}
		if removed {
			changed = true
			if _, err := s.run(ctx, scriptExec, runOpts{}, forVersion(l.PHPFPMReload, v)...); err != nil {
				return false, fmt.Errorf("reload php-fpm %s: %w", v, err)
			}
		}
	}
	if sp.pool == "" {
		return changed, nil
	}
	wrote, err := s.changed(ctx, scriptWriteFile, runOpts{stdin: strings.NewReader(string(pool))}, sp.pool, "")
	if err != nil {
		return false, fmt.Errorf("write pool: %w", err)
	}
	if !wrote {
		return changed, nil
	}
	if err := p.check(ctx, s, "php-fpm", sp.pool, "", true, forVersion(l.PHPFPMCheck, site.PHPVersion)); err != nil {
		return false, err
	}
	if _, err := s.run(ctx, scriptExec, runOpts{}, forVersion(l.PHPFPMReload, site.PHPVersion)...); err != nil {
		return false, fmt.Errorf("reload php-fpm %s: %w", site.PHPVersion, err)
	}
	return true, nil
}

// check runs a service's configuration check. When file was just written
// (rollback), a failed check puts its previous version back (or removes it and
// link); the error then wraps drivers.ErrConfigRejected.
func (p *Provisioner) check(ctx context.Context, s *session, what, file, link string, rollback bool, argv []string) error {
	var err error
	if rollback {
		_, err = s.run(ctx, scriptCheckOrRollback, runOpts{}, append([]string{file, link}, argv...)...)
	} else {
		_, err = s.run(ctx, scriptExec, runOpts{}, argv...)
	}
	var ce *commandError
	if errors.As(err, &ce) && (!rollback || ce.exit.ExitStatus() == exitRejected) {
		if rollback {
			return fmt.Errorf("%w: %s check failed, previous configuration restored: %w", drivers.ErrConfigRejected, what, err)
		}
		return fmt.Errorf("%w: %s check failed: %w", drivers.ErrConfigRejected, what, err)
	}
	return err
}

// Deprovision removes the site: its nginx server block (then checks and
// reloads nginx, so it stops routing first), its php-fpm pools under every
// PHP version (reloading those php-fpm) and socket, its database and user
// (when the type has one or a db.env exists), its directories (site root,
// logs, state with the certificate and key, ACME challenges) and its system
// user. What is already gone is skipped, so a
// site that is not there is not an error.
func (p *Provisioner) Deprovision(ctx context.Context, site drivers.SiteSpec) error {
	sp, s, err := p.start(site)
	if err != nil {
		return fmt.Errorf("ssh: deprovision: %w", err)
	}
	unlock, err := p.locks.Lock(ctx, site.Server.ID)
	if err != nil {
		return fmt.Errorf("ssh: deprovision %s: wait for server %s: %w", site.Domain, site.Server.ID, err)
	}
	defer unlock()
	l := p.layout
	fail := func(what string, err error) error {
		return fmt.Errorf("ssh: deprovision %s: %s: %w", site.Domain, what, err)
	}

	removed, err := s.changed(ctx, scriptRemove, runOpts{}, sp.enabled, sp.avail, sp.avail+".chom-prev")
	if err != nil {
		return fail("remove server block", err)
	}
	if removed {
		if err := p.check(ctx, s, "nginx", sp.avail, sp.enabled, false, l.NginxCheck); err != nil {
			return fail("check nginx", err)
		}
		if _, err := s.run(ctx, scriptExec, runOpts{}, l.NginxReload...); err != nil {
			return fail("reload nginx", err)
		}
	}
	for _, v := range drivers.SupportedPHPVersions() {
		removed, err := s.changed(ctx, scriptRemove, runOpts{}, sp.pools[v], sp.pools[v]+".chom-prev")
		if err != nil {
			return fail("remove pool", err)
		}
		if removed {
			if _, err := s.run(ctx, scriptExec, runOpts{}, forVersion(l.PHPFPMReload, v)...); err != nil {
				return fail("reload php-fpm "+v, err)
			}
		}
	}
	if _, err := s.run(ctx, scriptRemove, runOpts{}, sp.socket); err != nil {
		return fail("remove socket", err)
	}
	hasEnv, err := s.run(ctx, scriptHasFile, runOpts{}, sp.dbEnv)
	if err != nil {
		return fail("look for database", err)
	}
	if site.HasDatabase() || hasEnv == "yes" {
		if _, err := s.run(ctx, scriptDropDatabase, runOpts{}, append([]string{sp.db, sp.user}, l.MySQL...)...); err != nil {
			return fail("drop database", err)
		}
	}
	tp, err := p.tlsPaths(site, sp)
	if err != nil {
		return fail("challenge directory", err)
	}
	if _, err := s.run(ctx, scriptRemoveSite, runOpts{}, sp.user, sp.lock, sp.siteRoot, sp.logDir, sp.stateDir, tp.challenges); err != nil {
		return fail("remove files and user", err)
	}
	p.cfg.Logger.InfoContext(ctx, "site deprovisioned",
		"vps_id", site.Server.ID, "site_id", site.ID, "tenant_id", site.TenantID, "domain", site.Domain)
	return nil
}
