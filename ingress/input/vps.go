package input

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	gossh "golang.org/x/crypto/ssh"
)

// RegisterVPSRequest is the body of POST /api/v1/vps (an admin operation that
// adds a server to the fleet).
//
// SSHPort and SiteCapacity are pointers so that an absent member (default
// applies) differs from an explicit 0 (an error). After a successful
// Normalize both are non-nil.
type RegisterVPSRequest struct {
	Hostname     string `json:"hostname"`
	IPAddress    string `json:"ip_address"`
	SSHPort      *int   `json:"ssh_port,omitempty"`
	Provider     string `json:"provider"`
	Region       string `json:"region"`
	Allocation   string `json:"allocation,omitempty"`
	TenantID     string `json:"tenant_id,omitempty"`
	SiteCapacity *int   `json:"site_capacity,omitempty"`
	// HostKey pins the server's SSH host key, in authorized_keys form (as
	// `ssh-keyscan -t ed25519 HOST` prints it, host name and comment
	// optional); HostKeySHA256 pins only its fingerprint ("SHA256:…", as
	// `ssh-keygen -lf` prints it). At most one of the two.
	HostKey       *string `json:"host_key,omitempty"`
	HostKeySHA256 *string `json:"host_key_sha256,omitempty"`
}

// Allocation values: a shared VPS hosts sites of many tenants, a dedicated one
// belongs to the single tenant named by tenant_id.
const (
	AllocationShared    = "shared"
	AllocationDedicated = "dedicated"
)

// Defaults and bounds of RegisterVPSRequest.
const (
	DefaultSSHPort      = 22
	DefaultSiteCapacity = 50
	MaxSiteCapacity     = 10000
)

var (
	slugPattern     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	tenantIDPattern = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
)

// Normalize validates every field and returns the canonical request, or a
// *ValidationError listing every offending field by its JSON name.
//
//   - hostname: required; the rules of NormalizeDomain (a fully qualified
//     name, returned in canonical form).
//   - ip_address: required; IPv4 or IPv6, without zone; unspecified,
//     multicast and the IPv4 broadcast address are refused; returned in
//     canonical form (IPv4-mapped IPv6 becomes plain IPv4, IPv6 compressed
//     lower case). Loopback and private addresses are allowed (development
//     fleets, private networks).
//   - ssh_port: 1–65535, default 22.
//   - provider, region: required, ^[a-z0-9][a-z0-9-]{0,31}$.
//   - allocation: "shared" (default) or "dedicated".
//   - tenant_id: ^[a-z0-9_]{1,64}$; required for dedicated, must be omitted
//     for shared. Whether the tenant exists is for the handler to check.
//   - site_capacity: 1–10000, default 50.
//   - host_key / host_key_sha256: at most one (see normalizeHostKey);
//     returned in HostKey, as the pin to store.
//
// On error the returned request is the zero value.
func (r RegisterVPSRequest) Normalize() (RegisterVPSRequest, error) {
	var v ValidationError
	out := RegisterVPSRequest{Provider: r.Provider, Region: r.Region, TenantID: r.TenantID}

	if r.Hostname == "" {
		v.Add("hostname", "is required")
	} else if h, err := NormalizeDomain(r.Hostname); err != nil {
		v.Add("hostname", err.Error())
	} else {
		out.Hostname = h
	}

	if r.IPAddress == "" {
		v.Add("ip_address", "is required")
	} else if ip, detail := normalizeIP(r.IPAddress); detail != "" {
		v.Add("ip_address", detail)
	} else {
		out.IPAddress = ip
	}

	out.SSHPort = intInRange(&v, "ssh_port", r.SSHPort, DefaultSSHPort, 1, 65535)

	for _, f := range []struct{ name, value string }{{"provider", r.Provider}, {"region", r.Region}} {
		switch {
		case f.value == "":
			v.Add(f.name, "is required")
		case !slugPattern.MatchString(f.value):
			v.Add(f.name, "must be 1 to 32 lower-case letters, digits or hyphens, starting with a letter or digit")
		}
	}

	out.Allocation = r.Allocation
	if out.Allocation == "" {
		out.Allocation = AllocationShared
	}
	if r.TenantID != "" && !tenantIDPattern.MatchString(r.TenantID) {
		v.Add("tenant_id", "must be 1 to 64 lower-case letters, digits or underscores")
	}
	switch out.Allocation {
	case AllocationShared:
		if r.TenantID != "" {
			v.Add("tenant_id", "must be omitted for shared allocation")
		}
	case AllocationDedicated:
		if r.TenantID == "" {
			v.Add("tenant_id", "is required for dedicated allocation")
		}
	default:
		v.Add("allocation", oneOf([]string{AllocationShared, AllocationDedicated}))
	}

	out.SiteCapacity = intInRange(&v, "site_capacity", r.SiteCapacity, DefaultSiteCapacity, 1, MaxSiteCapacity)
	if pin := normalizeHostKey(&v, r.HostKey, r.HostKeySHA256, false); pin != "" {
		out.HostKey = &pin
	}

	if err := v.Err(); err != nil {
		return RegisterVPSRequest{}, err
	}
	return out, nil
}

// normalizeIP returns the canonical text of a unicast IP address, or a detail
// saying why s is not one.
func normalizeIP(s string) (string, string) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return "", "must be an IPv4 or IPv6 address"
	}
	if ip.Zone() != "" {
		return "", "must not have an IPv6 zone"
	}
	ip = ip.Unmap()
	switch {
	case ip.IsUnspecified():
		return "", "must not be the unspecified address"
	case ip.IsMulticast():
		return "", "must not be a multicast address"
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "", "must not be the broadcast address"
	}
	return ip.String(), ""
}

// intInRange returns a pointer to p's value, or to def when p is nil, and
// records an error on v when the value is outside [lo, hi].
func intInRange(v *ValidationError, field string, p *int, def, lo, hi int) *int {
	n := def
	if p != nil {
		n = *p
	}
	if n < lo || n > hi {
		v.Add(field, fmt.Sprintf("must be between %d and %d", lo, hi))
		return nil
	}
	return &n
}

// PinHostKeyRequest is the body of PUT /api/v1/vps/{id}/host-key: the
// server's new SSH host key after a planned change, as the key or its
// fingerprint (exactly one).
type PinHostKeyRequest struct {
	HostKey       *string `json:"host_key,omitempty"`
	HostKeySHA256 *string `json:"host_key_sha256,omitempty"`
}

// Normalize returns the pin to store (in HostKey), or a *ValidationError.
func (r PinHostKeyRequest) Normalize() (PinHostKeyRequest, error) {
	var v ValidationError
	pin := normalizeHostKey(&v, r.HostKey, r.HostKeySHA256, true)
	if err := v.Err(); err != nil {
		return PinHostKeyRequest{}, err
	}
	return PinHostKeyRequest{HostKey: &pin}, nil
}

// Pin is the normalized host-key pin of a request: "" when none was given.
func Pin(hostKey *string) string {
	if hostKey == nil {
		return ""
	}
	return *hostKey
}

// maxHostKeyBytes bounds host_key: an authorized_keys line of a 16384-bit
// RSA key is under 3 KiB.
const maxHostKeyBytes = 8 << 10

var fingerprintPattern = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)

// normalizeHostKey validates a host key given as a key (authorized_keys
// form, with or without a leading host name as ssh-keyscan prints it, and a
// trailing comment) or as a SHA-256 fingerprint, and returns the pin to
// store: "type base64" or "SHA256:…"; "" when neither is given (an error
// when required). A member given empty is invalid, not absent.
func normalizeHostKey(v *ValidationError, key, fp *string, required bool) string {
	switch {
	case key != nil && fp != nil:
		v.Add("host_key_sha256", "give host_key or host_key_sha256, not both")
		return ""
	case fp != nil:
		if !fingerprintPattern.MatchString(*fp) {
			v.Add("host_key_sha256", "must be SHA256: and 43 base64 characters, as ssh-keygen -lf prints it")
			return ""
		}
		return *fp
	case key == nil:
		if required {
			v.Add("host_key", "is required (or host_key_sha256)")
		}
		return ""
	}
	if len(*key) > maxHostKeyBytes {
		v.Add("host_key", "must be at most 8 KiB")
		return ""
	}
	line := strings.TrimSpace(*key)
	if strings.ContainsAny(line, "\r\n") {
		v.Add("host_key", "must be one line")
		return ""
	}
	k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		// ssh-keyscan prints "host type base64": drop the host name.
		if f := strings.Fields(line); len(f) >= 3 {
			k, _, _, _, err = gossh.ParseAuthorizedKey([]byte(strings.Join(f[1:], " ")))
		}
	}
	if err != nil {
		v.Add("host_key", "must be an SSH public key in authorized_keys form, e.g. ssh-ed25519 AAAA…")
		return ""
	}
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k)))
}
