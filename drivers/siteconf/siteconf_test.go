package siteconf_test

import (
	"strings"
	"testing"

	"github.com/chomhq/chom/drivers/siteconf"
)

func values(php bool) siteconf.Values {
	v := siteconf.Values{SiteID: "site_a", TenantID: "ten_a", Domain: "a.example", SiteType: "html",
		User: "s_site_a", WebGroup: "www-data", SiteRoot: "/srv/a", DocumentRoot: "/srv/a/public",
		LogDir: "/var/log/a", TmpDir: "/srv/a/tmp", SessionDir: "/srv/a/sessions", PHPLogDir: "/srv/a/logs", Socket: "/run/php/a.sock", Listen: []string{"80", "[::]:80"},
		PHPProbe: `<?= PHP_VERSION ?>`}
	if php {
		v.SiteType, v.PHPVersion, v.PHP, v.FrontController = "laravel", "8.3", true, true
	}
	return v
}

// An html site gets a static server block and no pool; a PHP site a fastcgi
// block, a pool bounded to its root, and a starter page that runs the probe.
func TestRender(t *testing.T) {
	t.Parallel()
	html, err := siteconf.Render(values(false))
	if err != nil {
		t.Fatal(err)
	}
	php, err := siteconf.Render(values(true))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, got string
		want      []string
		not       []string
	}{
		{"html nginx", string(html.Nginx), []string{"    listen 80;\n    listen [::]:80;\n", "server_name a.example;", "try_files $uri $uri/ =404;"},
			[]string{"fastcgi_pass", "index.php"}},
		{"php nginx", string(php.Nginx), []string{"try_files $uri $uri/ /index.php?$query_string;", "fastcgi_pass unix:/run/php/a.sock;",
			"disable_symlinks if_not_owner from=$document_root;", "access_log /var/log/a/access.log;"}, nil},
		{"html nginx symlinks", string(html.Nginx), []string{"disable_symlinks if_not_owner from=$document_root;"}, nil},
		{"php pool", string(php.Pool), []string{"[s_site_a]", "listen.owner = www-data", "php_admin_value[open_basedir] = /srv/a/\n",
			"php_admin_value[upload_tmp_dir] = /srv/a/tmp\n", "php_admin_value[sys_temp_dir] = /srv/a/tmp\n",
			"php_admin_value[session.save_path] = /srv/a/sessions\n", "php_admin_value[error_log] = /srv/a/logs/php-error.log\n",
			"php_admin_value[disable_functions] = exec,shell_exec,system,passthru,proc_open,popen,pcntl_exec,pcntl_fork,pcntl_rfork,putenv,dl\n",
			"php_admin_value[ffi.enable] = false\n"}, []string{"php_value["}},
		{"html index", string(html.Index), []string{"<h1>a.example</h1>"}, []string{"PHP"}},
		{"php index", string(php.Index), []string{"<p>PHP <?= PHP_VERSION ?>.</p>"}, []string{"&lt;?"}},
	} {
		for _, w := range c.want {
			if !strings.Contains(c.got, w) {
				t.Errorf("%s lacks %q:\n%s", c.name, w, c.got)
			}
		}
		for _, n := range c.not {
			if strings.Contains(c.got, n) {
				t.Errorf("%s has %q:\n%s", c.name, n, c.got)
			}
		}
	}
	if html.Pool != nil {
		t.Errorf("html site got a pool:\n%s", html.Pool)
	}
}
