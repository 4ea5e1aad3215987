// Package siteconf renders the files every driver puts on a server for a site:
// the nginx server block, the php-fpm pool and the starter page. The local and
// ssh drivers render the same files from the same templates; each checks its
// own values (its path rules differ) before calling Render.
package siteconf

import (
	"bytes"
	"fmt"
	htmltemplate "html/template"
	"slices"
	"strings"
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
	// site's documents, nginx logs, temporary files and pool socket live.
	// LogDir is opened by nginx's master (root): a driver keeps it out of the
	// site user's reach (see docs/operations.md, Isolation).
	SiteRoot, DocumentRoot, LogDir, TmpDir, Socket string
	// SessionDir holds the pool's PHP sessions and PHPLogDir its
	// php-error.log: directories of the site user's own, inside SiteRoot,
	// never a directory shared with other sites.
	SessionDir, PHPLogDir string
	// Listen are the server block's listen addresses ("80", "[::]:80").
	Listen []string
	// Aliases are the site's other server names, after Domain in server_name.
	Aliases []string
	// ChallengeDir is the site's directory of ACME HTTP-01 tokens (root's,
	// outside SiteRoot), served at /.well-known/acme-challenge/.
	ChallengeDir string
	// TLS, when not nil, serves the site over HTTPS and redirects HTTP to it.
	TLS *TLS
	// PHP adds the php-fpm pool and a PHP location block; FrontController
	// sends unknown paths to /index.php (laravel, wordpress).
	PHP, FrontController bool
	// PHPProbe is what the starter page of a PHP site prints after "PHP ": a
	// constant of the driver's, rendered as trusted HTML (html/template would
	// escape its "<?"), never a value from a request.
	PHPProbe htmltemplate.HTML
}

// TLS is what the HTTPS server block renders.
type TLS struct {
	// Listen are the TLS listen addresses ("443", "[::]:443").
	Listen []string
	// HTTP2Listen enables HTTP/2 with "listen … ssl http2" (nginx before
	// 1.25.1, e.g. Debian 12's 1.22) instead of "http2 on;" (1.25.1 and
	// later, which deprecate the listen parameter).
	HTTP2Listen bool
	// Certificate (leaf, then intermediates) and Key are the files nginx's
	// master reads as root.
	Certificate, Key string
	// Ciphers is the TLS 1.2 cipher list; Ciphers (the constant) unless a
	// driver has reason to differ.
	Ciphers string
	// OCSP turns stapling on (only when the leaf names a responder and the
	// chain holds its issuer); Resolvers, when set, are nginx's resolvers for
	// the responder's name.
	OCSP      bool
	Resolvers []string
	// HSTSMaxAge, when not zero, adds Strict-Transport-Security with this
	// max-age in seconds.
	HSTSMaxAge int64
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

// nginxTemplate is the site's server blocks: one on the HTTP ports serving the
// site (no TLS) or, with TLS, one answering only ACME challenges and redirecting
// everything else to HTTPS, plus one on the TLS ports serving the site. Keep
// braces out of comments and regexes: the local driver's reload check counts
// them.
var nginxTemplate = template.Must(template.New("nginx").Option("missingkey=error").Parse(`# Managed by CHOM: site {{.SiteID}} of tenant {{.TenantID}} ({{.SiteType}}).
# Changes here are overwritten on the next provision.
server {
{{- range .Listen}}
    listen {{.}};
{{- end}}
{{- if .TLS}}
    server_name {{.Domain}}{{range .Aliases}} {{.}}{{end}};

    access_log {{.LogDir}}/access.log;
    error_log {{.LogDir}}/error.log;
{{- template "acme" .}}

    # Everything but ACME challenges moves to HTTPS; $host is one of the
    # names above, since nginx picked this block by it.
    location / {
        return 301 https://$host$request_uri;
    }
}

server {
{{- range .TLS.Listen}}
    listen {{.}} ssl{{if $.TLS.HTTP2Listen}} http2{{end}};
{{- end}}
{{- if not .TLS.HTTP2Listen}}
    http2 on;
{{- end}}
{{- end}}
    server_name {{.Domain}}{{range .Aliases}} {{.}}{{end}};
{{- with .TLS}}

    ssl_certificate {{.Certificate}};
    ssl_certificate_key {{.Key}};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers {{.Ciphers}};
    ssl_prefer_server_ciphers off;
    ssl_session_timeout 1d;
    ssl_session_cache shared:chom_tls:10m;
    ssl_session_tickets off;
{{- if .OCSP}}
    ssl_stapling on;
    ssl_stapling_verify on;
{{- if .Resolvers}}
    resolver{{range .Resolvers}} {{.}}{{end}} valid=300s;
    resolver_timeout 5s;
{{- end}}
{{- end}}
{{- if .HSTSMaxAge}}
    add_header Strict-Transport-Security "max-age={{.HSTSMaxAge}}" always;
{{- end}}
{{- end}}

    root {{.DocumentRoot}};
    index {{if .PHP}}index.php {{end}}index.html;

    # A link is followed only when it and its target have one owner, so a
    # tenant's link into another tenant's tree is refused.
    disable_symlinks if_not_owner from=$document_root;

    access_log {{.LogDir}}/access.log;
    error_log {{.LogDir}}/error.log;
{{- template "acme" .}}

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
{{- define "acme"}}

    # HTTP-01 challenges come from a directory of root's outside the
    # document root: the site's code can neither plant nor read a token.
    location ^~ /.well-known/acme-challenge/ {
        alias {{.ChallengeDir}}/;
        default_type text/plain;
    }
{{- end}}
`))

// Ciphers are the TLS 1.2 cipher suites of the TLS block, strongest first: the
// ECDHE AEAD suites of Mozilla's "intermediate" profile (TLS 1.3 suites are not
// configurable in nginx and are all good). The DHE suites of that profile are
// left out: they need a dhparam file and every client that speaks TLS 1.2 has
// ECDHE.
const Ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" +
	"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

// disabledFunctions are the PHP functions no site's pool may call: every way
// to run a program (exec, shell_exec, system, passthru, proc_open, popen,
// pcntl_exec, and pcntl_fork, which only serves to outlive the request) and
// the classic ways around such a list (putenv, which with mail() loads a
// library of the site's choosing through LD_PRELOAD; dl, which loads an
// extension). php_admin_value puts them out of the site's reach: neither
// ini_set nor a .user.ini can take one back. mail() stays: WordPress sends its
// mail through it, and the program it runs is the server's sendmail_path,
// not the site's. FFI and dl() are switched off beside the list.
//
// A site type may relax the list only where it needs to, through
// relaxedFunctions. None does: WordPress and Laravel serve requests without
// running programs (WordPress falls back to PHP for everything it would
// shell out for, and artisan runs from the CLI, whose php.ini is not the
// pool's).
var disabledFunctions = []string{
	"exec", "shell_exec", "system", "passthru", "proc_open", "popen",
	"pcntl_exec", "pcntl_fork", "pcntl_rfork", "putenv", "dl",
}

// relaxedFunctions are, per site type, functions of disabledFunctions that
// its pool may call after all (with the reason in a comment). Empty: no type
// needs one.
var relaxedFunctions = map[string][]string{}

// DisabledFunctions returns the PHP functions the pool of a site of type
// siteType may not call, in a fixed order.
func DisabledFunctions(siteType string) []string {
	var out []string
	for _, f := range disabledFunctions {
		if !slices.Contains(relaxedFunctions[siteType], f) {
			out = append(out, f)
		}
	}
	return out
}

// poolTemplate is one php-fpm pool. open_basedir ends in '/' so that the site
// "a.com" cannot read the neighbouring "a.com.evil".
var poolTemplate = template.Must(template.New("pool").Option("missingkey=error").Funcs(template.FuncMap{
	"disabledFunctions": func(siteType string) string { return strings.Join(DisabledFunctions(siteType), ",") },
}).Parse(`; Managed by CHOM: site {{.SiteID}} of tenant {{.TenantID}} ({{.SiteType}}, PHP {{.PHPVersion}}).
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
php_admin_value[session.save_path] = {{.SessionDir}}
php_admin_value[error_log] = {{.PHPLogDir}}/php-error.log
php_admin_flag[log_errors] = on
php_admin_value[disable_functions] = {{disabledFunctions .SiteType}}
php_admin_value[ffi.enable] = false
php_admin_flag[enable_dl] = off
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
