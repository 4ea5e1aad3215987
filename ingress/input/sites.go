package input

import (
	"fmt"
	"slices"
	"strings"
)

// CreateSiteRequest is the body of POST /api/v1/sites.
type CreateSiteRequest struct {
	Domain string `json:"domain"`
	// Aliases are the site's other host names (www. and extra domains),
	// served by the same site; each is a domain claim like Domain.
	Aliases    []string `json:"aliases,omitempty"`
	SiteType   string   `json:"site_type"`
	PHPVersion string   `json:"php_version,omitempty"`
	// HTTPS is the certificate mode: "auto" (the default: a certificate is
	// issued after the provision and renewed) or "off". Canonically the
	// default is omitted (see Normalize).
	HTTPS string `json:"https,omitempty"`
	// HSTS turns on Strict-Transport-Security once the site has a
	// certificate; default false.
	HSTS bool `json:"hsts,omitempty"`
}

// HTTPSModes lists the accepted https values; HTTPSAuto is the default.
var HTTPSModes = []string{HTTPSAuto, HTTPSOff}

// The https values.
const (
	HTTPSAuto = "auto"
	HTTPSOff  = "off"
)

// MaxAliases is the most aliases one site may have.
const MaxAliases = 20

// SiteTypes lists the accepted site_type values; every type except "html"
// runs PHP. Matching is exact and case-sensitive.
var SiteTypes = []string{"wordpress", "laravel", "php", "html"}

// PHPVersions lists the accepted php_version values.
var PHPVersions = []string{"8.1", "8.2", "8.3", "8.4"}

// DefaultPHPVersion is used when a PHP-based site omits php_version.
const DefaultPHPVersion = "8.3"

// SiteTypeHTML is the only site type that runs no PHP.
const SiteTypeHTML = "html"

// Normalize validates every field and returns the canonical request: the
// domain and each alias normalised by NormalizeDomain (an alias equal to the
// domain or to an earlier alias is an error naming it, "aliases[2]"; at most
// MaxAliases; an empty list is omitted), php_version defaulted to
// DefaultPHPVersion for PHP-based site types. A php_version on an html site is
// an error ("must be omitted for html sites"), and missing required fields are
// "is required".
//
// https is "auto" or "off" (anything else, "Auto" included, is an error
// naming "https"); the default "auto" is canonically omitted (HTTPS ""), so
// that a request naming it and one leaving it out are the same request under
// an Idempotency-Key, as are requests from before the field existed. hsts is
// a boolean (false when omitted or null).
//
// Every problem is collected into one *ValidationError whose field names are
// the JSON names: "domain", "site_type", "php_version", "https".
//
// An empty string counts as missing. Values are not trimmed or case-folded
// (apart from the domain, see NormalizeDomain): "WordPress" is an error, not
// "wordpress". On error the returned request is the zero value.
func (r CreateSiteRequest) Normalize() (CreateSiteRequest, error) {
	var v ValidationError
	out := CreateSiteRequest{SiteType: r.SiteType, PHPVersion: r.PHPVersion, HSTS: r.HSTS}

	if r.Domain == "" {
		v.Add("domain", "is required")
	} else if d, err := NormalizeDomain(r.Domain); err != nil {
		v.Add("domain", err.Error())
	} else {
		out.Domain = d
	}

	if len(r.Aliases) > MaxAliases {
		v.Add("aliases", fmt.Sprintf("must have at most %d entries", MaxAliases))
	} else {
		seen := map[string]string{}
		if out.Domain != "" {
			seen[out.Domain] = "domain"
		}
		for i, raw := range r.Aliases {
			field := fmt.Sprintf("aliases[%d]", i)
			if raw == "" {
				v.Add(field, "is required")
				continue
			}
			d, err := NormalizeDomain(raw)
			if err != nil {
				v.Add(field, err.Error())
				continue
			}
			if first, dup := seen[d]; dup {
				v.Add(field, "duplicates "+first)
				continue
			}
			seen[d] = field
			out.Aliases = append(out.Aliases, d)
		}
	}

	typeOK := false
	switch {
	case r.SiteType == "":
		v.Add("site_type", "is required")
	case !slices.Contains(SiteTypes, r.SiteType):
		v.Add("site_type", oneOf(SiteTypes))
	default:
		typeOK = true
	}

	switch {
	case typeOK && r.SiteType == SiteTypeHTML:
		if r.PHPVersion != "" {
			v.Add("php_version", "must be omitted for html sites")
		}
	case r.PHPVersion == "":
		if typeOK {
			out.PHPVersion = DefaultPHPVersion
		}
	case !slices.Contains(PHPVersions, r.PHPVersion):
		v.Add("php_version", oneOf(PHPVersions))
	}

	switch r.HTTPS {
	case "", HTTPSAuto:
	case HTTPSOff:
		out.HTTPS = HTTPSOff
	default:
		v.Add("https", oneOf(HTTPSModes))
	}

	if err := v.Err(); err != nil {
		return CreateSiteRequest{}, err
	}
	return out, nil
}

// oneOf renders the detail for an enum violation.
func oneOf(values []string) string {
	return "must be one of " + strings.Join(values, ", ")
}
