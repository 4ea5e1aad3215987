package drivers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// ErrInvalidSpec is wrapped by every error that rejects a SiteSpec (or a value taken
// from one). It is a permanent failure: retrying the same spec cannot succeed, so job
// code should stop retrying (asynq.SkipRetry) and fail the operation.
var ErrInvalidSpec = errors.New("drivers: invalid site spec")

// Site types a driver knows how to provision. They are stored and sent over the wire,
// so they never change once shipped.
const (
	SiteTypeWordPress = "wordpress"
	SiteTypeLaravel   = "laravel"
	SiteTypePHP       = "php"
	SiteTypeHTML      = "html"
)

// supportedPHPVersions is kept unexported so no caller can change it; see
// SupportedPHPVersions.
var supportedPHPVersions = []string{"8.1", "8.2", "8.3", "8.4"}

// SupportedPHPVersions returns the PHP versions a SiteSpec may name, oldest first.
// The slice is a copy; changing it changes nothing.
func SupportedPHPVersions() []string {
	return slices.Clone(supportedPHPVersions)
}

// Server identifies the VPS a site lives on.
type Server struct {
	ID        string // e.g. "vps_0193..."; safe characters [a-z0-9_]
	Hostname  string
	IPAddress string
	SSHPort   int
	// HostKey is the server's pinned SSH host key in authorized_keys form
	// ("ssh-ed25519 AAAA…"), as in HealthTarget.HostKey. Drivers that reach the
	// server over SSH refuse any other key (an error wrapping
	// ErrHostKeyMismatch); empty means none is pinned yet (trust on first use:
	// Provision returns the key it saw in Result.HostKey). Drivers without SSH
	// ignore it.
	HostKey string
}

// SiteSpec is everything a driver needs to put a site on a server. Values are
// validated by ValidateSiteSpec before any driver uses them.
type SiteSpec struct {
	ID         string // site ID, e.g. "site_0193ab..." ([a-z0-9_], 1..64 chars)
	TenantID   string // [a-z0-9_], 1..64
	Domain     string // ASCII hostname already normalised by ingress (lowercase, punycode)
	SiteType   string // wordpress|laravel|php|html
	PHPVersion string // "8.1"|"8.2"|"8.3"|"8.4"; empty for html
	// Aliases are the site's other server names ("www.example.com", extra
	// domains), served by the same nginx server block and covered by the same
	// certificate as Domain. Each is validated like Domain; at most MaxAliases,
	// no duplicates, none equal to Domain.
	Aliases []string
	Server  Server
}

// MaxAliases is how many aliases a SiteSpec may carry. Twenty covers www. and a
// handful of extra domains; more than that on one certificate and one server block
// is a sign of abuse (a site collecting names), not of a real site.
const MaxAliases = 20

// ServerNames returns Domain followed by the aliases: every name the site's server
// block answers and its certificate must cover.
func (s SiteSpec) ServerNames() []string {
	return append([]string{s.Domain}, s.Aliases...)
}

// UsesPHP reports whether the site runs PHP (everything but html).
func (s SiteSpec) UsesPHP() bool { return s.SiteType != SiteTypeHTML }

// Step is one provisioning step reported as it completes.
type Step struct {
	Name     string // stable, e.g. "site_root", "index_page", "php_pool", "nginx_config", "reload"
	Progress int    // 0..100 after this step
}

// Step names reported by Provision, in order. They are stable: job code persists them
// as operation progress.
const (
	StepSiteRoot    = "site_root"
	StepIndexPage   = "index_page"
	StepPHPPool     = "php_pool"
	StepNginxConfig = "nginx_config"
	StepReload      = "reload"
	// StepSystemUser (the site's POSIX user) and StepDatabase (its MariaDB
	// database and user) are reported by drivers that create them (ssh).
	StepSystemUser = "system_user"
	StepDatabase   = "database"
)

// ErrConfigRejected is wrapped when a server refuses the configuration a driver
// rendered (nginx -t or php-fpm -t failed). The driver has already put the
// previous configuration back. It is permanent: the same spec renders the same
// configuration, so job code should not retry it.
var ErrConfigRejected = errors.New("drivers: server rejected the site configuration")

// ProgressFunc is called after each completed step; an error returned from it aborts
// provisioning (used for cancellation / progress persistence).
type ProgressFunc func(ctx context.Context, step Step) error

// Provisioner puts sites on servers and takes them off. Every method is idempotent:
// running it twice leaves the same state as once.
type Provisioner interface {
	// Provision creates or converges the site on site.Server, calling progress after
	// each step. A spec that fails ValidateSiteSpec is an error wrapping
	// ErrInvalidSpec and changes nothing.
	Provision(ctx context.Context, site SiteSpec, progress ProgressFunc) (Result, error)
	// Deprovision removes the site from site.Server. A site that is already gone is
	// not an error.
	Deprovision(ctx context.Context, site SiteSpec) error
}

// Result describes a provisioned site.
type Result struct {
	DocumentRoot string
	SystemUser   string
	NginxConfig  string // path of the server block
	PHPPool      string // path of the pool file; empty for html
	// HostKey is the SSH host key the server presented (authorized_keys form),
	// for the caller to pin when Server.HostKey was empty; empty for drivers
	// without SSH.
	HostKey string
}

var idPattern = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)

// ValidateSiteSpec checks every field of s that a driver renders into paths or
// configuration, and returns nil or an error wrapping ErrInvalidSpec that names each
// bad field, e.g.
//
//	drivers: invalid site spec: domain "a.com;touch /tmp/x": label 2 has invalid character ';'
//
// It is deliberately stricter than DNS: only lowercase ASCII hostnames of at least two
// labels, no IP literals. Server fields other than ID are not checked because drivers
// do not render them into files.
func ValidateSiteSpec(s SiteSpec) error {
	var problems []string
	if !idPattern.MatchString(s.ID) {
		problems = append(problems, fmt.Sprintf("id %s: must match %s", quote(s.ID), idPattern))
	}
	if !idPattern.MatchString(s.TenantID) {
		problems = append(problems, fmt.Sprintf("tenant_id %s: must match %s", quote(s.TenantID), idPattern))
	}
	if !idPattern.MatchString(s.Server.ID) {
		problems = append(problems, fmt.Sprintf("server.id %s: must match %s", quote(s.Server.ID), idPattern))
	}
	if why := domainProblem(s.Domain); why != "" {
		problems = append(problems, fmt.Sprintf("domain %s: %s", quote(s.Domain), why))
	}
	problems = append(problems, aliasProblems(s.Domain, s.Aliases)...)
	switch s.SiteType {
	case SiteTypeWordPress, SiteTypeLaravel, SiteTypePHP:
		if !slices.Contains(supportedPHPVersions, s.PHPVersion) {
			problems = append(problems, fmt.Sprintf("php_version %s: must be one of %s for site type %s",
				quote(s.PHPVersion), strings.Join(supportedPHPVersions, ", "), s.SiteType))
		}
	case SiteTypeHTML:
		if s.PHPVersion != "" {
			problems = append(problems, fmt.Sprintf("php_version %s: must be empty for site type html", quote(s.PHPVersion)))
		}
	default:
		problems = append(problems, fmt.Sprintf("site_type %s: must be one of wordpress, laravel, php, html", quote(s.SiteType)))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, strings.Join(problems, "; "))
	}
	return nil
}

// aliasProblems names each alias that is not a valid hostname, repeats another
// name of the site, or exceeds MaxAliases.
func aliasProblems(domain string, aliases []string) []string {
	var problems []string
	if len(aliases) > MaxAliases {
		problems = append(problems, fmt.Sprintf("aliases: %d given, the limit is %d", len(aliases), MaxAliases))
		aliases = aliases[:MaxAliases] // still name what is wrong with the rest
	}
	seen := map[string]bool{domain: true}
	for i, a := range aliases {
		switch why := domainProblem(a); {
		case why != "":
			problems = append(problems, fmt.Sprintf("aliases[%d] %s: %s", i, quote(a), why))
		case a == domain:
			problems = append(problems, fmt.Sprintf("aliases[%d] %s: is the site's domain", i, quote(a)))
		case seen[a]:
			problems = append(problems, fmt.Sprintf("aliases[%d] %s: is listed twice", i, quote(a)))
		}
		seen[a] = true
	}
	return problems
}

// ValidateDomain applies the hostname rules of ValidateSiteSpec to one name, for
// drivers that render a domain outside a full spec. The error wraps ErrInvalidSpec.
func ValidateDomain(domain string) error {
	if why := domainProblem(domain); why != "" {
		return fmt.Errorf("%w: domain %s: %s", ErrInvalidSpec, quote(domain), why)
	}
	return nil
}

// domainProblem returns why d is not an acceptable hostname, or "" if it is. It walks
// bytes, not runes: any byte outside [a-z0-9.-] is rejected, which rules out unicode,
// uppercase, whitespace, newlines and every shell or nginx metacharacter at once.
func domainProblem(d string) string {
	switch {
	case d == "":
		return "must not be empty"
	case len(d) > 253:
		return fmt.Sprintf("is %d characters long, the limit is 253", len(d))
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return fmt.Sprintf("invalid character %q at byte %d (only lowercase a-z, 0-9, '-' and '.' are allowed)", c, i)
		}
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "must have at least two labels"
	}
	for i, l := range labels {
		switch {
		case l == "":
			return fmt.Sprintf("label %d is empty", i+1)
		case len(l) > 63:
			return fmt.Sprintf("label %d is %d characters long, the limit is 63", i+1, len(l))
		case l[0] == '-' || l[len(l)-1] == '-':
			return fmt.Sprintf("label %d starts or ends with a hyphen", i+1)
		}
	}
	// An all-digit top-level label is what an IPv4 literal looks like, and no real
	// TLD is numeric. IPv6 literals never get here (':' and '[' are rejected above).
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "last label is all digits (IP addresses are not allowed)"
	}
	return ""
}

// quote renders an untrusted value for an error message: quoted (so newlines and
// control characters are escaped) and cut short so a hostile 10 kB value cannot flood
// the logs.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// SystemUser returns the POSIX user name a site's files and PHP pool run as. It is
// deterministic, at most 32 characters and matches ^[a-z_][a-z0-9_-]*$ for any input.
//
// A valid ID of up to 29 characters is used as is ("s_" + id). Anything longer (site
// IDs are "site_" + 32 hex digits) or not matching [a-z0-9_] becomes "s_" + 17
// characters of the ID (without its "site_" prefix, padded with '_') + "_" + 12 hex
// digits of its SHA-256: exactly 32 characters. The two forms differ in length, so
// they never collide with each other, and the hash keeps long IDs unique.
func SystemUser(siteID string) string {
	const (
		maxDirect = 29 // "s_" + 29 = 31 < 32, the length of every hashed name
		prefixLen = 17 // "s_" + 17 + "_" + 12 = 32
		hashLen   = 12
	)
	if len(siteID) <= maxDirect && idPattern.MatchString(siteID) {
		return "s_" + siteID
	}
	var b strings.Builder
	b.WriteString("s_")
	readable := strings.TrimPrefix(siteID, "site_")
	for i := 0; i < len(readable) && b.Len() < 2+prefixLen; i++ {
		c := readable[i]
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	for b.Len() < 2+prefixLen {
		b.WriteByte('_')
	}
	sum := sha256.Sum256([]byte(siteID))
	b.WriteByte('_')
	b.WriteString(hex.EncodeToString(sum[:])[:hashLen])
	return b.String()
}

// LayoutMigrator brings a site provisioned under an earlier server layout to
// the current one (the Isolation section of docs/operations.md): owners and
// modes of its directories, its pool and its server block, never its content.
// It reports whether anything changed and is idempotent: a second call
// reports false. Both drivers implement it.
type LayoutMigrator interface {
	MigrateLayout(ctx context.Context, site SiteSpec) (bool, error)
}
