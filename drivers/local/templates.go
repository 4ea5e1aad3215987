package local

import (
	"fmt"
	htmltemplate "html/template"
	"regexp"
	"slices"
	"strings"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/siteconf"
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

	Aliases      []string
	ChallengeDir string
	TLS          *siteconf.TLS // nil: plain HTTP

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
		{"challenge dir", v.ChallengeDir, pathPattern.MatchString(v.ChallengeDir)},
	}
	for _, a := range v.Aliases {
		fields = append(fields, field{"alias", a, drivers.ValidateDomain(a) == nil})
	}
	if t := v.TLS; t != nil {
		fields = append(fields, field{"certificate", t.Certificate, pathPattern.MatchString(t.Certificate)},
			field{"key", t.Key, pathPattern.MatchString(t.Key)})
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

// phpProbe is what a PHP site's starter page prints after "PHP ".
const phpProbe htmltemplate.HTML = `<?= htmlspecialchars(PHP_VERSION) ?> is running`

// render checks v and renders its files (drivers/siteconf): nginx on port 80 of
// IPv4 and IPv6 (and, with TLS, 443), the pool socket usable by www-data.
func render(v siteValues) (siteconf.Files, error) {
	if err := v.check(); err != nil {
		return siteconf.Files{}, err
	}
	return siteconf.Render(siteconf.Values{
		SiteID: v.SiteID, TenantID: v.TenantID, Domain: v.Domain, SiteType: v.SiteType, PHPVersion: v.PHPVersion,
		User: v.User, WebGroup: "www-data",
		SiteRoot: v.SiteDir, DocumentRoot: v.DocumentRoot, LogDir: v.LogDir, TmpDir: v.TmpDir, Socket: v.Socket,
		// One user runs everything here: sessions and PHP's errors go
		// beside the site's temporary files and logs.
		SessionDir: v.TmpDir, PHPLogDir: v.LogDir,
		Listen: []string{"80", "[::]:80"}, Aliases: v.Aliases, ChallengeDir: v.ChallengeDir, TLS: v.TLS, PHP: v.PHP, FrontController: v.FrontController, PHPProbe: phpProbe,
	})
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
