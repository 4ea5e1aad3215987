package ssh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/siteconf"
)

var _ drivers.TLSDeployer = (*Provisioner)(nil)

// Files of a site's TLS directory, <StateDir>/<site-id>/tls (root's, 0700, each
// file 0600): the chain nginx serves, its key, and tls.env, the choices
// Provision renders the HTTPS block from again (HSTS_MAX_AGE, OCSP). The site is
// served over HTTPS exactly when all three are there.
const (
	tlsChain = "fullchain.pem"
	tlsKey   = "privkey.pem"
	tlsEnv   = "tls.env"
)

// tlsState is what the server says about a site's TLS: whether a certificate is
// deployed (and the choices it was deployed with), which nginx it runs and the
// nameservers it resolves with.
type tlsState struct {
	provisioned bool // the site's server block is there
	deployed    bool
	hstsMaxAge  int64
	ocsp        bool
	nginx       string // "1.22.1"; empty when `nginx -v` said nothing we could read
	resolvers   []string
}

// scriptTLSState prints "block yes" when the site's server block exists, "tls
// KEY=digits" for each line of the site's tls.env when its chain, key and
// tls.env are all there, "nginx <first line of nginx -v>", and "ns <address>"
// for each nameserver of /etc/resolv.conf. Args: server block, TLS dir, nginx
// -v argv….
const scriptTLSState = `set -u
block=$1 dir=$2
shift 2
if [ -f "$block" ]; then echo "block yes"; fi
if [ -f "$dir/` + tlsChain + `" ] && [ -f "$dir/` + tlsKey + `" ] && [ -f "$dir/` + tlsEnv + `" ]; then
	sed -n 's/^\([A-Z_]\{1,32\}=[0-9]\{1,12\}\)$/tls \1/p' "$dir/` + tlsEnv + `"
fi
printf 'nginx %s\n' "$("$@" 2>&1 | head -n 1)"
sed -n 's/^[[:space:]]*nameserver[[:space:]]\{1,\}\([0-9a-fA-F.:]\{1,\}\)[[:space:]]*$/ns \1/p' /etc/resolv.conf 2>/dev/null || true
`

// scriptStageTLS writes stdin to <dir>/<name>.chom-new, root's and 0600, creating
// the root-only TLS directory. Args: TLS dir, name.
const scriptStageTLS = `set -eu
dir=$1 name=$2
umask 077
install -d -m 0700 -o root -g root "$dir"
cat > "$dir/$name.chom-new"
chown root:root "$dir/$name.chom-new"
chmod 0600 "$dir/$name.chom-new"
`

// scriptApplyTLS puts the staged TLS files (<name>.chom-new) in place, keeping
// each file it replaces as <name>.chom-prev, writes the server block from stdin
// (keeping the previous one likewise, and linking it from the enabled
// directory), then runs the nginx check. When the check fails it puts back
// exactly what it replaced (a file that was not there before is removed), prints
// the check's output on stderr and exits 3; when it passes it drops the saved
// copies and prints "changed" or "same" (nothing differed: no reload needed).
// Args: TLS dir, block path, link path, check argv….
const scriptApplyTLS = `set -u
dir=$1 f=$2 link=$3
shift 3
names="` + tlsChain + ` ` + tlsKey + ` ` + tlsEnv + `"
swapped=""
block=same
rollback() {
	for n in $swapped; do
		if [ -e "$dir/$n.chom-prev" ]; then mv -f "$dir/$n.chom-prev" "$dir/$n"; else rm -f "$dir/$n"; fi
	done
	if [ "$block" = changed ]; then
		if [ -f "$f.chom-prev" ]; then mv -f "$f.chom-prev" "$f"; else rm -f "$f" "$link"; fi
	fi
}
fail() { rollback; printf '%s\n' "$1" >&2; exit 1; }
tmp="$f.chom-tmp"
cat > "$tmp" || fail "read server block"
chmod 0644 "$tmp"
for n in $names; do
	rm -f "$dir/$n.chom-prev"
	[ -f "$dir/$n.chom-new" ] || fail "$n was not staged"
	if [ -f "$dir/$n" ] && cmp -s "$dir/$n.chom-new" "$dir/$n"; then rm -f "$dir/$n.chom-new"; continue; fi
	if [ -e "$dir/$n" ]; then cp -p "$dir/$n" "$dir/$n.chom-prev" || fail "keep $n"; fi
	swapped="$swapped $n"
	mv -f "$dir/$n.chom-new" "$dir/$n" || fail "replace $n"
done
rm -f "$f.chom-prev"
if [ -f "$f" ] && cmp -s "$tmp" "$f"; then
	rm -f "$tmp"
else
	if [ -f "$f" ]; then cp -p "$f" "$f.chom-prev" || fail "keep the server block"; fi
	block=changed
	mv -f "$tmp" "$f" || fail "replace the server block"
fi
if [ "$(readlink "$link" || true)" != "$f" ]; then ln -sfn "$f" "$link" || fail "link the server block"; fi
if [ -z "$swapped" ] && [ "$block" = same ]; then echo same; exit 0; fi
if out=$("$@" 2>&1); then
	for n in $names; do rm -f "$dir/$n.chom-prev"; done
	rm -f "$f.chom-prev"
	echo changed
	exit 0
fi
rollback
printf '%s\n' "$out" >&2
exit 3
`

// scriptPutChallenge writes stdin (a key authorization) as <dir>/<token>: the
// directories root's (the site's 0750 with the web group, so nginx's workers
// read it and no site user does), the file root's with the web group, 0640. It
// prints "changed" or "same". Args: challenge base dir, site's challenge dir,
// token, web group.
const scriptPutChallenge = `set -eu
base=$1 dir=$2 token=$3 group=$4
install -d -m 0755 -o root -g root "$base"
install -d -m 0750 -o root -g "$group" "$dir"
tmp="$dir/.$token.chom-tmp"
cat > "$tmp"
chown "root:$group" "$tmp"
chmod 0640 "$tmp"
if [ -f "$dir/$token" ] && [ ! -L "$dir/$token" ] && cmp -s "$tmp" "$dir/$token"; then
	rm -f "$tmp"
	echo same
else
	mv -f "$tmp" "$dir/$token"
	echo changed
fi
`

// tlsPaths are a site's TLS files on its server.
type tlsPaths struct {
	dir, chain, key, env string
	challengeBase        string
	challenges           string // <ChallengeDir>/<domain>
}

func (p *Provisioner) tlsPaths(site drivers.SiteSpec, sp sitePaths) (tlsPaths, error) {
	t := tlsPaths{dir: path.Join(sp.stateDir, "tls"), challengeBase: p.layout.ChallengeDir,
		challenges: path.Join(p.layout.ChallengeDir, site.Domain)}
	t.chain, t.key, t.env = path.Join(t.dir, tlsChain), path.Join(t.dir, tlsKey), path.Join(t.dir, tlsEnv)
	if !directlyIn(p.layout.ChallengeDir, t.challenges) {
		return tlsPaths{}, fmt.Errorf("%w: path %q is not directly in %q", drivers.ErrInvalidSpec, t.challenges, p.layout.ChallengeDir)
	}
	return t, nil
}

// readTLSState asks the server for the site's TLS state (scriptTLSState).
func (p *Provisioner) readTLSState(ctx context.Context, s *session, sp sitePaths, tp tlsPaths) (tlsState, error) {
	out, err := s.run(ctx, scriptTLSState, runOpts{}, append([]string{sp.avail, tp.dir}, p.layout.NginxVersion...)...)
	if err != nil {
		return tlsState{}, fmt.Errorf("read TLS state: %w", err)
	}
	return parseTLSState(out), nil
}

var nginxVersion = regexp.MustCompile(`nginx/([0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4})`)

// parseTLSState reads scriptTLSState's output. Unknown lines and values are
// ignored: the TLS block is rendered only from what parses.
func parseTLSState(out string) tlsState {
	var (
		st       tlsState
		hsts, oc bool
	)
	for _, line := range strings.Split(out, "\n") {
		kind, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch kind {
		case "block":
			st.provisioned = rest == "yes"
		case "tls":
			k, v, _ := strings.Cut(rest, "=")
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "HSTS_MAX_AGE":
				st.hstsMaxAge, hsts = n, true
			case "OCSP":
				st.ocsp, oc = n == 1, true
			}
		case "nginx":
			if m := nginxVersion.FindStringSubmatch(rest); m != nil {
				st.nginx = m[1]
			}
		case "ns":
			if r := resolverAddr(rest); r != "" {
				st.resolvers = append(st.resolvers, r)
			}
		}
	}
	st.deployed = hsts && oc
	return st
}

// resolverAddr renders an IP address as nginx's resolver directive takes it
// (IPv6 in brackets), or "" when s is not an IP address.
func resolverAddr(s string) string {
	ip := net.ParseIP(s)
	switch {
	case ip == nil:
		return ""
	case ip.To4() != nil:
		return ip.String()
	default:
		return "[" + ip.String() + "]"
	}
}

// http2Listen reports whether nginx version v needs "listen … ssl http2" for
// HTTP/2: every version before 1.25.1, which introduced "http2 on;" (and
// deprecated the listen parameter, still accepting it). A version that could
// not be read gets the old syntax, which every nginx with HTTP/2 accepts.
func http2Listen(v string) bool {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return true
	}
	var n [3]int
	for i, s := range parts {
		x, err := strconv.Atoi(s)
		if err != nil {
			return true
		}
		n[i] = x
	}
	return n[0] < 1 || n[0] == 1 && (n[1] < 25 || n[1] == 25 && n[2] < 1)
}

// tlsValues are the siteconf.TLS of a site whose certificate is deployed (or
// about to be), from the server's state.
func (p *Provisioner) tlsValues(tp tlsPaths, st tlsState) *siteconf.TLS {
	t := &siteconf.TLS{
		Listen: p.layout.ListenTLS, HTTP2Listen: http2Listen(st.nginx),
		Certificate: tp.chain, Key: tp.key, Ciphers: siteconf.Ciphers,
		OCSP: st.ocsp, HSTSMaxAge: st.hstsMaxAge,
	}
	if t.OCSP {
		t.Resolvers = st.resolvers
		if len(p.layout.Resolvers) > 0 {
			t.Resolvers = nil
			for _, r := range p.layout.Resolvers {
				t.Resolvers = append(t.Resolvers, resolverAddr(r))
			}
		}
	}
	return t
}

// renderSite reads the site's TLS state from the server and renders its files:
// with the HTTPS block when a certificate is deployed, so a Provision (or a
// layout migration) of a TLS site keeps serving it over HTTPS.
func (p *Provisioner) renderSite(ctx context.Context, s *session, site drivers.SiteSpec, sp sitePaths) (siteconf.Files, error) {
	tp, err := p.tlsPaths(site, sp)
	if err != nil {
		return siteconf.Files{}, err
	}
	st, err := p.readTLSState(ctx, s, sp, tp)
	if err != nil {
		return siteconf.Files{}, err
	}
	v := p.values(site, sp, tp)
	if st.deployed {
		v.TLS = p.tlsValues(tp, st)
	}
	return render(v)
}

// lockedSession validates site, waits for its server and returns what every TLS
// method needs; call unlock when done.
func (p *Provisioner) lockedSession(ctx context.Context, site drivers.SiteSpec) (sitePaths, tlsPaths, *session, func(), error) {
	sp, s, err := p.start(site)
	if err != nil {
		return sitePaths{}, tlsPaths{}, nil, nil, err
	}
	tp, err := p.tlsPaths(site, sp)
	if err != nil {
		return sitePaths{}, tlsPaths{}, nil, nil, err
	}
	unlock, err := p.locks.Lock(ctx, site.Server.ID)
	if err != nil {
		return sitePaths{}, tlsPaths{}, nil, nil, fmt.Errorf("wait for server %s: %w", site.Server.ID, err)
	}
	return sp, tp, s, unlock, nil
}

// PutChallenge writes keyAuth as <ChallengeDir>/<domain>/<token> on the site's
// server, which the site's server block (every one of its names, on HTTP and,
// once it has a certificate, HTTPS) serves at /.well-known/acme-challenge/
// as text/plain. The token must be base64url and keyAuth the token, '.' and a
// base64url thumbprint (drivers.ValidateChallenge); anything else wraps
// drivers.ErrInvalidSpec and touches nothing. The directory is root's and
// readable by the web group only: the site's own code can neither plant a token
// nor read one, and another site's block never serves it. No reload is needed.
func (p *Provisioner) PutChallenge(ctx context.Context, site drivers.SiteSpec, token, keyAuth string) error {
	if err := drivers.ValidateChallenge(token, keyAuth); err != nil {
		return fmt.Errorf("ssh: put challenge: %w", err)
	}
	_, tp, s, unlock, err := p.lockedSession(ctx, site)
	if err != nil {
		return fmt.Errorf("ssh: put challenge: %w", err)
	}
	defer unlock()
	if _, err := s.run(ctx, scriptPutChallenge, runOpts{stdin: strings.NewReader(keyAuth)},
		tp.challengeBase, tp.challenges, token, p.layout.WebGroup); err != nil {
		return fmt.Errorf("ssh: put challenge for %s: %w", site.Domain, err)
	}
	return nil
}

// RemoveChallenge removes the token PutChallenge wrote; a token that is not
// there is not an error.
func (p *Provisioner) RemoveChallenge(ctx context.Context, site drivers.SiteSpec, token string) error {
	if err := drivers.ValidateChallengeToken(token); err != nil {
		return fmt.Errorf("ssh: remove challenge: %w", err)
	}
	_, tp, s, unlock, err := p.lockedSession(ctx, site)
	if err != nil {
		return fmt.Errorf("ssh: remove challenge: %w", err)
	}
	defer unlock()
	f := path.Join(tp.challenges, token)
	if _, err := s.run(ctx, scriptRemove, runOpts{}, f, path.Join(tp.challenges, "."+token+".chom-tmp")); err != nil {
		return fmt.Errorf("ssh: remove challenge for %s: %w", site.Domain, err)
	}
	return nil
}

// DeployCertificate installs cert for the site and serves it over HTTPS: the
// chain and the key (re-encoded from what drivers.ParseTLSCertificate parsed,
// so nothing else reaches the server) go to <StateDir>/<site-id>/tls/, a
// directory of root's (0700) with files of root's (0600) that only nginx's
// master, running as root, reads; the site's user cannot read its own key, even
// through PHP. The server block becomes two: HTTP answers ACME challenges and
// redirects the rest to HTTPS; HTTPS serves the site (TLS 1.2 and 1.3, HTTP/2,
// OCSP stapling when the leaf names a responder, HSTS when opts.HSTS). The
// choices are kept in tls.env beside the key, so Provision renders the same
// block again.
//
// The whole configuration is checked (Layout.NginxCheck) before nginx reloads
// (gracefully: open connections finish on the old workers). When the check
// fails, the previous chain, key, tls.env and server block are put back and the
// error wraps drivers.ErrConfigRejected. Deploying the same certificate and
// options again changes nothing and does not reload. The site must be
// provisioned; a certificate or option that does not validate wraps
// drivers.ErrInvalidSpec and changes nothing.
func (p *Provisioner) DeployCertificate(ctx context.Context, site drivers.SiteSpec, cert drivers.TLSCertificate, opts drivers.TLSOptions) error {
	if err := drivers.ValidateSiteSpec(site); err != nil {
		return fmt.Errorf("ssh: deploy certificate: %w", err)
	}
	vt, err := drivers.ParseTLSCertificate(site, cert, opts, time.Now())
	if err != nil {
		return fmt.Errorf("ssh: deploy certificate for %s: %w", site.Domain, err)
	}
	sp, tp, s, unlock, err := p.lockedSession(ctx, site)
	if err != nil {
		return fmt.Errorf("ssh: deploy certificate: %w", err)
	}
	defer unlock()
	fail := func(what string, err error) error {
		return fmt.Errorf("ssh: deploy certificate for %s: %s: %w", site.Domain, what, err)
	}
	st, err := p.readTLSState(ctx, s, sp, tp)
	if err != nil {
		return fail("read state", err)
	}
	if !st.provisioned {
		return fail("look for the server block", fmt.Errorf("%s is not there: provision the site first", sp.avail))
	}
	st.ocsp, st.hstsMaxAge = vt.OCSP, vt.HSTSMaxAgeSeconds
	v := p.values(site, sp, tp)
	v.TLS = p.tlsValues(tp, st)
	files, err := render(v)
	if err != nil {
		return fail("render", err)
	}
	ocsp := 0
	if vt.OCSP {
		ocsp = 1
	}
	env := fmt.Sprintf("HSTS_MAX_AGE=%d\nOCSP=%d\n", vt.HSTSMaxAgeSeconds, ocsp)
	for _, f := range []struct {
		name string
		data []byte
	}{{tlsChain, vt.ChainPEM}, {tlsKey, vt.KeyPEM}, {tlsEnv, []byte(env)}} {
		if _, err := s.run(ctx, scriptStageTLS, runOpts{stdin: strings.NewReader(string(f.data))}, tp.dir, f.name); err != nil {
			return fail("stage "+f.name, err)
		}
	}
	out, err := s.run(ctx, scriptApplyTLS, runOpts{stdin: strings.NewReader(string(files.Nginx))},
		append([]string{tp.dir, sp.avail, sp.enabled}, p.layout.NginxCheck...)...)
	var ce *commandError
	if errors.As(err, &ce) && ce.exit.ExitStatus() == exitRejected {
		return fmt.Errorf("ssh: deploy certificate for %s: %w: nginx check failed, previous certificate and configuration restored: %w",
			site.Domain, drivers.ErrConfigRejected, err)
	}
	if err != nil {
		return fail("apply", err)
	}
	if out == "changed" {
		if _, err := s.run(ctx, scriptExec, runOpts{}, p.layout.NginxReload...); err != nil {
			return fail("reload nginx", err)
		}
	}
	p.cfg.Logger.InfoContext(ctx, "certificate deployed", "vps_id", site.Server.ID, "site_id", site.ID,
		"tenant_id", site.TenantID, "domain", site.Domain, "serial", vt.Leaf.SerialNumber.Text(16),
		"not_after", vt.Leaf.NotAfter, "hsts", opts.HSTS, "ocsp", vt.OCSP, "changed", out == "changed")
	return nil
}

// RemoveCertificate puts the site back to plain HTTP: its server block is
// rendered without TLS, checked (a rejected block is put back, the error wraps
// drivers.ErrConfigRejected) and nginx reloaded, and only then is the TLS
// directory (chain, key, tls.env) removed. A site without a certificate, or not
// provisioned at all, is not an error.
func (p *Provisioner) RemoveCertificate(ctx context.Context, site drivers.SiteSpec) error {
	sp, tp, s, unlock, err := p.lockedSession(ctx, site)
	if err != nil {
		return fmt.Errorf("ssh: remove certificate: %w", err)
	}
	defer unlock()
	fail := func(what string, err error) error {
		return fmt.Errorf("ssh: remove certificate for %s: %s: %w", site.Domain, what, err)
	}
	if has, err := s.run(ctx, scriptHasFile, runOpts{}, sp.avail); err != nil {
		return fail("look for the server block", err)
	} else if has == "yes" {
		files, err := render(p.values(site, sp, tp))
		if err != nil {
			return fail("render", err)
		}
		changed, err := s.changed(ctx, scriptWriteFile, runOpts{stdin: strings.NewReader(string(files.Nginx))}, sp.avail, sp.enabled)
		if err != nil {
			return fail("write server block", err)
		}
		if changed {
			if err := p.check(ctx, s, "nginx", sp.avail, sp.enabled, true, p.layout.NginxCheck); err != nil {
				return fail("check nginx", err)
			}
			if _, err := s.run(ctx, scriptExec, runOpts{}, p.layout.NginxReload...); err != nil {
				return fail("reload nginx", err)
			}
		}
	}
	if _, err := s.run(ctx, scriptRemoveStage, runOpts{}, tp.dir); err != nil {
		return fail("remove TLS files", err)
	}
	p.cfg.Logger.InfoContext(ctx, "certificate removed", "vps_id", site.Server.ID, "site_id", site.ID,
		"tenant_id", site.TenantID, "domain", site.Domain)
	return nil
}
