package local

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/chomhq/chom/drivers"
)

type testBundle struct {
	prov *Provisioner
	root string
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	prov, err := New(Config{Root: root, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &testBundle{prov: prov, root: root}
}

func spec(siteType, domain string) drivers.SiteSpec {
	php := "8.3"
	if siteType == drivers.SiteTypeHTML {
		php = ""
	}
	return drivers.SiteSpec{
		ID:         "site_" + strings.ReplaceAll(strings.ReplaceAll(domain, ".", "_"), "-", "_"),
		TenantID:   "ten_1",
		Domain:     domain,
		SiteType:   siteType,
		PHPVersion: php,
		Server:     drivers.Server{ID: "vps_1", Hostname: "web-1", IPAddress: "192.0.2.10", SSHPort: 22},
	}
}

// recorder is a ProgressFunc that records steps and can fail or cancel at one.
type recorder struct {
	mu       sync.Mutex
	steps    []drivers.Step
	failAt   string
	failWith error
	cancelAt string
	cancel   context.CancelFunc
}

func (r *recorder) progress(_ context.Context, s drivers.Step) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, s)
	if s.Name == r.cancelAt && r.cancel != nil {
		r.cancel()
	}
	if s.Name == r.failAt {
		return r.failWith
	}
	return nil
}

var allSteps = []drivers.Step{
	{Name: "site_root", Progress: 20},
	{Name: "index_page", Progress: 40},
	{Name: "php_pool", Progress: 60},
	{Name: "nginx_config", Progress: 80},
	{Name: "reload", Progress: 100},
}

// tree maps every path under dir (relative, slash-separated) to its content, or to
// "<dir>" for directories.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			got[rel] = "<dir>"
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		got[rel] = string(b)
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return got
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func TestNew(t *testing.T) {
	t.Parallel()

	logger := slog.New(slog.DiscardHandler)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{Root: "/var/lib/chom/vps", Logger: logger}, ""},
		{"ok unclean", Config{Root: "/var/lib//chom/./vps/", Logger: logger}, ""},
		{"empty root", Config{Logger: logger}, "root is required"},
		{"relative root", Config{Root: "data/vps", Logger: logger}, "absolute"},
		{"slash", Config{Root: "/", Logger: logger}, "must not be /"},
		{"space", Config{Root: "/var/lib/my chom", Logger: logger}, "may only contain"},
		{"semicolon", Config{Root: "/var/lib/chom;", Logger: logger}, "may only contain"},
		{"newline", Config{Root: "/var/lib/chom\nx", Logger: logger}, "may only contain"},
		{"no logger", Config{Root: "/var/lib/chom"}, "logger is required"},
		{"everything", Config{}, "logger is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil || p == nil {
					t.Fatalf("New = %v, %v; want a provisioner", p, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestProvision(t *testing.T) {
	t.Parallel()

	tests := []struct {
		siteType  string
		index     string
		tryFiles  string
		wantIndex string
	}{
		{"html", "index.html", "try_files $uri $uri/ =404;", "index index.html;"},
		{"php", "index.php", "try_files $uri $uri/ =404;", "index index.php index.html;"},
		{"laravel", "index.php", "try_files $uri $uri/ /index.php?$query_string;", "index index.php index.html;"},
		{"wordpress", "index.php", "try_files $uri $uri/ /index.php?$query_string;", "index index.php index.html;"},
	}
	for _, tt := range tests {
		t.Run(tt.siteType, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			site := spec(tt.siteType, "shop.example.com")
			rec := &recorder{}

			res, err := b.prov.Provision(context.Background(), site, rec.progress)
			if err != nil {
				t.Fatalf("Provision: %v", err)
			}
			if diff := cmp.Diff(allSteps, rec.steps); diff != "" {
				t.Errorf("steps mismatch (-want +got):\n%s", diff)
			}

			server := filepath.Join(b.root, "vps_1")
			user := drivers.SystemUser(site.ID)
			docRoot := filepath.Join(server, "sites", "shop.example.com", "public")
			logs := filepath.Join(server, "sites", "shop.example.com", "logs")
			socket := filepath.Join(server, "run", "php-"+user+".sock")
			want := drivers.Result{
				DocumentRoot: docRoot,
				SystemUser:   user,
				NginxConfig:  filepath.Join(server, "nginx", "sites-enabled", "shop.example.com.conf"),
			}
			if tt.siteType != "html" {
				want.PHPPool = filepath.Join(server, "php", "8.3", "fpm", "pool.d", "shop.example.com.conf")
			}
			if diff := cmp.Diff(want, res); diff != "" {
				t.Errorf("Result mismatch (-want +got):\n%s", diff)
			}

			index := read(t, filepath.Join(docRoot, tt.index))
			if !strings.Contains(index, "<h1>shop.example.com</h1>") {
				t.Errorf("index page does not name the domain:\n%s", index)
			}
			if tt.siteType != "html" && !strings.Contains(index, "<p>PHP <?= htmlspecialchars(PHP_VERSION) ?> is running.</p>") {
				t.Errorf("PHP starter page lacks the PHP probe:\n%s", index)
			}
			if !exists(logs) || !exists(filepath.Join(b.root, "vps_1", "nginx", "reload-requested")) {
				t.Errorf("logs dir or reload marker missing")
			}

			nginx := read(t, res.NginxConfig)
			lines := []string{
				"listen 80;",
				"server_name shop.example.com;",
				"root " + docRoot + ";",
				tt.wantIndex,
				"access_log " + logs + "/access.log;",
				"error_log " + logs + "/error.log;",
				tt.tryFiles,
			}
			if tt.siteType == "html" {
				if strings.Contains(nginx, "fastcgi_pass") || strings.Contains(nginx, `\.php$`) {
					t.Errorf("html server block routes to PHP:\n%s", nginx)
				}
				if exists(filepath.Join(server, "php")) {
					t.Errorf("html site created a php directory")
				}
			} else {
				lines = append(lines, `location ~ \.php$ {`, "fastcgi_pass unix:"+socket+";")
				pool := read(t, res.PHPPool)
				for _, l := range []string{
					"[" + user + "]",
					"user = " + user,
					"group = " + user,
					"listen = " + socket,
					"pm = ondemand",
					"pm.max_children = 5",
					"php_admin_value[open_basedir] = " + filepath.Join(server, "sites", "shop.example.com") + "/",
				} {
					if !hasLine(pool, l) {
						t.Errorf("pool lacks line %q:\n%s", l, pool)
					}
				}
			}
			for _, l := range lines {
				if !hasLine(nginx, l) {
					t.Errorf("server block lacks line %q:\n%s", l, nginx)
				}
			}
			if _, err := checkServerBlocks([]byte(nginx)); err != nil {
				t.Errorf("rendered server block does not check: %v", err)
			}
		})
	}
}

func hasLine(content, line string) bool {
	for _, l := range strings.Split(content, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

func TestProvisionTwiceIsIdempotent(t *testing.T) {
	t.Parallel()

	for _, siteType := range []string{"html", "php", "laravel", "wordpress"} {
		t.Run(siteType, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			site := spec(siteType, "example.com")
			res, err := b.prov.Provision(ctx, site, nil)
			if err != nil {
				t.Fatalf("first Provision: %v", err)
			}
			first := tree(t, b.root)

			res2, err := b.prov.Provision(ctx, site, nil)
			if err != nil {
				t.Fatalf("second Provision: %v", err)
			}
			if diff := cmp.Diff(res, res2); diff != "" {
				t.Errorf("Result changed (-first +second):\n%s", diff)
			}
			if diff := cmp.Diff(first, tree(t, b.root)); diff != "" {
				t.Errorf("tree changed (-first +second):\n%s", diff)
			}
			for path := range first {
				if path != "." && strings.HasPrefix(filepath.Base(path), ".") {
					t.Errorf("temp file left behind: %s", path)
				}
			}

			// The tenant uploads their own page: provisioning again keeps it.
			index := filepath.Join(res.DocumentRoot, "index.html")
			if siteType != "html" {
				index = filepath.Join(res.DocumentRoot, "index.php")
			}
			if err := os.WriteFile(index, []byte("tenant content"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := b.prov.Provision(ctx, site, nil); err != nil {
				t.Fatalf("third Provision: %v", err)
			}
			if got := read(t, index); got != "tenant content" {
				t.Errorf("index page overwritten: %q", got)
			}
			rel, _ := filepath.Rel(b.root, index)
			first[filepath.ToSlash(rel)] = "tenant content"
			if diff := cmp.Diff(first, tree(t, b.root)); diff != "" {
				t.Errorf("tree changed beyond the index page (-want +got):\n%s", diff)
			}
		})
	}
}

func TestProvisionRewritesTamperedConfig(t *testing.T) {
	t.Parallel()

	b := setup(t)
	site := spec("php", "example.com")
	res, err := b.prov.Provision(context.Background(), site, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := tree(t, b.root)
	for _, path := range []string{res.NginxConfig, res.PHPPool} {
		if err := os.WriteFile(path, []byte("server { broken"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.prov.Provision(context.Background(), site, nil); err != nil {
		t.Fatalf("Provision over tampered files: %v", err)
	}
	if diff := cmp.Diff(want, tree(t, b.root)); diff != "" {
		t.Errorf("tree not restored (-want +got):\n%s", diff)
	}
}

func TestProvisionMovesPool(t *testing.T) {
	t.Parallel()

	b := setup(t)
	ctx := context.Background()
	site := spec("php", "example.com")
	site.PHPVersion = "8.2"
	old, err := b.prov.Provision(ctx, site, nil)
	if err != nil {
		t.Fatal(err)
	}
	site.PHPVersion = "8.4"
	res, err := b.prov.Provision(ctx, site, nil)
	if err != nil {
		t.Fatal(err)
	}
	if exists(old.PHPPool) || !exists(res.PHPPool) {
		t.Errorf("after a version change: old pool exists %v, new pool exists %v", exists(old.PHPPool), exists(res.PHPPool))
	}

	site.SiteType, site.PHPVersion = "html", ""
	res, err = b.prov.Provision(ctx, site, nil)
	if err != nil {
		t.Fatal(err)
	}
	pools, _ := filepath.Glob(filepath.Join(b.root, "vps_1", "php", "*", "fpm", "pool.d", "*.conf"))
	if len(pools) != 0 || res.PHPPool != "" {
		t.Errorf("html site keeps pools %v (Result.PHPPool %q)", pools, res.PHPPool)
	}
	if strings.Contains(read(t, res.NginxConfig), "fastcgi_pass") {
		t.Error("html server block still routes to PHP")
	}
}

func TestDeprovision(t *testing.T) {
	t.Parallel()

	b := setup(t)
	ctx := context.Background()
	gone := spec("wordpress", "blog.example.com")
	kept := spec("laravel", "app.example.com")
	for _, s := range []drivers.SiteSpec{kept, gone} {
		if _, err := b.prov.Provision(ctx, s, nil); err != nil {
			t.Fatalf("Provision %s: %v", s.Domain, err)
		}
	}
	want := tree(t, b.root)
	for path := range want {
		if strings.Contains(path, "blog.example.com") {
			delete(want, path)
		}
	}

	for i := range 2 {
		if err := b.prov.Deprovision(ctx, gone); err != nil {
			t.Fatalf("Deprovision #%d: %v", i+1, err)
		}
		if diff := cmp.Diff(want, tree(t, b.root)); diff != "" {
			t.Errorf("after Deprovision #%d (-want +got):\n%s", i+1, diff)
		}
	}

	// The remaining site still provisions: its block passes the reload check alone.
	if _, err := b.prov.Provision(ctx, kept, nil); err != nil {
		t.Fatalf("Provision after a neighbour left: %v", err)
	}
}

func TestDeprovisionUnknownServerCreatesNothing(t *testing.T) {
	t.Parallel()

	b := setup(t)
	if err := b.prov.Deprovision(context.Background(), spec("php", "example.com")); err != nil {
		t.Fatalf("Deprovision: %v", err)
	}
	if exists(b.root) {
		t.Errorf("Deprovision of a site that never existed created %s", b.root)
	}
}

func TestProvisionProgressErrorAborts(t *testing.T) {
	t.Parallel()

	b := setup(t)
	stop := errors.New("operation cancelled by user")
	rec := &recorder{failAt: "php_pool", failWith: stop}
	_, err := b.prov.Provision(context.Background(), spec("php", "example.com"), rec.progress)
	if !errors.Is(err, stop) {
		t.Fatalf("Provision error = %v, want it to wrap %v", err, stop)
	}
	if diff := cmp.Diff(allSteps[:3], rec.steps); diff != "" {
		t.Errorf("steps mismatch (-want +got):\n%s", diff)
	}
	if exists(filepath.Join(b.root, "vps_1", "nginx")) {
		t.Error("steps after the failing progress call ran")
	}
}

func TestProvisionHonoursContext(t *testing.T) {
	t.Parallel()

	t.Run("cancelled before", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rec := &recorder{}
		_, err := b.prov.Provision(ctx, spec("html", "example.com"), rec.progress)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Provision error = %v, want context.Canceled", err)
		}
		if len(rec.steps) != 0 || exists(b.root) {
			t.Errorf("cancelled Provision did work: steps %v, root exists %v", rec.steps, exists(b.root))
		}
		if err := b.prov.Deprovision(ctx, spec("html", "example.com")); !errors.Is(err, context.Canceled) {
			t.Errorf("Deprovision error = %v, want context.Canceled", err)
		}
	})

	t.Run("cancelled between steps", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rec := &recorder{cancelAt: "index_page", cancel: cancel}
		_, err := b.prov.Provision(ctx, spec("php", "example.com"), rec.progress)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Provision error = %v, want context.Canceled", err)
		}
		if diff := cmp.Diff(allSteps[:2], rec.steps); diff != "" {
			t.Errorf("steps mismatch (-want +got):\n%s", diff)
		}
		if exists(filepath.Join(b.root, "vps_1", "php")) {
			t.Error("php_pool ran after cancellation")
		}
	})
}

func TestReloadRejectsBrokenServerBlock(t *testing.T) {
	t.Parallel()

	b := setup(t)
	ctx := context.Background()
	if _, err := b.prov.Provision(ctx, spec("html", "a.example.com"), nil); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(b.root, "vps_1", "nginx", "sites-enabled", "zz.example.com.conf")
	if err := os.WriteFile(broken, []byte("server {\n    server_name zz.example.com;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	_, err := b.prov.Provision(ctx, spec("html", "b.example.com"), rec.progress)
	if err == nil || !strings.Contains(err.Error(), "step reload") || !strings.Contains(err.Error(), "unclosed") {
		t.Fatalf("Provision error = %v, want a reload failure naming the unclosed brace", err)
	}
	if diff := cmp.Diff(allSteps[:4], rec.steps); diff != "" {
		t.Errorf("steps mismatch (-want +got):\n%s", diff)
	}
}

func TestHostileSpecsWriteNothing(t *testing.T) {
	t.Parallel()

	hostile := []func(*drivers.SiteSpec){
		func(s *drivers.SiteSpec) { s.Domain = "a.com;touch /tmp/x" },
		func(s *drivers.SiteSpec) { s.Domain = "$(id).com" },
		func(s *drivers.SiteSpec) { s.Domain = "../" },
		func(s *drivers.SiteSpec) { s.Domain = ".." },
		func(s *drivers.SiteSpec) { s.Domain = "../../../etc" },
		func(s *drivers.SiteSpec) { s.Domain = "a.com/../../../x.com" },
		func(s *drivers.SiteSpec) { s.Domain = "a.com\nserver_name evil" },
		func(s *drivers.SiteSpec) { s.Domain = "a.com}" },
		func(s *drivers.SiteSpec) { s.Domain = "münchen.de" },
		func(s *drivers.SiteSpec) { s.Domain = "A.COM" },
		func(s *drivers.SiteSpec) { s.Domain = "" },
		func(s *drivers.SiteSpec) { s.Server.ID = ".." },
		func(s *drivers.SiteSpec) { s.Server.ID = "../escape" },
		func(s *drivers.SiteSpec) { s.Server.ID = "" },
		func(s *drivers.SiteSpec) { s.ID = "../../x" },
		func(s *drivers.SiteSpec) { s.PHPVersion = "../../x" },
		func(s *drivers.SiteSpec) { s.SiteType = "php\n" },
	}
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	prov, err := New(Config{Root: root, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for i, edit := range hostile {
		s := spec("php", "example.com")
		edit(&s)
		if _, err := prov.Provision(context.Background(), s, nil); !errors.Is(err, drivers.ErrInvalidSpec) {
			t.Errorf("#%d Provision(%+v) error = %v, want ErrInvalidSpec", i, s, err)
		}
		if err := prov.Deprovision(context.Background(), s); !errors.Is(err, drivers.ErrInvalidSpec) {
			t.Errorf("#%d Deprovision(%+v) error = %v, want ErrInvalidSpec", i, s, err)
		}
	}
	if diff := cmp.Diff(map[string]string{".": "<dir>"}, tree(t, parent)); diff != "" {
		t.Errorf("hostile specs wrote files (-want +got):\n%s", diff)
	}

	// A good site afterwards writes only under its own server directory.
	if _, err := prov.Provision(context.Background(), spec("php", "example.com"), nil); err != nil {
		t.Fatal(err)
	}
	for path := range tree(t, parent) {
		if path != "." && path != "root" && path != "root/vps_1" && !strings.HasPrefix(path, "root/vps_1/") {
			t.Errorf("file outside the server directory: %s", path)
		}
	}
}

func TestValuesCheckRejectsInjection(t *testing.T) {
	t.Parallel()

	b := setup(t)
	site := spec("laravel", "example.com")
	sp, err := b.prov.paths(site)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := b.prov.tlsPaths(site, sp)
	if err != nil {
		t.Fatal(err)
	}
	good := b.prov.values(site, sp, tp)
	if err := good.check(); err != nil {
		t.Fatalf("check of good values: %v", err)
	}

	// ValidateSiteSpec is bypassed here on purpose: check is the last line of defence.
	tests := []struct {
		name string
		edit func(*siteValues)
	}{
		{"domain newline", func(v *siteValues) { v.Domain = "a.com;\n}\nserver {" }},
		{"domain dollar", func(v *siteValues) { v.Domain = "$host.com" }},
		{"site id quote", func(v *siteValues) { v.SiteID = `a"b` }},
		{"tenant brace", func(v *siteValues) { v.TenantID = "t}" }},
		{"user semicolon", func(v *siteValues) { v.User = "s_x;" }},
		{"user leading digit", func(v *siteValues) { v.User = "1x" }},
		{"php version on php site", func(v *siteValues) { v.PHPVersion = "" }},
		{"php version injection", func(v *siteValues) { v.PHPVersion = "8.3\nlisten = 0.0.0.0:9000" }},
		{"php version on html", func(v *siteValues) { v.PHP, v.FrontController = false, false }},
		{"site type", func(v *siteValues) { v.SiteType = "laravel;" }},
		{"doc root space", func(v *siteValues) { v.DocumentRoot = "/srv/a b" }},
		{"doc root relative", func(v *siteValues) { v.DocumentRoot = "srv/a" }},
		{"socket semicolon", func(v *siteValues) { v.Socket = "/run/x.sock;" }},
		{"log dir dollar", func(v *siteValues) { v.LogDir = "/var/$log" }},
		{"tmp dir brace", func(v *siteValues) { v.TmpDir = "/tmp/}" }},
		{"site dir quote", func(v *siteValues) { v.SiteDir = "/srv/'x" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := good
			tt.edit(&v)
			if _, err := render(v); !errors.Is(err, drivers.ErrInvalidSpec) {
				t.Errorf("render(%+v) error = %v, want ErrInvalidSpec", v, err)
			}
		})
	}
}

func TestInside(t *testing.T) {
	t.Parallel()

	tests := []struct {
		base, path string
		want       bool
	}{
		{"/r/vps_1", "/r/vps_1/sites/a.com", true},
		{"/r/vps_1", "/r/vps_1/x/../y", true},
		{"/r/vps_1", "/r/vps_1", false},
		{"/r/vps_1", "/r/vps_1/", false},
		{"/r/vps_1", "/r/vps_1/sites/..", false},
		{"/r/vps_1", "/r/vps_1/..", false},
		{"/r/vps_1", "/r/vps_10/a", false},
		{"/r/vps_1", "/r/vps_1/../vps_2/a", false},
		{"/r/vps_1", "/etc/passwd", false},
		{"/r/vps_1", "/r/vps_1/..foo", true},
	}
	for _, tt := range tests {
		if got := inside(tt.base, tt.path); got != tt.want {
			t.Errorf("inside(%q, %q) = %v, want %v", tt.base, tt.path, got, tt.want)
		}
	}
}

func TestCheckServerBlocks(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		conf    string
		want    []string
		wantErr string
	}{
		{"ok", "# c {\nserver {\n  server_name a.com b.com;\n  location / {\n    root /x;\n  }\n}\n", []string{"a.com", "b.com"}, ""},
		{"unclosed", "server {\n server_name a.com;\n", nil, "unclosed"},
		{"extra close", "server {\n server_name a.com;\n}\n}\n", nil, "outside a server block"},
		{"close first", "}\n", nil, "outside a server block"},
		{"unterminated", "server {\n server_name a.com\n}\n", nil, "not terminated"},
		{"no server_name", "server {\n listen 80;\n}\n", nil, "no server_name"},
		{"nested server_name only", "server {\n location / {\n server_name a.com;\n }\n}\n", nil, "no server_name"},
		{"empty", "", nil, "no server block"},
		{"directive outside", "listen 80;\nserver {\n server_name a.com;\n}\n", nil, "outside a server block"},
		{"carriage return", "server {\r\n server_name a.com;\n}\n", nil, "control character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := checkServerBlocks([]byte(tt.conf))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("names mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConcurrentProvisionOnOneServer(t *testing.T) {
	t.Parallel()

	b := setup(t)
	domains := []string{"a.example.com", "b.example.com", "c.example.com", "d.example.com", "e.example.com", "f.example.com"}
	var wg sync.WaitGroup
	errs := make([]error, len(domains))
	for i, d := range domains {
		wg.Go(func() {
			site := spec([]string{"html", "php", "laravel", "wordpress"}[i%4], d)
			if _, errs[i] = b.prov.Provision(context.Background(), site, nil); errs[i] != nil {
				return
			}
			if i%2 == 0 {
				errs[i] = b.prov.Deprovision(context.Background(), site)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	confs, _ := filepath.Glob(filepath.Join(b.root, "vps_1", "nginx", "sites-enabled", "*"))
	if len(confs) != len(domains)/2 {
		t.Errorf("server blocks left: %v, want %d", confs, len(domains)/2)
	}
}
