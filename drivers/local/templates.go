package local

import (
	"bytes"
	"fmt"
	htmltemplate "html/template"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/chomhq/chom/drivers"
)

// siteValues is everything the templates may render. It is built only from a spec
// that passed drivers.ValidateSiteSpec and from paths under the configured root, and
// check runs again just before rendering, so a bug upstream cannot smuggle a newline,
// ';', '{', '}', a quote or a '$' into an nginx or php-fpm file.
type siteValues struct {
	SiteID     string
	TenantID   string
	Domain     string
	SiteType   string
	PHPVersion string // empty for html
	User       string

	SiteDir      string
	DocumentRoot string
	LogDir       string
	TmpDir       string
	Socket       string

	PHP             bool // php-fpm pool and a PHP location block
	FrontController bool // unknown paths go to /index.php (laravel, wordpress)
}

var (
	idPattern   = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
	userPattern = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	// pathPattern is what an absolute path may look like in a rendered file. New
	// holds Root to it, so a data directory with a space or a quote in its name is a
	// start-up error rather than a broken server block.
	pathPattern = regexp.MustCompile(`^(/[A-Za-z0-9._+-]+)+$`)
)

// forbidden are characters that could end a directive, open a block, start a
// variable or a comment, or break out of a value in nginx or php-fpm syntax. No
// pattern above admits them; checking anyway costs nothing.
const forbidden = "\n\r\x00;{}\"'`$#\\ \t"

func (v siteValues) check() error {
	type field struct {
		name, value string
		ok          bool
	}
	fields := []field{
		{"site id", v.SiteID, idPattern.MatchString(v.SiteID)},
		{"tenant id", v.TenantID, idPattern.MatchString(v.TenantID)},
		{"domain", v.Domain, drivers.ValidateDomain(v.Domain) == nil},
		{"site type", v.SiteType, slices.Contains([]string{drivers.SiteTypeWordPress, drivers.SiteTypeLaravel, drivers.SiteTypePHP, drivers.SiteTypeHTML}, v.SiteType)},
		{"php version", v.PHPVersion, v.phpVersionOK()},
		{"system user", v.User, userPattern.MatchString(v.User)},
		{"site dir", v.SiteDir, pathPattern.MatchString(v.SiteDir)},
		{"document root", v.DocumentRoot, pathPattern.MatchString(v.DocumentRoot)},
		{"log dir", v.LogDir, pathPattern.MatchString(v.LogDir)},
		{"tmp dir", v.TmpDir, pathPattern.MatchString(v.TmpDir)},
		{"socket", v.Socket, pathPattern.MatchString(v.Socket)},
	}
	for _, f := range fields {
		if !f.ok || strings.ContainsAny(f.value, forbidden) {
			return fmt.Errorf("%w: refusing to render %s %q", drivers.ErrInvalidSpec, f.name, f.value)
		}
	}
	return nil
}

func (v siteValues) phpVersionOK() bool {
	if v.PHP {
		return slices.Contains(drivers.SupportedPHPVersions(), v.PHPVersion)
	}
	return v.PHPVersion == ""
}

// nginxTemplate is one server block. Keep braces out of comments and regexes: the
// reload check counts them.
var nginxTemplate = template.Must(template.New("nginx").Option("missingkey=error").Parse(`# Managed by CHOM: site {{.SiteID}} of tenant {{.TenantID}} ({{.SiteType}}).
# Changes here are overwritten on the next provision.
server {
    listen 80;
    listen [::]:80;
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
listen.owner = www-data
listen.group = www-data
listen.mode = 0660
pm = ondemand
pm.max_children = 5
pm.process_idle_timeout = 10s
pm.max_requests = 500
php_admin_value[open_basedir] = {{.SiteDir}}/
php_admin_value[upload_tmp_dir] = {{.TmpDir}}
php_admin_value[sys_temp_dir] = {{.TmpDir}}
php_admin_value[error_log] = {{.LogDir}}/php-error.log
php_admin_flag[log_errors] = on
`))

// indexTemplate is the starter page. html/template escapes the domain for its
// context even though a validated domain has nothing to escape. The PHP probe is a
// constant passed as trusted HTML, because html/template would escape the "<?" of
// literal template text.
var indexTemplate = htmltemplate.Must(htmltemplate.New("index").Funcs(htmltemplate.FuncMap{
	"phpProbe": func() htmltemplate.HTML { return `<?= htmlspecialchars(PHP_VERSION) ?>` },
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
<p>PHP {{phpProbe}} is running.</p>
{{- end}}
</body>
</html>
`))

// rendered holds the contents of a site's files, produced before anything is written
// so a template error changes nothing on disk.
type rendered struct {
	nginx []byte
	pool  []byte // nil for html
	index []byte
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

// checkServerBlocks is the local stand-in for `nginx -t` on one file: braces balance
// and never close more than they opened, every directive ends in ';', '{' or '}', and
// server blocks carry a server_name. It returns the server names it found.
func checkServerBlocks(conf []byte) ([]string, error) {
	var (
		depth   int
		servers int
		names   []string
	)
	for i, line := range strings.Split(string(conf), "\n") {
		if strings.ContainsAny(line, "\r\x00") {
			return nil, fmt.Errorf("line %d: control character", i+1)
		}
		if hash := strings.IndexByte(line, '#'); hash >= 0 {
			line = line[:hash]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if !strings.ContainsAny(line[len(line)-1:], ";{}") {
			return nil, fmt.Errorf("line %d: directive %q is not terminated", i+1, line)
		}
		fields := strings.Fields(line)
		switch {
		case depth == 0 && line != "server {":
			return nil, fmt.Errorf("line %d: %q outside a server block", i+1, line)
		case depth == 0:
			servers++
		case depth == 1 && fields[0] == "server_name":
			for _, n := range fields[1:] {
				names = append(names, strings.TrimSuffix(n, ";"))
			}
		}
		depth += strings.Count(line, "{") - strings.Count(line, "}")
		if depth < 0 {
			return nil, fmt.Errorf("line %d: unbalanced '}'", i+1)
		}
	}
	switch {
	case depth != 0:
		return nil, fmt.Errorf("%d unclosed '{'", depth)
	case servers == 0:
		return nil, fmt.Errorf("no server block")
	case len(names) == 0:
		return nil, fmt.Errorf("no server_name")
	}
	return names, nil
}
