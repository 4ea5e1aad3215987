package input

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrInvalidDomain is matched (with errors.Is) by every error NormalizeDomain
// returns. The error's own text is the client-facing sentence.
var ErrInvalidDomain = errors.New("invalid domain name")

// maxDomainLen is the longest name in presentation form (RFC 1035 §2.3.4 gives
// 255 octets on the wire, which is 253 characters without the root dot).
const maxDomainLen = 253

// maxRawDomainBytes bounds the work done on hostile input. A name that fits in
// 253 ASCII characters has at most 253 Unicode code points (punycode never
// shrinks a label below its code-point count), so at most 4*253 UTF-8 bytes.
const maxRawDomainBytes = 4*maxDomainLen + 8

// idnaProfile is the IDNA2008 registration profile (RFC 5891 §4): it rejects
// disallowed and unassigned code points, code points that would need mapping
// (upper case, full-width forms, ignored characters such as U+00AD), bad
// joiners and Bidi-rule violations, instead of silently rewriting them the way
// idna.Lookup does. Length checks are ours, so errors can say which
// label is too long.
var idnaProfile = idna.New(
	idna.ValidateForRegistration(),
	idna.Transitional(false),
	idna.VerifyDNSLength(false),
)

type domainError struct{ msg string }

func (e *domainError) Error() string        { return e.msg }
func (e *domainError) Is(target error) bool { return target == ErrInvalidDomain }

func domainErr(format string, args ...any) error {
	return &domainError{msg: fmt.Sprintf(format, args...)}
}

// NormalizeDomain validates a site domain (or VPS hostname) and returns its
// canonical form: lower case, internationalised labels as punycode A-labels
// ("münchen.de" → "xn--mnchen-3ya.de"), without a trailing dot.
//
// It is strict, because the result ends up in web-server configuration, TLS
// certificate orders and shell commands on the VPS:
//
//   - no surrounding or embedded whitespace and no control characters (the
//     input is not trimmed: "a.com " is an error, not "a.com");
//   - one trailing dot is accepted and removed ("a.com." → "a.com");
//   - ASCII letters are lower-cased; non-ASCII characters must already be in
//     canonical form (lower case, NFC): "München.de" is accepted, "MÜNCHEN.de"
//     is not. Unicode case mapping and the IDNA mapping disagree on some
//     letters ("İ" lower-cases to "i" but IDNA maps it to "i̇", another
//     domain), so rewriting them could host a different name than the one
//     browsers resolve. Internationalised names are checked with the IDNA2008
//     registration profile, which rejects disallowed code points and every
//     character that would need mapping (full-width forms, soft hyphens);
//     symbols and emoji, which IDNA2003 allowed, are rejected too;
//   - RFC 1123 host names only: at most 253 characters, at least two labels,
//     each label 1–63 characters of [a-z0-9-] that neither starts nor ends
//     with a hyphen; "--" in the third and fourth positions only in valid
//     "xn--" A-labels (RFC 5891 §4.2.3.1; certificate authorities refuse
//     other such labels);
//   - the top-level label has at least two characters and is neither
//     all-numeric nor a hexadecimal number, so nothing can be read as an IPv4
//     address ("127.1", "0x7f.0x1");
//   - no IP literals (IPv4, IPv6, bracketed), ports, paths, user information,
//     underscores or "*" wildcards;
//   - "localhost", names under ".localhost" and ".invalid" (RFC 6761) and under
//     ".local" (multicast DNS, RFC 6762) are refused: they can never resolve
//     to a hosted site. The other special-use names (".test", ".example",
//     ".internal"...) are accepted on purpose, because development and
//     staging installations (`chom dev`) host sites under them.
//
// Every error wraps ErrInvalidDomain and its text is a sentence fragment for
// the API, such as `must be a valid hostname: label "-a" starts with a hyphen`.
func NormalizeDomain(raw string) (string, error) {
	if raw == "" {
		return "", domainErr("must not be empty")
	}
	if len(raw) > maxRawDomainBytes {
		return "", domainErr("must be at most %d characters", maxDomainLen)
	}
	if !utf8.ValidString(raw) {
		return "", domainErr("must be valid UTF-8")
	}
	if isIPLiteral(raw) {
		return "", domainErr("must be a domain name, not an IP address")
	}
	nonASCII := false
	for _, r := range raw {
		if r >= utf8.RuneSelf {
			if unicode.IsSpace(r) || unicode.IsControl(r) {
				return "", domainErr("must not contain whitespace or control characters")
			}
			nonASCII = true
			continue
		}
		if err := checkASCII(byte(r)); err != nil {
			return "", err
		}
	}

	s := strings.TrimSuffix(raw, ".")
	s = lowerASCII(s)

	labels := strings.Split(s, ".")
	for _, l := range labels {
		if err := checkLabelShape(l); err != nil {
			return "", err
		}
	}
	if nonASCII || strings.Contains(s, "xn--") {
		var err error
		if labels, err = toASCII(s, labels); err != nil {
			return "", err
		}
	}
	for _, l := range labels {
		if len(l) > 63 {
			return "", domainErr("must be a valid hostname: label %s is longer than 63 characters", quoteLabel(l))
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !isLDH(c) {
				// Unreachable for ASCII input (checkASCII) and for IDNA
				// output; kept so the guarantee does not rest on idna.
				return "", domainErr("must be a valid hostname: character %q is not allowed", c)
			}
		}
	}
	name := strings.Join(labels, ".")
	if len(name) > maxDomainLen {
		return "", domainErr("must be at most %d characters", maxDomainLen)
	}
	if reason := reservedName(name); reason != "" {
		return "", domainErr("must not be a reserved name: %s", reason)
	}
	if len(labels) < 2 {
		return "", domainErr("must be a fully qualified domain name such as example.com")
	}
	tld := labels[len(labels)-1]
	switch {
	case allDigits(tld):
		return "", domainErr("must be a valid hostname: top-level label %q must not be all-numeric", tld)
	case isHexNumber(tld):
		return "", domainErr("must be a domain name, not an IP address")
	case len(tld) < 2:
		return "", domainErr("must be a valid hostname: top-level label %q must be at least 2 characters", tld)
	}
	return name, nil
}

// isIPLiteral reports whether s is an IP address in any form a client might
// send: dotted IPv4, IPv6 (with or without a zone), or anything in brackets.
func isIPLiteral(s string) bool {
	if strings.HasPrefix(s, "[") || strings.HasSuffix(s, "]") {
		return true
	}
	_, err := netip.ParseAddr(strings.TrimSuffix(s, "."))
	return err == nil
}

// checkASCII rejects every ASCII byte that cannot appear in a host name, with
// a message that says what the client probably meant to send.
func checkASCII(c byte) error {
	switch {
	case isLDH(c) || (c >= 'A' && c <= 'Z') || c == '.':
		return nil
	case c <= ' ' || c == 0x7f:
		return domainErr("must not contain whitespace or control characters")
	case c == '_':
		return domainErr("must be a valid hostname: underscore %q is not allowed", c)
	case c == '*':
		return domainErr("must be a valid hostname: wildcard %q is not allowed", c)
	case c == ':':
		return domainErr("must be a bare hostname: a port or IPv6 address is not allowed")
	case c == '/' || c == '\\' || c == '?' || c == '#':
		return domainErr("must be a bare hostname: a scheme or path is not allowed")
	case c == '@':
		return domainErr("must be a bare hostname: user information is not allowed")
	}
	return domainErr("must be a valid hostname: character %q is not allowed", c)
}

// isLDH reports whether c is a lower-case letter, digit or hyphen.
func isLDH(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'
}

// lowerASCII lower-cases ASCII letters only; see NormalizeDomain for why
// non-ASCII letters are not folded.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + ('a' - 'A')
				}
			}
			return string(b)
		}
	}
	return s
}

// checkLabelShape applies the rules that hold for U-labels and A-labels alike,
// before IDNA processing, so that their errors name the label the client sent.
func checkLabelShape(l string) error {
	switch {
	case l == "":
		return domainErr("must be a valid hostname: it contains an empty label (a leading dot or two dots in a row)")
	case l[0] == '-':
		return domainErr("must be a valid hostname: label %s starts with a hyphen", quoteLabel(l))
	case l[len(l)-1] == '-':
		return domainErr("must be a valid hostname: label %s ends with a hyphen", quoteLabel(l))
	case len(l) >= 4 && l[2] == '-' && l[3] == '-' && !strings.HasPrefix(l, "xn--"):
		return domainErr("must be a valid hostname: label %s has \"--\" in the third and fourth positions, which is reserved for internationalised names", quoteLabel(l))
	}
	return nil
}

// toASCII converts the name with the IDNA registration profile. It runs on the
// whole name, because the Bidi rule spans labels, and checks that "xn--"
// labels the client sent are already in canonical form.
func toASCII(s string, labels []string) ([]string, error) {
	out, err := idnaProfile.ToASCII(s)
	if err != nil {
		for _, l := range labels {
			if _, lerr := idnaProfile.ToASCII(l); lerr != nil {
				if strings.HasPrefix(l, "xn--") {
					return nil, domainErr("must be a valid hostname: label %s is not a valid punycode label", quoteLabel(l))
				}
				if strings.IndexFunc(l, func(r rune) bool { return unicode.IsUpper(r) || unicode.IsTitle(r) }) >= 0 {
					return nil, domainErr("must be a valid hostname: label %s must be in lower case", quoteLabel(l))
				}
				return nil, domainErr("must be a valid hostname: label %s is not a valid internationalised name (IDNA2008 does not allow one of its characters)", quoteLabel(l))
			}
		}
		return nil, domainErr("must be a valid hostname: it mixes right-to-left and left-to-right labels in a way IDNA2008 does not allow")
	}
	outLabels := strings.Split(out, ".")
	if len(outLabels) != len(labels) {
		return nil, domainErr("must be a valid hostname: it contains a character that IDNA maps to a dot")
	}
	for i, l := range labels {
		if isASCII(l) && outLabels[i] != l {
			return nil, domainErr("must be a valid hostname: label %s is not a canonical punycode label", quoteLabel(l))
		}
		if !strings.HasPrefix(outLabels[i], "xn--") {
			continue
		}
		u, err := idnaProfile.ToUnicode(outLabels[i])
		if err != nil { // cannot happen: ToASCII just produced it
			return nil, domainErr("must be a valid hostname: label %s is not a valid punycode label", quoteLabel(l))
		}
		for _, r := range u {
			if !idna2008Rune(r) {
				return nil, domainErr("must be a valid hostname: label %s contains %U, which IDNA2008 does not allow (symbols, emoji and punctuation are not allowed)", quoteLabel(l), r)
			}
		}
	}
	return outLabels, nil
}

// idna2008Rune reports whether r may appear in an IDNA2008 label (RFC 5892).
// x/net/idna implements UTS #46, which still accepts the characters RFC 5892
// disallows but IDNA2003 allowed (its "NV8" set: emoji and other symbols,
// punctuation), so this applies the RFC's LetterDigits category rule on top:
// letters, combining marks and decimal digits, plus the RFC's exceptions.
// Joiners (U+200C, U+200D) are contextual and checked by idnaProfile.
func idna2008Rune(r rune) bool {
	if r < utf8.RuneSelf {
		return isLDH(byte(r))
	}
	switch r {
	case 0x00B7, 0x0375, 0x05F3, 0x05F4, 0x30FB, // CONTEXTO punctuation
		0x06FD, 0x06FE, 0x0F0B, 0x3007, // PVALID exceptions
		0x200C, 0x200D: // CONTEXTJ
		return true
	}
	return unicode.In(r, unicode.Ll, unicode.Lu, unicode.Lo, unicode.Lm, unicode.Mn, unicode.Mc, unicode.Nd)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// quoteLabel quotes a label for an error message: ASCII-only, with non-ASCII
// runes escaped so that look-alikes ("\u212a" for a Kelvin sign, not "K")
// are visible, and shortened so that a hostile label does not come back in
// full.
func quoteLabel(l string) string {
	const max = 40
	if utf8.RuneCountInString(l) > max {
		r := []rune(l)
		return fmt.Sprintf("%+q...", string(r[:max]))
	}
	return fmt.Sprintf("%+q", l)
}

// reservedName returns why name can never be hosted, or "".
func reservedName(name string) string {
	switch {
	case name == "localhost", strings.HasSuffix(name, ".localhost"):
		return "localhost is reserved for loopback (RFC 6761)"
	case name == "invalid", strings.HasSuffix(name, ".invalid"):
		return ".invalid never resolves (RFC 6761)"
	case name == "local", strings.HasSuffix(name, ".local"):
		return ".local is reserved for multicast DNS (RFC 6762)"
	}
	return ""
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// isHexNumber reports whether s reads as a hexadecimal number ("0x7f"), which
// URL parsers treat as part of an IPv4 address (WHATWG URL "ends in a number").
func isHexNumber(s string) bool {
	rest, ok := strings.CutPrefix(s, "0x")
	if !ok {
		return false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
			return false
		}
	}
	return true
}
