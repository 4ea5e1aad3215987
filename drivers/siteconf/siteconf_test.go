package siteconf_test

import (
	"strings"
	"testing"

	"github.com/chomhq/chom/drivers/siteconf"
)

func values(php bool) siteconf.Values {
	v := siteconf.Values{SiteID: "site_a", TenantID: "ten_a", Domain: "a.example", SiteType: "html",
		User: "s_site_a", WebGroup: "www-data", SiteRoot: "/srv/a", DocumentRoot: "/srv/a/public",
		LogDir: "/var/log/a", TmpDir: "/srv/a/tmp", SessionDir: "/srv/a/sessions", PHPLogDir: "/srv/a/logs", Socket: "/run/php/a.sock", Listen: []string{"80", "[::]:80"}, ChallengeDir: "/var/lib/acme/a",
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
		{"html nginx acme", string(html.Nginx), []string{"    location ^~ /.well-known/acme-challenge/ {\n        alias /var/lib/acme/a/;\n        default_type text/plain;\n    }\n"},
			[]string{"ssl", "443", "return 301", "Strict-Transport-Security", "http2"}},
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

// tlsValues is values(php) with a TLS block.
func tlsValues(php bool, edit func(*siteconf.TLS)) siteconf.Values {
	v := values(php)
	v.Aliases = []string{"www.a.example", "shop.example"}
	v.TLS = &siteconf.TLS{Listen: []string{"443", "[::]:443"}, Certificate: "/var/lib/chom/site_a/tls/fullchain.pem",
		Key: "/var/lib/chom/site_a/tls/privkey.pem", Ciphers: siteconf.Ciphers}
	if edit != nil {
		edit(v.TLS)
	}
	return v
}

// A TLS site gets two blocks: port 80 answers ACME challenges (before its
// redirect) and sends the rest to HTTPS; the TLS ports serve the site with
// TLS 1.2/1.3 and HTTP/2 in the syntax the server's nginx takes, OCSP
// stapling and HSTS only when asked. Aliases are in both blocks' server_name.
func TestRenderTLS(t *testing.T) {
	t.Parallel()
	render := func(v siteconf.Values) (plain, tls string) {
		t.Helper()
		f, err := siteconf.Render(v)
		if err != nil {
			t.Fatal(err)
		}
		conf := string(f.Nginx)
		i := strings.LastIndex(conf, "\nserver {\n")
		if i < 0 || strings.Count(conf, "\nserver {\n") != 2 {
			t.Fatalf("want two server blocks:\n%s", conf)
		}
		return conf[:i], conf[i:]
	}
	const acme = "    location ^~ /.well-known/acme-challenge/ {\n        alias /var/lib/acme/a/;\n        default_type text/plain;\n    }\n"
	plain, tls := render(tlsValues(true, nil))
	for _, c := range []struct {
		name, got string
		want, not []string
	}{
		{"port 80", plain, []string{"    listen 80;\n    listen [::]:80;\n", "server_name a.example www.a.example shop.example;", acme,
			"    location / {\n        return 301 https://$host$request_uri;\n    }\n", "access_log /var/log/a/access.log;"},
			[]string{"ssl", "root ", "fastcgi_pass", "try_files", "Strict-Transport-Security"}},
		{"tls", tls, []string{"    listen 443 ssl;\n    listen [::]:443 ssl;\n    http2 on;\n", "server_name a.example www.a.example shop.example;",
			"ssl_certificate /var/lib/chom/site_a/tls/fullchain.pem;", "ssl_certificate_key /var/lib/chom/site_a/tls/privkey.pem;",
			"ssl_protocols TLSv1.2 TLSv1.3;", "ssl_ciphers " + siteconf.Ciphers + ";", "ssl_session_tickets off;",
			acme, "fastcgi_pass unix:/run/php/a.sock;", "try_files $uri $uri/ /index.php?$query_string;",
			"disable_symlinks if_not_owner from=$document_root;", "root /srv/a/public;"},
			[]string{"ssl_stapling", "resolver", "Strict-Transport-Security", "return 301", "listen 80", "http2;", "TLSv1.1", "SSLv3"}},
	} {
		for _, w := range c.want {
			if !strings.Contains(c.got, w) {
				t.Errorf("%s block lacks %q:\n%s", c.name, w, c.got)
			}
		}
		for _, n := range c.not {
			if strings.Contains(c.got, n) {
				t.Errorf("%s block has %q:\n%s", c.name, n, c.got)
			}
		}
	}
	if strings.Index(plain, "acme-challenge") > strings.Index(plain, "return 301") {
		t.Error("the ACME location comes after the redirect")
	}

	_, tls = render(tlsValues(false, func(t *siteconf.TLS) {
		t.HTTP2Listen, t.OCSP, t.Resolvers, t.HSTSMaxAge = true, true, []string{"192.0.2.53", "[2001:db8::53]"}, 31536000
	}))
	for _, w := range []string{"    listen 443 ssl http2;\n    listen [::]:443 ssl http2;\n", "ssl_stapling on;\n    ssl_stapling_verify on;\n",
		"resolver 192.0.2.53 [2001:db8::53] valid=300s;", `add_header Strict-Transport-Security "max-age=31536000" always;`} {
		if !strings.Contains(tls, w) {
			t.Errorf("tls block (nginx 1.22, OCSP, HSTS) lacks %q:\n%s", w, tls)
		}
	}
	if strings.Contains(tls, "http2 on;") {
		t.Errorf("tls block for nginx before 1.25.1 has http2 on;:\n%s", tls)
	}
	_, tls = render(tlsValues(false, func(t *siteconf.TLS) { t.OCSP = true }))
	if !strings.Contains(tls, "ssl_stapling on;") || strings.Contains(tls, "resolver") {
		t.Errorf("OCSP without resolvers:\n%s", tls)
	}
}

// A site without TLS renders exactly one server block, and its aliases join
// server_name.
func TestRenderAliasesPlain(t *testing.T) {
	t.Parallel()
	v := values(false)
	v.Aliases = []string{"www.a.example"}
	f, err := siteconf.Render(v)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(f.Nginx)
	if n := strings.Count(conf, "\nserver {\n"); n != 1 || !strings.Contains(conf, "server_name a.example www.a.example;") {
		t.Errorf("%d server blocks, want 1 with both names:\n%s", n, conf)
	}
}
