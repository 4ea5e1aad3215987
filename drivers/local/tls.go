package local

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/siteconf"
)

var _ drivers.TLSDeployer = (*Provisioner)(nil)

// keyPerm is the mode of the TLS files: on a real server they are root's and
// nginx's master reads them; here the one user of `chom dev` does.
const keyPerm fs.FileMode = 0o600

// tlsListen are the TLS listen addresses of the HTTPS block.
var tlsListen = []string{"443", "[::]:443"}

// tlsPaths are a site's TLS files under <Root>/<server-id>/.
type tlsPaths struct {
	dir, chain, key, env string // tls/<domain>/
	challenges           string // acme/<domain>/
}

func (p *Provisioner) tlsPaths(site drivers.SiteSpec, sp sitePaths) (tlsPaths, error) {
	t := tlsPaths{dir: filepath.Join(sp.server, "tls", site.Domain), challenges: filepath.Join(sp.server, "acme", site.Domain)}
	t.chain, t.key, t.env = filepath.Join(t.dir, "fullchain.pem"), filepath.Join(t.dir, "privkey.pem"), filepath.Join(t.dir, "tls.env")
	for _, d := range []struct{ parent, dir string }{{filepath.Join(sp.server, "tls"), t.dir}, {filepath.Join(sp.server, "acme"), t.challenges}} {
		if filepath.Dir(d.dir) != d.parent || !inside(sp.server, d.dir) {
			return tlsPaths{}, fmt.Errorf("%w: directory %q is not directly under %q", drivers.ErrInvalidSpec, d.dir, d.parent)
		}
	}
	return t, nil
}

// tlsState reads the site's tls.env; nil when no certificate is deployed (the
// chain, the key or tls.env missing).
func tlsState(tp tlsPaths) *siteconf.TLS {
	for _, f := range []string{tp.chain, tp.key} {
		if _, err := os.Stat(f); err != nil {
			return nil
		}
	}
	env, err := os.ReadFile(tp.env)
	if err != nil {
		return nil
	}
	t := &siteconf.TLS{Listen: tlsListen, HTTP2Listen: true, Certificate: tp.chain, Key: tp.key, Ciphers: siteconf.Ciphers}
	seen := 0
	for _, line := range strings.Split(string(env), "\n") {
		k, v, _ := strings.Cut(line, "=")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "HSTS_MAX_AGE":
			t.HSTSMaxAge, seen = n, seen+1
		case "OCSP":
			t.OCSP, seen = n == 1, seen+1
		}
	}
	if seen != 2 {
		return nil
	}
	return t
}

// siteValuesTLS are the values of a site with its TLS state as the files say.
func (p *Provisioner) siteValuesTLS(site drivers.SiteSpec) (sitePaths, tlsPaths, siteValues, error) {
	if err := drivers.ValidateSiteSpec(site); err != nil {
		return sitePaths{}, tlsPaths{}, siteValues{}, err
	}
	sp, err := p.paths(site)
	if err != nil {
		return sitePaths{}, tlsPaths{}, siteValues{}, err
	}
	tp, err := p.tlsPaths(site, sp)
	if err != nil {
		return sitePaths{}, tlsPaths{}, siteValues{}, err
	}
	if err := checkUp(sp.server); err != nil {
		return sitePaths{}, tlsPaths{}, siteValues{}, err
	}
	v := p.values(site, sp, tp)
	return sp, tp, v, nil
}

// PutChallenge writes keyAuth as acme/<domain>/<token>, which the site's server
// block serves at /.well-known/acme-challenge/ on every name of the site. The
// token and keyAuth are checked first (drivers.ValidateChallenge): anything else
// wraps drivers.ErrInvalidSpec and writes nothing.
func (p *Provisioner) PutChallenge(ctx context.Context, site drivers.SiteSpec, token, keyAuth string) error {
	if err := drivers.ValidateChallenge(token, keyAuth); err != nil {
		return fmt.Errorf("local: put challenge: %w", err)
	}
	_, tp, _, err := p.siteValuesTLS(site)
	if err != nil {
		return fmt.Errorf("local: put challenge: %w", err)
	}
	unlock, err := p.locks.Lock(ctx, site.Server.ID)
	if err != nil {
		return fmt.Errorf("local: put challenge for %s: wait for server %s: %w", site.Domain, site.Server.ID, err)
	}
	defer unlock()
	if err := os.MkdirAll(tp.challenges, dirPerm); err != nil {
		return fmt.Errorf("local: put challenge for %s: %w", site.Domain, err)
	}
	if _, err := writeAtomic(filepath.Join(tp.challenges, token), []byte(keyAuth)); err != nil {
		return fmt.Errorf("local: put challenge for %s: %w", site.Domain, err)
	}
	return nil
}

// RemoveChallenge removes what PutChallenge wrote; a token that is not there is
// not an error.
func (p *Provisioner) RemoveChallenge(ctx context.Context, site drivers.SiteSpec, token string) error {
	if err := drivers.ValidateChallengeToken(token); err != nil {
		return fmt.Errorf("local: remove challenge: %w", err)
	}
	_, tp, _, err := p.siteValuesTLS(site)
	if err != nil {
		return fmt.Errorf("local: remove challenge: %w", err)
	}
	unlock, err := p.locks.Lock(ctx, site.Server.ID)
	if err != nil {
		return fmt.Errorf("local: remove challenge for %s: wait for server %s: %w", site.Domain, site.Server.ID, err)
	}
	defer unlock()
	if _, err := removeFile(filepath.Join(tp.challenges, token)); err != nil {
		return fmt.Errorf("local: remove challenge for %s: %w", site.Domain, err)
	}
	return nil
}

// saved is a file's content before a change, for putting it back.
type saved struct {
	path string
	data []byte
	had  bool
}

func save(paths ...string) ([]saved, error) {
	var out []saved
	for _, p := range paths {
		b, err := os.ReadFile(p)
		switch {
		case err == nil:
			out = append(out, saved{path: p, data: b, had: true})
		case errors.Is(err, fs.ErrNotExist):
			out = append(out, saved{path: p})
		default:
			return nil, err
		}
	}
	return out, nil
}

// restore puts every saved file back as it was (removing those that were not
// there).
func restore(files []saved) error {
	var errs []error
	for _, f := range files {
		if f.had {
			_, err := writeAtomicMode(f.path, f.data, modeOf(f.path))
			errs = append(errs, err)
		} else {
			_, err := removeFile(f.path)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// modeOf is the mode a file of this driver is written with.
func modeOf(path string) fs.FileMode {
	if strings.HasSuffix(path, ".conf") {
		return filePerm
	}
	return keyPerm
}

// DeployCertificate writes the chain, the key (re-encoded from what
// drivers.ParseTLSCertificate parsed) and tls.env to tls/<domain>/ (0700, files
// 0600), renders the site's server block with TLS (HTTP answering ACME
// challenges and redirecting the rest; HTTPS with HTTP/2, HSTS when opts.HSTS)
// and runs the reload check, which here also loads the chain and key as nginx
// would (they must parse and match). When the check fails, the previous chain,
// key, tls.env and server block are put back and the error wraps
// drivers.ErrConfigRejected. The site must be provisioned. HTTP/2 is rendered as
// "listen … ssl http2", which every nginx with HTTP/2 takes.
func (p *Provisioner) DeployCertificate(ctx context.Context, site drivers.SiteSpec, cert drivers.TLSCertificate, opts drivers.TLSOptions) error {
	if err := drivers.ValidateSiteSpec(site); err != nil {
		return fmt.Errorf("local: deploy certificate: %w", err)
	}
	vt, err := drivers.ParseTLSCertificate(site, cert, opts, time.Now())
	if err != nil {
		return fmt.Errorf("local: deploy certificate for %s: %w", site.Domain, err)
	}
	sp, tp, v, err := p.siteValuesTLS(site)
	if err != nil {
		return fmt.Errorf("local: deploy certificate: %w", err)
	}
	fail := func(what string, err error) error {
		return fmt.Errorf("local: deploy certificate for %s: %s: %w", site.Domain, what, err)
	}
	unlock, err := p.locks.Lock(ctx, site.Server.ID)
	if err != nil {
		return fail("wait for server "+site.Server.ID, err)
	}
	defer unlock()
	if _, err := os.Stat(sp.nginxConf); err != nil {
		return fail("look for the server block", fmt.Errorf("%w: provision the site first", err))
	}
	ocsp := 0
	if vt.OCSP {
		ocsp = 1
	}
	v.TLS = &siteconf.TLS{Listen: tlsListen, HTTP2Listen: true, Certificate: tp.chain, Key: tp.key, Ciphers: siteconf.Ciphers,
		OCSP: vt.OCSP, HSTSMaxAge: vt.HSTSMaxAgeSeconds}
	files, err := render(v)
	if err != nil {
		return fail("render", err)
	}
	prev, err := save(tp.chain, tp.key, tp.env, sp.nginxConf)
	if err != nil {
		return fail("keep the previous files", err)
	}
	if err := os.MkdirAll(tp.dir, 0o700); err != nil {
		return fail("create TLS directory", err)
	}
	write := []struct {
		path string
		data []byte
		mode fs.FileMode
	}{
		{tp.chain, vt.ChainPEM, keyPerm}, {tp.key, vt.KeyPEM, keyPerm},
		{tp.env, []byte(fmt.Sprintf("HSTS_MAX_AGE=%d\nOCSP=%d\n", vt.HSTSMaxAgeSeconds, ocsp)), keyPerm},
		{sp.nginxConf, files.Nginx, filePerm},
	}
	for _, w := range write {
		if _, err := writeAtomicMode(w.path, w.data, w.mode); err != nil {
			return fail("write", errors.Join(err, restore(prev)))
		}
	}
	if err := p.reload(sp, v); err != nil {
		return fmt.Errorf("local: deploy certificate for %s: %w: previous certificate and configuration restored: %w",
			site.Domain, drivers.ErrConfigRejected, errors.Join(err, restore(prev)))
	}
	p.logger.InfoContext(ctx, "certificate deployed", "vps_id", site.Server.ID, "site_id", site.ID, "tenant_id", site.TenantID,
		"domain", site.Domain, "serial", vt.Leaf.SerialNumber.Text(16), "not_after", vt.Leaf.NotAfter, "hsts", opts.HSTS)
	return nil
}

// RemoveCertificate renders the site's server block without TLS, checks it (a
// rejected block is put back; the error wraps drivers.ErrConfigRejected) and
// then removes tls/<domain>/. A site without a certificate, or not provisioned,
// is not an error.
func (p *Provisioner) RemoveCertificate(ctx context.Context, site drivers.SiteSpec) error {
	sp, tp, v, err := p.siteValuesTLS(site)
	if err != nil {
		return fmt.Errorf("local: remove certificate: %w", err)
	}
	fail := func(what string, err error) error {
		return fmt.Errorf("local: remove certificate for %s: %s: %w", site.Domain, what, err)
	}
	unlock, err := p.locks.Lock(ctx, site.Server.ID)
	if err != nil {
		return fail("wait for server "+site.Server.ID, err)
	}
	defer unlock()
	if _, err := os.Stat(sp.nginxConf); err == nil {
		files, err := render(v)
		if err != nil {
			return fail("render", err)
		}
		prev, err := save(sp.nginxConf)
		if err != nil {
			return fail("keep the server block", err)
		}
		changed, err := writeAtomic(sp.nginxConf, files.Nginx)
		if err != nil {
			return fail("write server block", err)
		}
		if changed {
			if err := p.reload(sp, v); err != nil {
				return fmt.Errorf("local: remove certificate for %s: %w: previous configuration restored: %w",
					site.Domain, drivers.ErrConfigRejected, errors.Join(err, restore(prev)))
			}
		}
	}
	if err := os.RemoveAll(tp.dir); err != nil {
		return fail("remove TLS files", err)
	}
	return nil
}

// checkTLSFiles is the part of nginx -t that reads a site's certificate: the
// chain and key must load and match.
func checkTLSFiles(t *siteconf.TLS) error {
	if t == nil {
		return nil
	}
	if _, err := tls.LoadX509KeyPair(t.Certificate, t.Key); err != nil {
		return fmt.Errorf("load certificate %s and key %s: %w", t.Certificate, t.Key, err)
	}
	return nil
}

// writeAtomicMode is writeAtomic with the file's mode.
func writeAtomicMode(path string, data []byte, mode fs.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		if err := os.Chmod(path, mode); err != nil {
			return false, err
		}
		return false, nil
	}
	tmp, err := writeTemp(path, data)
	if err != nil {
		return false, err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		_ = os.Remove(tmp)
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return false, fmt.Errorf("replace %s: %w", path, err)
	}
	return true, nil
}
