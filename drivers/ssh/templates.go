package ssh

import (
	"bytes"
	"fmt"
	htmltemplate "html/template"
	"regexp"
	"strings"
	"text/template"

	"github.com/chomhq/chom/drivers"
)

// siteValues is everything the templates may render: values of a spec that
// passed drivers.ValidateSiteSpec and paths of a validated Layout. check runs
// again just before rendering, so a bug upstream cannot smuggle a newline, ';',
// '{', '}', a quote or a '$' into an nginx or php-fpm file.
type siteValues struct {
	SiteID, TenantID, Domain, SiteType, PHPVersion string
	User, WebGroup                                 string

	SiteRoot, DocumentRoot, LogDir, TmpDir, Socket string
	Listen                                         []string

	PHP             bool // php-fpm pool and a PHP location block
	FrontController bool // unknown paths go to /index.php (laravel, wordpress)
}

var userPattern = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// forbidden are characters that could end a directive, open a block, start a
// variable or a comment, or break out of a value in nginx or php-fpm syntax.
const forbidden = "\n\r\x00;{}\"'`$#\\ \t"

func (v siteValues) check() error {
	vals := []struct {
		name, value string
		ok          bool
	}{
		{"domain", v.Domain, drivers.ValidateDomain(v.Domain) == nil},
		{"system user", v.User, userPattern.MatchString(v.User)},
		{"web group", v.WebGroup, groupPattern.MatchString(v.WebGroup)},
		{"site id", v.SiteID, true}, {"tenant id", v.TenantID, true},
		{"site type", v.SiteType, true}, {"php version", v.PHPVersion, true},
		{"site root", v.SiteRoot, layoutPath.MatchString(v.SiteRoot)},
		{"document root", v.DocumentRoot, layoutPath.MatchString(v.DocumentRoot)},
		{"log dir", v.LogDir, layoutPath.MatchString(v.LogDir)},
		{"tmp dir", v.TmpDir, layoutPath.MatchString(v.TmpDir)},
		{"socket", v.Socket, layoutPath.MatchString(v.Socket)},
	}
	for _, l := range v.Listen {
		vals = append(vals, struct {
			name, value string
			ok          bool
		}{"listen", l, listenAddr.MatchString(l)})
	}
	for _, f := range vals {
		if !f.ok || strings.ContainsAny(f.value, forbidden) {
			return fmt.Errorf("%w: refusing to render %s %q", drivers.ErrInvalidSpec, f.name, f.value)
		}
	}
	return nil
}

var nginxTemplate = template.Must(template.New("nginx").Option("missingkey=error").Parse(`# Managed by CHOM: site {{.SiteID}} of tenant {{.TenantID}} ({{.SiteType}}).
# Changes here are overwritten on the next provision.
server {
{{- range .Listen}}
    listen {{.}};
{{- end}}
    server_name {{.Domain}};

    root {{.DocumentRoot}};
    index {{if .PHP}}index.php {{end}}index.html;

    access_log {{.LogDir}}/access.log;
    error_log {{.LogDir}}/error.log;

    location / {
{{- if .FrontController}}
        try_files $uri $uri/ /index.php?$query_string;
{{- else}}
        try_files $uri $uri/ =404;
{{- end}}
    }
{{- if .PHP}}

    location ~ \.php$ {
        try_files $uri =404;
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
        fastcgi_pass unix:{{.Socket}};
    }
{{- end}}

    # Dotfiles such as .env and .git are never served; ACME challenges are.
    location ~ /\.(?!well-known/) {
        deny all;
    }
}
`))

// poolTemplate is one php-fpm pool. open_basedir ends in '/' so that the site
// "a.com" cannot read the neighbouring "a.com.evil".
var poolTemplate = template.Must(template.New("pool").Option("missingkey=error").Parse(`; Managed by CHOM: site {{.SiteID}} of tenant {{.TenantID}} ({{.SiteType}}, PHP {{.PHPVersion}}).
; Changes here are overwritten on the next provision.
[{{.User}}]
user = {{.User}}
group = {{.User}}
listen = {{.Socket}}
listen.owner = {{.WebGroup}}
listen.group = {{.WebGroup}}
listen.mode = 0660
pm = ondemand
pm.max_children = 5
pm.process_idle_timeout = 10s
pm.max_requests = 500
php_admin_value[open_basedir] = {{.SiteRoot}}/
php_admin_value[upload_tmp_dir] = {{.TmpDir}}
php_admin_value[sys_temp_dir] = {{.TmpDir}}
php_admin_value[error_log] = {{.LogDir}}/php-error.log
php_admin_flag[log_errors] = on
`))

// indexTemplate is the starter page. For PHP sites it computes something, so
// a GET proves PHP ran (the raw "<?=" would show otherwise).
var indexTemplate = htmltemplate.Must(htmltemplate.New("index").Funcs(htmltemplate.FuncMap{
	"phpProbe": func() htmltemplate.HTML {
		return `<?= htmlspecialchars(PHP_VERSION) ?> is running: 6 * 7 = <?= 6 * 7 ?>`
	},
}).Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Domain}}</title>
</head>
<body>
<h1>{{.Domain}}</h1>
<p>This site is ready. Upload your own content to replace this page.</p>
{{- if .PHP}}
<p>PHP {{phpProbe}}.</p>
{{- end}}
</body>
</html>
`))

// rendered holds a site's files, produced before anything is written so a
// template error changes nothing on the server.
type rendered struct {
	nginx, pool, index []byte // pool is nil for html
}

func render(v siteValues) (rendered, error) {
	if err := v.check(); err != nil {
		return rendered{}, err
	}
	var r rendered
	var buf bytes.Buffer
	if err := nginxTemplate.Execute(&buf, v); err != nil {
		return rendered{}, fmt.Errorf("render nginx config: %w", err)
	}
	r.nginx = bytes.Clone(buf.Bytes())
	if v.PHP {
		buf.Reset()
		if err := poolTemplate.Execute(&buf, v); err != nil {
			return rendered{}, fmt.Errorf("render php-fpm pool: %w", err)
		}
		r.pool = bytes.Clone(buf.Bytes())
	}
	buf.Reset()
	if err := indexTemplate.Execute(&buf, v); err != nil {
		return rendered{}, fmt.Errorf("render index page: %w", err)
	}
	r.index = bytes.Clone(buf.Bytes())
	return r, nil
}
