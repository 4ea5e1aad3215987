package ssh

import (
	"fmt"
	htmltemplate "html/template"
	"regexp"
	"strings"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/siteconf"
)

// siteValues is everything the templates may render: values of a spec that
// passed drivers.ValidateSiteSpec and paths of a validated Layout. check runs
// again just before rendering, so a bug upstream cannot smuggle a newline, ';',
// '{', '}', a quote or a '$' into an nginx or php-fpm file.
type siteValues struct {
	SiteID, TenantID, Domain, SiteType, PHPVersion string
	User, WebGroup                                 string

	SiteRoot, DocumentRoot, LogDir, TmpDir, Socket string
	SessionDir, PHPLogDir                          string
	Listen                                         []string
	Aliases                                        []string
	ChallengeDir                                   string
	TLS                                            *siteconf.TLS // nil: plain HTTP

	PHP             bool // php-fpm pool and a PHP location block
	FrontController bool // unknown paths go to /index.php (laravel, wordpress)
}

var (
	userPattern = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	cipherList  = regexp.MustCompile(`^[A-Z0-9-]+(:[A-Z0-9-]+)*$`)
)

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
		{"session dir", v.SessionDir, layoutPath.MatchString(v.SessionDir)},
		{"php log dir", v.PHPLogDir, layoutPath.MatchString(v.PHPLogDir)},
		{"socket", v.Socket, layoutPath.MatchString(v.Socket)},
	}
	type field = struct {
		name, value string
		ok          bool
	}
	vals = append(vals, field{"challenge dir", v.ChallengeDir, layoutPath.MatchString(v.ChallengeDir)})
	for _, l := range v.Listen {
		vals = append(vals, field{"listen", l, listenAddr.MatchString(l)})
	}
	for _, a := range v.Aliases {
		vals = append(vals, field{"alias", a, drivers.ValidateDomain(a) == nil})
	}
	if t := v.TLS; t != nil {
		vals = append(vals, field{"certificate", t.Certificate, layoutPath.MatchString(t.Certificate)},
			field{"key", t.Key, layoutPath.MatchString(t.Key)}, field{"ciphers", t.Ciphers, cipherList.MatchString(t.Ciphers)})
		for _, l := range t.Listen {
			vals = append(vals, field{"tls listen", l, listenAddr.MatchString(l)})
		}
		for _, r := range t.Resolvers {
			vals = append(vals, field{"resolver", r, r != "" && resolverAddr(strings.Trim(r, "[]")) == r})
		}
	}
	for _, f := range vals {
		if !f.ok || strings.ContainsAny(f.value, forbidden) {
			return fmt.Errorf("%w: refusing to render %s %q", drivers.ErrInvalidSpec, f.name, f.value)
		}
	}
	return nil
}

// phpProbe is what a PHP site's starter page prints after "PHP ": it computes
// something, so a GET proves PHP ran (the raw "<?=" would show otherwise).
const phpProbe htmltemplate.HTML = `<?= htmlspecialchars(PHP_VERSION) ?> is running: 6 * 7 = <?= 6 * 7 ?>`

// render checks v and renders its files (drivers/siteconf).
func render(v siteValues) (siteconf.Files, error) {
	if err := v.check(); err != nil {
		return siteconf.Files{}, err
	}
	return siteconf.Render(siteconf.Values{
		SiteID: v.SiteID, TenantID: v.TenantID, Domain: v.Domain, SiteType: v.SiteType, PHPVersion: v.PHPVersion,
		User: v.User, WebGroup: v.WebGroup,
		SiteRoot: v.SiteRoot, DocumentRoot: v.DocumentRoot, LogDir: v.LogDir, TmpDir: v.TmpDir, Socket: v.Socket,
		SessionDir: v.SessionDir, PHPLogDir: v.PHPLogDir,
		Listen: v.Listen, Aliases: v.Aliases, ChallengeDir: v.ChallengeDir, TLS: v.TLS, PHP: v.PHP, FrontController: v.FrontController, PHPProbe: phpProbe,
	})
}
