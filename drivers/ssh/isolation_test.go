package ssh_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/ssh"
	"github.com/chomhq/chom/internal/vpsenv"
)

// asUser runs argv as the system user (no shell: runuser -u execs argv), from
// /, and returns its combined output.
func asUser(user string, argv ...string) (string, error) {
	cmd := exec.Command("runuser", append([]string{"-u", user, "--"}, argv...)...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// attackTarget creates a root-owned 0600 file outside every site, as
// /etc/ld.so.preload would be, and returns its path.
func attackTarget(t *testing.T) string {
	t.Helper()
	f, err := os.CreateTemp("", "chom-attack-target-")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("root's own content\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f.Name(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(f.Name()) })
	return f.Name()
}

// newProvisionerMaxLog is newProvisioner with a bound on decompressed logs.
func newProvisionerMaxLog(t *testing.T, v *vpsenv.VPS, maxLog int64) *ssh.Provisioner {
	t.Helper()
	p, err := ssh.NewProvisioner(ssh.Config{
		Signer: v.Client, User: v.User, DialTimeout: 5 * time.Second, StepTimeout: 30 * time.Second,
		Layout: v.SSHLayout(), MaxLogBytes: maxLog, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// reloadNginx reloads the VPS's nginx as the tenant would get it reloaded (by
// creating or deleting one of its sites).
func reloadNginx(t *testing.T, v *vpsenv.VPS) {
	t.Helper()
	if out, err := exec.Command(v.NginxReload[0], v.NginxReload[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("nginx reload: %v: %s", err, out)
	}
}

// requestUntil sends GET path to host every 50ms until done reports true or
// d passes; it reports whether done did.
func requestUntil(t *testing.T, v *vpsenv.VPS, host, path string, d time.Duration, done func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		_, _, _ = v.Get(t.Context(), host, path)
		if done() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return done()
}

// testLogSymlinkEscalation is the attack of issue 10: a site's code replaces
// its access.log with a link to a file of root's, gets nginx reloaded, and
// nginx's master (root) opens the link's target for appending, where the
// site's request lines then land. On the old layout's shape (the log
// directory owned by the site user) it works, and the test sees root's file
// written; on the layout Provision makes now (the directory root's), the site
// user cannot replace the log (permission denied) and the target's hash is
// the same after a reload and a request.
func testLogSymlinkEscalation(t *testing.T, b *realBundle) {
	ctx := t.Context()
	v := b.vps
	site := b.spec("site_esc1", "esc1.example.com", drivers.SiteTypeHTML)
	if _, err := b.prov.Provision(ctx, site, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.prov.Deprovision(context.WithoutCancel(ctx), site) })
	b.eventually(t, site.Domain, func(s int, _ string) bool { return s == 200 })
	user := drivers.SystemUser(site.ID)
	logDir := filepath.Join(v.LogDir, site.Domain)
	accessLog := filepath.Join(logDir, "access.log")
	payload := "/CHOM-ATTACK-" + strings.ReplaceAll(t.Name(), "/", "-")

	// The old layout's shape: the site user owns its log directory.
	if out, err := exec.Command("chown", user+":"+user, logDir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	if err := os.Chmod(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	oldTarget := attackTarget(t)
	if out, err := asUser(user, "ln", "-sfn", oldTarget, accessLog); err != nil {
		t.Fatalf("old layout: the site user could not replace its access.log: %v: %s", err, out)
	}
	reloadNginx(t, v)
	wrote := requestUntil(t, v, site.Domain, payload, 10*time.Second, func() bool {
		b, _ := os.ReadFile(oldTarget)
		return strings.Contains(string(b), payload)
	})
	if !wrote {
		t.Fatalf("old layout: root did not write the site's request line to %s; the attack this test guards against did not reproduce", oldTarget)
	}
	t.Logf("old layout: the site user replaced access.log with a link to root's %s; after a reload nginx (root) appended %q to it", oldTarget, payload)

	// Provision converges the directory to the new layout: root's, the link gone.
	if _, err := b.prov.Provision(ctx, site, nil); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(logDir)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || fi.Mode().Perm() != 0o750 {
		t.Errorf("log directory after Provision: uid %d mode %v, want root's, 0750", st.Uid, fi.Mode().Perm())
	}
	if fi, err := os.Lstat(accessLog); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		t.Errorf("Provision left the planted link %s", accessLog)
	}
	reloadNginx(t, v)
	newTarget := attackTarget(t)
	before := fileHash(t, newTarget)
	for _, attempt := range [][]string{
		{"touch", filepath.Join(logDir, "access.log.1")},
		{"rm", "-f", filepath.Join(logDir, "error.log")},
		{"ln", "-sfn", newTarget, filepath.Join(logDir, "error.log")},
		{"ln", "-sfn", newTarget, accessLog},
	} {
		out, err := asUser(user, attempt...)
		if err == nil || !strings.Contains(out, "ermission denied") {
			t.Errorf("new layout: %v as the site user: %v: %s; want permission denied", attempt, err, out)
		}
	}
	reloadNginx(t, v)
	// The request must be logged (so nginx did reopen its logs) and the target untouched.
	logged := requestUntil(t, v, site.Domain, payload+"-new", 10*time.Second, func() bool {
		b, _ := os.ReadFile(accessLog)
		return strings.Contains(string(b), payload+"-new")
	})
	if !logged {
		t.Errorf("new layout: the request was not logged to %s", accessLog)
	}
	if after := fileHash(t, newTarget); after != before {
		t.Errorf("new layout: root's %s changed (sha256 %s → %s)", newTarget, before, after)
	}
	if t.Failed() {
		return
	}
	t.Logf("new layout: the site user cannot create, replace or delete anything in %s; %s unchanged (sha256 %s) after a reload and a request", logDir, newTarget, before)
}

// testLogReaderRefuses hands the remote log reader what a listing never names
// but a race could (a name that became a link or a fifo after the listing) and
// checks it refuses each without following or hanging, and that Bandwidth
// skips and counts a gzip bomb and a corrupt rotated log while billing the
// rest.
func testLogReaderRefuses(t *testing.T, b *realBundle) {
	ctx := t.Context()
	v := b.vps
	site := b.spec("site_rdr1", "rdr1.example.com", drivers.SiteTypeHTML)
	if _, err := b.prov.Provision(ctx, site, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.prov.Deprovision(context.WithoutCancel(ctx), site) })
	logDir := filepath.Join(v.LogDir, site.Domain)
	now := time.Now()
	start, end := now.Add(-time.Hour), now.Add(time.Hour)

	// A file outside the site full of billable lines: a link to it must bill nothing.
	outside := filepath.Join(t.TempDir(), "secret.log")
	if err := os.WriteFile(outside, []byte(combinedLine(now, 999)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(logDir, "access.log.7")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(logDir, "access.log.8"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"access.log.7", "access.log.8"} {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		bw, err := b.prov.ScanLog(rctx, site, name, start, end)
		cancel()
		if !errors.Is(err, drivers.ErrLogRefused) || bw.Bytes != 0 {
			t.Errorf("reader on %s (a link or fifo): %+v, %v; want ErrLogRefused and nothing billed", name, bw, err)
		}
	}
	_ = os.Remove(filepath.Join(logDir, "access.log.7"))
	_ = os.Remove(filepath.Join(logDir, "access.log.8"))

	// A bomb and a corrupt file beside a good rotated log, with a 1 MiB bound.
	small := newProvisionerMaxLog(t, v, 1<<20)
	var good, bomb bytes.Buffer
	zw := gzip.NewWriter(&good)
	_, _ = zw.Write([]byte(combinedLine(now, 300)))
	_ = zw.Close()
	zw = gzip.NewWriter(&bomb)
	_, _ = zw.Write(make([]byte, 16<<20))
	_ = zw.Close()
	corrupt := bytes.Clone(good.Bytes())
	corrupt[len(corrupt)-6] ^= 0xff // the CRC
	for name, data := range map[string][]byte{"access.log.2.gz": good.Bytes(), "access.log.3.gz": bomb.Bytes(), "access.log.4.gz": corrupt} {
		if err := os.WriteFile(filepath.Join(logDir, name), data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	bw, err := small.Bandwidth(ctx, site, start, end)
	if err != nil {
		t.Fatal(err)
	}
	if bw.Bytes != 300 || bw.Requests != 1 || bw.RefusedFiles != 2 {
		t.Errorf("Bandwidth with a bomb and a corrupt file: %+v; want 300 bytes of 1 request billed and 2 files refused", bw)
	}
	t.Logf("reader: a link and a fifo refused; a gzip bomb (%d bytes → 16 MiB, bound 1 MiB) and a corrupt .gz skipped and counted: %+v", bomb.Len(), bw)
}

// TestIsolationOnRealServers runs the isolation attacks against real sshd,
// nginx and php-fpm on loopback (the attack suite of issue 10).
func TestIsolationOnRealServers(t *testing.T) {
	t.Parallel()
	v := vpsenv.Start(t)
	b := &realBundle{vps: v, prov: newProvisioner(t, v, nil)}
	t.Run("log symlink escalation: old layout falls, new layout holds", func(t *testing.T) {
		testLogSymlinkEscalation(t, b)
	})
	t.Run("log reader follows no link and reads no bomb", func(t *testing.T) {
		testLogReaderRefuses(t, b)
	})
	t.Run("migrate layout: old shape to new, twice", func(t *testing.T) {
		testMigrateLayout(t, b)
	})
	t.Run("restore refuses links out of the site", func(t *testing.T) {
		testRestoreRefusesLinks(t, b)
	})
	t.Run("attack suite: tenant A against tenant B", func(t *testing.T) {
		testAttackSuite(t, b)
	})
	t.Run("tls: tokens, keys and challenges out of a tenant's reach", func(t *testing.T) {
		testTLSAttacks(t, b)
	})
}

// layoutState is what MigrateLayout may change of a site: owners, modes and
// types of its directories and of its log directory's entries, and the
// contents of its pool and server block.
func layoutState(t *testing.T, v *vpsenv.VPS, domain string) string {
	t.Helper()
	root := filepath.Join(v.WebRoot, domain)
	out, err := exec.Command("sh", "-c", `stat -c '%n %u %g %a %F' "$1" "$1/public" "$1/tmp" "$1/sessions" "$1/logs" "$2"
find -P "$2" -mindepth 1 -printf '%f %U %G %m %y\n' | sort
sha256sum "$3" "$4"`, "sh", root, filepath.Join(v.LogDir, domain),
		filepath.Join(v.PHPPoolDir, domain+".conf"), filepath.Join(v.NginxAvailable, domain+".conf")).CombinedOutput()
	if err != nil {
		t.Fatalf("layout state: %v: %s", err, out)
	}
	return string(out)
}

// testMigrateLayout makes a PHP site look as the old layout left it (the log
// directory the site user's with a planted link, the document root 0755, a
// pool without disable_functions, a server block without disable_symlinks)
// and checks MigrateLayout brings it to the new shape, and that a second run
// changes nothing and says so.
func testMigrateLayout(t *testing.T, b *realBundle) {
	ctx := t.Context()
	v := b.vps
	site := b.spec("site_mig1", "mig1.example.com", drivers.SiteTypePHP)
	if _, err := b.prov.Provision(ctx, site, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.prov.Deprovision(context.WithoutCancel(ctx), site) })
	user := drivers.SystemUser(site.ID)
	root := filepath.Join(v.WebRoot, site.Domain)
	logDir := filepath.Join(v.LogDir, site.Domain)
	pool := filepath.Join(v.PHPPoolDir, site.Domain+".conf")
	block := filepath.Join(v.NginxAvailable, site.Domain+".conf")
	want := layoutState(t, v, site.Domain)

	// The old layout's shape.
	target := attackTarget(t)
	for _, argv := range [][]string{
		{"chown", user + ":" + user, logDir, filepath.Join(root, "public")},
		{"chmod", "0755", logDir, filepath.Join(root, "public")},
		{"runuser", "-u", user, "--", "ln", "-sfn", target, filepath.Join(logDir, "access.log")},
		{"sed", "-i", "/disable_functions/d;/session.save_path/d", pool},
		{"sed", "-i", "/disable_symlinks/d", block},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", argv, err, out)
		}
	}
	if layoutState(t, v, site.Domain) == want {
		t.Fatal("the old layout's shape is not different from the new one")
	}
	changed, err := b.prov.MigrateLayout(ctx, site)
	if err != nil || !changed {
		t.Fatalf("MigrateLayout of an old-layout site: %v, %v; want changed", changed, err)
	}
	if got := layoutState(t, v, site.Domain); got != want {
		t.Errorf("after MigrateLayout the site is not in the new shape:\ngot:\n%s\nwant:\n%s", got, want)
	}
	b.eventually(t, site.Domain, func(s int, body string) bool { return s == 200 && strings.Contains(body, "6 * 7 = 42") })
	first := layoutState(t, v, site.Domain)
	changed, err = b.prov.MigrateLayout(ctx, site)
	if err != nil || changed {
		t.Errorf("second MigrateLayout: %v, %v; want nothing changed", changed, err)
	}
	if got := layoutState(t, v, site.Domain); got != first {
		t.Errorf("second MigrateLayout changed the site:\nbefore:\n%s\nafter:\n%s", first, got)
	}
}

// entry is one member of a crafted archive.
type entry struct {
	name, link, body string
	typ              byte
}

func craftArchive(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Now()}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testRestoreRefusesLinks restores crafted archives through the real sshd
// and checks the ssh driver refuses what the local one refuses: an absolute
// link, a link leaving the site, a files member that is itself a link, an
// entry written through a link, a hard link; each is ErrCorruptArchive and
// leaves the live site as it was. An archive whose link stays inside is
// restored.
func testRestoreRefusesLinks(t *testing.T, b *realBundle) {
	ctx := t.Context()
	v := b.vps
	site := b.spec("site_rst1", "rst1.example.com", drivers.SiteTypeHTML)
	if _, err := b.prov.Provision(ctx, site, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.prov.Deprovision(context.WithoutCancel(ctx), site) })
	root := filepath.Join(v.WebRoot, site.Domain)
	state := func() string {
		out, _ := exec.Command("find", "-P", root, "-printf", "%P %y %l %s\n").Output()
		return string(out)
	}
	before := state()
	// Links point at a directory of the test's, never at a system one, so a
	// regression damages nothing but the test's own files (a files member
	// linked to /etc once had /etc chowned when only the server's check ran).
	decoy := t.TempDir()
	if err := os.WriteFile(filepath.Join(decoy, "secret"), []byte("decoy"), 0o600); err != nil {
		t.Fatal(err)
	}
	decoyState := func() string {
		out, _ := exec.Command("find", "-P", decoy, "-printf", "%P %U %G %m %s\n").Output()
		return string(out)
	}
	decoyBefore := decoyState()
	dir := entry{name: "files/", typ: tar.TypeDir}
	for name, entries := range map[string][]entry{
		"absolute link":              {dir, {name: "files/secret", link: filepath.Join(decoy, "secret"), typ: tar.TypeSymlink}},
		"link leaving the site":      {dir, {name: "files/up", link: "../../../../../../../../.." + decoy, typ: tar.TypeSymlink}},
		"link climbing after a name": {dir, {name: "files/x", link: "a/../../..", typ: tar.TypeSymlink}},
		"files member is a link":     {{name: "files", link: decoy, typ: tar.TypeSymlink}},
		"entry through a link":       {dir, {name: "files/d", link: "sub", typ: tar.TypeSymlink}, {name: "files/d/x.php", body: "<?php", typ: tar.TypeReg}},
		"hard link":                  {dir, {name: "files/h", link: filepath.Join(decoy, "secret"), typ: tar.TypeLink}},
		"name outside files/":        {dir, {name: "etc/cron.d/x", body: "* * * * * root id", typ: tar.TypeReg}},
		"dot-dot in a name":          {dir, {name: "files/../../x", body: "x", typ: tar.TypeReg}},
	} {
		err := b.prov.Restore(ctx, site, drivers.BackupFiles, bytes.NewReader(craftArchive(t, entries)))
		if !errors.Is(err, drivers.ErrCorruptArchive) {
			t.Errorf("restore of an archive with %s: %v; want ErrCorruptArchive", name, err)
		}
		if got := state(); got != before {
			t.Errorf("restore of an archive with %s changed the site:\nbefore:\n%s\nafter:\n%s", name, before, got)
		}
		if got := decoyState(); got != decoyBefore {
			t.Errorf("restore of an archive with %s changed the directory its links point at:\nbefore:\n%s\nafter:\n%s", name, decoyBefore, got)
		}
	}
	ok := craftArchive(t, []entry{dir, {name: "files/index.html", body: "restored", typ: tar.TypeReg},
		{name: "files/current", link: "index.html", typ: tar.TypeSymlink}})
	if err := b.prov.Restore(ctx, site, drivers.BackupFiles, bytes.NewReader(ok)); err != nil {
		t.Fatalf("restore of an archive whose link stays inside: %v", err)
	}
	if got, err := os.Readlink(filepath.Join(root, "public", "current")); err != nil || got != "index.html" {
		t.Errorf("restored link: %q, %v", got, err)
	}
}
