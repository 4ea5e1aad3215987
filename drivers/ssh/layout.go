package ssh

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
)

// versionPlaceholder in Layout.PHPPoolDir and the php-fpm commands is replaced
// by the site's PHP version ("8.2").
const versionPlaceholder = "{version}"

// Layout says where a site's parts live on a server and which commands check
// and reload its services. It is operator configuration (cmd/chom reads it
// from CHOM_SSH_* variables), never taken from a request. Empty fields take
// the Debian 12 defaults named on each; DefaultLayout returns them all.
type Layout struct {
	// WebRoot holds one directory per site, /var/www/<domain>: the site's
	// system user has it as home, its document root is <domain>/public.
	// Default /var/www.
	WebRoot string
	// NginxAvailable and NginxEnabled hold the server blocks
	// (<domain>.conf) and the links that enable them. Default
	// /etc/nginx/sites-available and /etc/nginx/sites-enabled.
	NginxAvailable, NginxEnabled string
	// PHPPoolDir is where php-fpm reads pools, with {version} for the PHP
	// version. Default /etc/php/{version}/fpm/pool.d.
	PHPPoolDir string
	// RunDir holds the pools' sockets, chom-<user>.sock. Default /run/php.
	RunDir string
	// LogDir holds one log directory per site, <domain>/. Default
	// /var/log/chom.
	LogDir string
	// StateDir holds one root-only directory per site ID with the files
	// CHOM keeps on the server (db.env with the database password) and the
	// staging area of restores. Default /var/lib/chom.
	StateDir string
	// WebGroup is the group nginx runs as, which may connect to the pool
	// sockets. Default www-data.
	WebGroup string
	// Listen are the nginx listen addresses of every server block. Default
	// "80" and "[::]:80".
	Listen []string
	// ListenTLS are the listen addresses of a site's HTTPS server block, once
	// a certificate is deployed. Default "443" and "[::]:443".
	ListenTLS []string
	// ChallengeDir holds one directory per site, <domain>/, of ACME HTTP-01
	// tokens: root's, readable by WebGroup (nginx's workers) only, outside
	// every site's tree. Default /var/lib/chom-acme.
	ChallengeDir string
	// Resolvers are the DNS servers nginx asks for a certificate's OCSP
	// responder (only rendered when stapling is on). Empty means the
	// nameservers of the server's /etc/resolv.conf at deploy time.
	Resolvers []string

	// NginxCheck and NginxReload are argv vectors (no shell): check the whole
	// configuration, then reload it. Default `nginx -t` and `systemctl reload
	// nginx`.
	NginxCheck, NginxReload []string
	// NginxVersion prints nginx's version ("nginx version: nginx/1.22.1"),
	// which decides how HTTP/2 is switched on. Default `nginx -v`.
	NginxVersion []string
	// PHPFPMCheck and PHPFPMReload do the same for php-fpm, {version} being
	// replaced in every element. Default `php-fpm{version} -t` and
	// `systemctl reload php{version}-fpm`.
	PHPFPMCheck, PHPFPMReload []string
	// MySQL and MySQLDump are the client invocations, run as the SSH user
	// (root, authenticated by the server's unix socket). Default `mysql` and
	// `mysqldump`.
	MySQL, MySQLDump []string
}

// DefaultLayout returns the layout of a Debian 12 server with the distribution's
// nginx, php-fpm and MariaDB packages.
func DefaultLayout() Layout {
	return Layout{
		WebRoot:        "/var/www",
		NginxAvailable: "/etc/nginx/sites-available",
		NginxEnabled:   "/etc/nginx/sites-enabled",
		PHPPoolDir:     "/etc/php/{version}/fpm/pool.d",
		RunDir:         "/run/php",
		LogDir:         "/var/log/chom",
		StateDir:       "/var/lib/chom",
		WebGroup:       "www-data",
		Listen:         []string{"80", "[::]:80"},
		ListenTLS:      []string{"443", "[::]:443"},
		ChallengeDir:   "/var/lib/chom-acme",
		NginxVersion:   []string{"nginx", "-v"},
		NginxCheck:     []string{"nginx", "-t"},
		NginxReload:    []string{"systemctl", "reload", "nginx"},
		PHPFPMCheck:    []string{"php-fpm{version}", "-t"},
		PHPFPMReload:   []string{"systemctl", "reload", "php{version}-fpm"},
		MySQL:          []string{"mysql"},
		MySQLDump:      []string{"mysqldump"},
	}
}

// withDefaults fills the empty fields of l from DefaultLayout.
func (l Layout) withDefaults() Layout {
	d := DefaultLayout()
	str := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	argv := func(v *[]string, def []string) {
		if len(*v) == 0 {
			*v = def
		}
	}
	str(&l.WebRoot, d.WebRoot)
	str(&l.NginxAvailable, d.NginxAvailable)
	str(&l.NginxEnabled, d.NginxEnabled)
	str(&l.PHPPoolDir, d.PHPPoolDir)
	str(&l.RunDir, d.RunDir)
	str(&l.LogDir, d.LogDir)
	str(&l.StateDir, d.StateDir)
	str(&l.WebGroup, d.WebGroup)
	argv(&l.Listen, d.Listen)
	argv(&l.ListenTLS, d.ListenTLS)
	str(&l.ChallengeDir, d.ChallengeDir)
	argv(&l.NginxVersion, d.NginxVersion)
	argv(&l.NginxCheck, d.NginxCheck)
	argv(&l.NginxReload, d.NginxReload)
	argv(&l.PHPFPMCheck, d.PHPFPMCheck)
	argv(&l.PHPFPMReload, d.PHPFPMReload)
	argv(&l.MySQL, d.MySQL)
	argv(&l.MySQLDump, d.MySQLDump)
	return l
}

var (
	// layoutPath is what a directory of the layout may look like: it is
	// rendered into nginx and php-fpm files, so no space, quote or ';'.
	layoutPath   = regexp.MustCompile(`^(/[A-Za-z0-9._+-]+)+$`)
	listenAddr   = regexp.MustCompile(`^(\[[0-9a-fA-F:.]+\]:|[0-9.]+:)?[0-9]{1,5}$`)
	groupPattern = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
)

// Validate reports every problem with l (after defaults) at once, or nil.
func (l Layout) Validate() error {
	var errs []error
	dirs := []struct{ name, v string }{
		{"WebRoot", l.WebRoot}, {"NginxAvailable", l.NginxAvailable}, {"NginxEnabled", l.NginxEnabled},
		{"PHPPoolDir", strings.ReplaceAll(l.PHPPoolDir, versionPlaceholder, "8.2")},
		{"RunDir", l.RunDir}, {"LogDir", l.LogDir}, {"StateDir", l.StateDir}, {"ChallengeDir", l.ChallengeDir},
	}
	for _, d := range dirs {
		switch {
		case !layoutPath.MatchString(d.v):
			errs = append(errs, fmt.Errorf("layout %s %q: must be an absolute path of [A-Za-z0-9._+-] elements", d.name, d.v))
		case path.Clean(d.v) != d.v || strings.Contains(d.v, "/../") || strings.HasSuffix(d.v, "/.."):
			errs = append(errs, fmt.Errorf("layout %s %q: must be a clean path", d.name, d.v))
		}
	}
	if !strings.Contains(l.PHPPoolDir, versionPlaceholder) {
		errs = append(errs, fmt.Errorf("layout PHPPoolDir %q: must contain %s", l.PHPPoolDir, versionPlaceholder))
	}
	if !groupPattern.MatchString(l.WebGroup) {
		errs = append(errs, fmt.Errorf("layout WebGroup %q: not a group name", l.WebGroup))
	}
	for _, a := range l.Listen {
		if !listenAddr.MatchString(a) {
			errs = append(errs, fmt.Errorf("layout Listen %q: want PORT, IPv4:PORT or [IPv6]:PORT", a))
		}
	}
	for _, a := range l.ListenTLS {
		if !listenAddr.MatchString(a) {
			errs = append(errs, fmt.Errorf("layout ListenTLS %q: want PORT, IPv4:PORT or [IPv6]:PORT", a))
		}
	}
	for _, r := range l.Resolvers {
		if resolverAddr(r) == "" {
			errs = append(errs, fmt.Errorf("layout Resolvers %q: want an IPv4 or IPv6 address", r))
		}
	}
	cmds := []struct {
		name string
		argv []string
	}{
		{"NginxCheck", l.NginxCheck}, {"NginxReload", l.NginxReload}, {"NginxVersion", l.NginxVersion}, {"PHPFPMCheck", l.PHPFPMCheck},
		{"PHPFPMReload", l.PHPFPMReload}, {"MySQL", l.MySQL}, {"MySQLDump", l.MySQLDump},
	}
	for _, c := range cmds {
		if len(c.argv) == 0 || c.argv[0] == "" {
			errs = append(errs, fmt.Errorf("layout %s: must name a command", c.name))
		}
		for _, a := range c.argv {
			if strings.IndexByte(a, 0) >= 0 {
				errs = append(errs, fmt.Errorf("layout %s: argument contains a NUL byte", c.name))
			}
		}
	}
	return errors.Join(errs...)
}

// forVersion returns argv with {version} replaced by v in every element.
func forVersion(argv []string, v string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = strings.ReplaceAll(a, versionPlaceholder, v)
	}
	return out
}
