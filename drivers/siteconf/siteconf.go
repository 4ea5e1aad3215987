// Package siteconf renders the files every driver puts on a server for a site:
// the nginx server block, the php-fpm pool and the starter page. The local and
// ssh drivers render the same files from the same templates; each checks its
// own values (its path rules differ) before calling Render.
package siteconf

import (
	"bytes"
	"fmt"
	htmltemplate "html/template"
	"text/template"
)

// Values is everything the templates render. Render does not validate it: the
// calling driver checks every value first (no newline, ';', '{', '}', quote or
// '$' may reach an nginx or php-fpm file).
type Values struct {
	SiteID, TenantID, Domain, SiteType, PHPVersion string
	// User runs the pool; WebGroup (nginx's group) may use its socket.
	User, WebGroup string
	// SiteRoot bounds the pool's open_basedir; the others are where the
	// site's documents, logs, temporary files and pool socket live.
	SiteRoot, DocumentRoot, LogDir, TmpDir, Socket string
	// Listen are the server block's listen addresses ("80", "[::]:80").
	Listen []string
	// PHP adds the php-fpm pool and a PHP location block; FrontController
	// sends unknown paths to /index.php (laravel, wordpress).
	PHP, FrontController bool
	// PHPProbe is what the starter page of a PHP site prints after "PHP ": a
	// constant of the driver's, rendered as trusted HTML (html/template would
	// escape its "<?"), never a value from a request.
	PHPProbe htmltemplate.HTML
}

// Files are a site's rendered files, produced before anything is written so a
// template error changes nothing on the server.
type Files struct {
	Nginx, Pool, Index []byte // Pool is nil for a site without PHP
}

// Render renders v's files.
func Render(v Values) (Files, error) {
	var f Files
	var buf bytes.Buffer
	if err := nginxTemplate.Execute(&buf, v); err != nil {
		return Files{}, fmt.Errorf("render nginx config: %w", err)
	}
	f.Nginx = bytes.Clone(buf.Bytes())
	if v.PHP {
		buf.Reset()
		if err := poolTemplate.Execute(&buf, v); err != nil {
			return Files{}, fmt.Errorf("render php-fpm pool: %w", err)
		}
		f.Pool = bytes.Clone(buf.Bytes())
	}
	buf.Reset()
	if err := indexTemplate.Execute(&buf, v); err != nil {
		return Files{}, fmt.Errorf("render index page: %w", err)
	}
	f.Index = bytes.Clone(buf.Bytes())
	return f, nil
}

// nginxTemplate is one server block. Keep braces out of comments and regexes:
// the local driver's reload check counts them.
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

// indexTemplate is the starter page. html/template escapes the domain for its
// context even though a validated domain has nothing to escape.
var indexTemplate = htmltemplate.Must(htmltemplate.New("index").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Domain}}</title>
</head>
<body>
<h1>{{.Domain}}</h1>
<p>This site is ready. Upload your own content to replace this page.</p>
{{- if .PHP}}
<p>PHP {{.PHPProbe}}.</p>
{{- end}}
</body>
</html>
`))
