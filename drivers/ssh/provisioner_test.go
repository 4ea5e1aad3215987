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
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/ssh"
	"github.com/chomhq/chom/internal/vpsenv"
)

// realBundle is one VPS of real servers and a Provisioner pointed at it.
type realBundle struct {
	vps  *vpsenv.VPS
	prov *ssh.Provisioner
}

func newProvisioner(t testing.TB, v *vpsenv.VPS, mod func(*ssh.Layout)) *ssh.Provisioner {
	t.Helper()
	l := v.SSHLayout()
	if mod != nil {
		mod(&l)
	}
	p, err := ssh.NewProvisioner(ssh.Config{
		Signer: v.Client, User: v.User, DialTimeout: 5 * time.Second, StepTimeout: 30 * time.Second,
		Layout: l, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func (b *realBundle) spec(id, domain, siteType string) drivers.SiteSpec {
	s := drivers.SiteSpec{ID: id, TenantID: "ten_1", Domain: domain, SiteType: siteType,
		Server: drivers.Server{ID: "vps_real", IPAddress: "127.0.0.1", SSHPort: b.vps.SSHPort, HostKey: b.vps.HostKey}}
	if siteType != drivers.SiteTypeHTML {
		s.PHPVersion = vpsenv.PHPVersion
	}
	return s
}

// eventually GETs host until check passes (nginx and php-fpm reload
// asynchronously) or 10s pass.
func (b *realBundle) eventually(t *testing.T, host string, check func(status int, body string) bool) (int, string) {
	t.Helper()
	var (
		status int
		body   string
		err    error
	)
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, body, err = b.vps.Get(t.Context(), host, "/")
		if err == nil && check(status, body) {
			return status, body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET Host %s: status %d, error %v, body:\n%s", host, status, err, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func userExists(name string) bool { return exec.Command("id", "-u", name).Run() == nil }

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// TestProvisionerOnRealServers provisions, backs up, restores and removes
// sites through real sshd, nginx, php-fpm and MariaDB on loopback. The
// subtests share one VPS (starting MariaDB from scratch is the slow part).
func TestProvisionerOnRealServers(t *testing.T) {
	t.Parallel()
	v := vpsenv.Start(t)
	b := &realBundle{vps: v, prov: newProvisioner(t, v, nil)}

	t.Run("html site: serve, converge, remove", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		site := b.spec("site_html1", "html1.example.com", drivers.SiteTypeHTML)
		site.Server.HostKey = fingerprint(t, v.HostKey) // pinned by fingerprint only: the key is returned whole
		var steps []string
		res, err := b.prov.Provision(ctx, site, func(_ context.Context, s drivers.Step) error {
			steps = append(steps, s.Name)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{drivers.StepSystemUser, drivers.StepSiteRoot, drivers.StepIndexPage, drivers.StepDatabase,
			drivers.StepPHPPool, drivers.StepNginxConfig, drivers.StepReload}
		if diff := cmp.Diff(want, steps); diff != "" {
			t.Errorf("steps (-want +got):\n%s", diff)
		}
		if res.HostKey != v.HostKey {
			t.Errorf("Result.HostKey = %q, want the server's %q", res.HostKey, v.HostKey)
		}
		if res.SystemUser != drivers.SystemUser(site.ID) || !userExists(res.SystemUser) {
			t.Errorf("system user %q missing", res.SystemUser)
		}
		b.eventually(t, site.Domain, func(s int, body string) bool {
			return s == 200 && strings.Contains(body, "<h1>html1.example.com</h1>")
		})

		// A second provision converges to the same single site.
		res2, err := b.prov.Provision(ctx, site, nil)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(res, res2); diff != "" {
			t.Errorf("second Provision result differs (-first +second):\n%s", diff)
		}
		for _, dir := range []string{v.NginxAvailable, v.NginxEnabled} {
			matches, _ := filepath.Glob(filepath.Join(dir, "html1.example.com*"))
			if len(matches) != 1 {
				t.Errorf("%s holds %v after two provisions, want one server block", dir, matches)
			}
		}

		if err := b.prov.Deprovision(ctx, site); err != nil {
			t.Fatal(err)
		}
		b.eventually(t, site.Domain, func(s int, _ string) bool { return s == 404 })
		if userExists(res.SystemUser) {
			t.Error("system user still exists after Deprovision")
		}
		for _, p := range []string{res.DocumentRoot, filepath.Join(v.WebRoot, site.Domain), res.NginxConfig,
			filepath.Join(v.NginxEnabled, site.Domain+".conf"), filepath.Join(v.LogDir, site.Domain)} {
			if exists(p) {
				t.Errorf("%s still exists after Deprovision", p)
			}
		}
		if err := b.prov.Deprovision(ctx, site); err != nil {
			t.Fatalf("Deprovision of a site already gone: %v", err)
		}
	})

	t.Run("php site runs PHP", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		site := b.spec("site_php1", "php1.example.com", drivers.SiteTypePHP)
		res, err := b.prov.Provision(ctx, site, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.PHPPool == "" || !exists(res.PHPPool) {
			t.Fatalf("pool %q missing", res.PHPPool)
		}
		_, body := b.eventually(t, site.Domain, func(s int, body string) bool { return s == 200 })
		if !strings.Contains(body, "6 * 7 = 42") || !strings.Contains(body, "PHP "+vpsenv.PHPVersion+".") || strings.Contains(body, "<?") {
			t.Fatalf("page was not run by PHP:\n%s", body)
		}
		if err := b.prov.Deprovision(ctx, site); err != nil {
			t.Fatal(err)
		}
		b.eventually(t, site.Domain, func(s int, _ string) bool { return s == 404 })
		if exists(res.PHPPool) {
			t.Error("pool still exists after Deprovision")
		}
	})

	t.Run("wordpress site: database, backup, restore, remove", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		site := b.spec("site_wp1", "wp1.example.com", drivers.SiteTypeWordPress)
		res, err := b.prov.Provision(ctx, site, nil)
		if err != nil {
			t.Fatal(err)
		}
		user := drivers.SystemUser(site.ID)
		envPath := filepath.Join(v.StateDir, site.ID, "db.env")
		fi, err := os.Stat(envPath)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("db.env mode %v, want 0600", fi.Mode().Perm())
		}
		password := readEnv(t, envPath)["DB_PASSWORD"]
		if len(password) != 64 {
			t.Fatalf("password of %d characters, want 64", len(password))
		}
		if err := v.LoginAs(ctx, user, password, user); err != nil {
			t.Fatal(err)
		}
		// Provisioning again keeps the password (and the login).
		if _, err := b.prov.Provision(ctx, site, nil); err != nil {
			t.Fatal(err)
		}
		if again := readEnv(t, envPath)["DB_PASSWORD"]; again != password {
			t.Error("second Provision changed the database password")
		}
		if err := v.LoginAs(ctx, user, password, user); err != nil {
			t.Fatal(err)
		}

		// Content to back up: a file and a row.
		index := filepath.Join(res.DocumentRoot, "index.php")
		original, err := os.ReadFile(index)
		if err != nil {
			t.Fatal(err)
		}
		sql(t, v, "CREATE TABLE `"+user+"`.marks (v INT); INSERT INTO `"+user+"`.marks VALUES (1)")

		var archive bytes.Buffer
		if err := b.prov.Archive(ctx, site, drivers.BackupFull, &archive); err != nil {
			t.Fatal(err)
		}
		names, dump := tarNames(t, archive.Bytes())
		for _, want := range []string{"files/index.php", "database.sql"} {
			if !slices.Contains(names, want) {
				t.Errorf("archive lacks %s; holds %v", want, names)
			}
		}
		if !strings.Contains(dump, "INSERT INTO `marks` VALUES") {
			t.Errorf("database.sql lacks the marks row:\n%.2000s", dump)
		}

		change := func(content string) {
			t.Helper()
			if err := os.WriteFile(index, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			sql(t, v, "INSERT INTO `"+user+"`.marks VALUES (2)")
		}
		change("<?php echo 'defaced';")
		sql(t, v, "CREATE TABLE `"+user+"`.added_later (v INT)")
		if err := b.prov.Restore(ctx, site, drivers.BackupFull, bytes.NewReader(archive.Bytes())); err != nil {
			t.Fatal(err)
		}
		// The restored document root keeps the layout's mode: no other
		// tenant's user may read it.
		if fi, err := os.Stat(res.DocumentRoot); err != nil || fi.Mode().Perm() != 0o750 {
			t.Errorf("document root after restore: %v, %v; want mode 0750", fi, err)
		}
		tables := func() string {
			t.Helper()
			return strings.TrimSpace(sql(t, v, "SELECT GROUP_CONCAT(table_name ORDER BY table_name) FROM information_schema.tables WHERE table_schema = '"+user+"'"))
		}
		if got := tables(); got != "marks" {
			t.Errorf("tables after restore = %q, want only the backed-up marks (not added_later)", got)
		}
		if err := v.LoginAs(ctx, user, password, user); err != nil {
			t.Errorf("the site's database login after restore: %v", err)
		}
		if got := sql(t, v, "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE '%chom_restore%'"); strings.TrimSpace(got) != "0" {
			t.Error("the restore left its scratch database behind")
		}
		if got, _ := os.ReadFile(index); !bytes.Equal(got, original) {
			t.Errorf("index.php after restore:\n%s\nwant:\n%s", got, original)
		}
		if got := sql(t, v, "SELECT GROUP_CONCAT(v) FROM `"+user+"`.marks"); strings.TrimSpace(got) != "1" {
			t.Errorf("marks after restore = %q, want 1", got)
		}
		_, body := b.eventually(t, site.Domain, func(s int, _ string) bool { return s == 200 })
		if !strings.Contains(body, "6 * 7 = 42") {
			t.Errorf("restored site does not run:\n%s", body)
		}

		// A checksum mismatch, detected at EOF, changes nothing.
		change("<?php echo 'changed after backup';")
		sum := sha256.Sum256([]byte("something else"))
		r := drivers.VerifyReader(bytes.NewReader(archive.Bytes()), int64(archive.Len()), hex.EncodeToString(sum[:]))
		err = b.prov.Restore(ctx, site, drivers.BackupFull, r)
		if !errors.Is(err, drivers.ErrCorruptArchive) {
			t.Fatalf("restore with a bad checksum: %v, want ErrCorruptArchive", err)
		}
		if got, _ := os.ReadFile(index); string(got) != "<?php echo 'changed after backup';" {
			t.Errorf("a failed restore changed index.php to:\n%s", got)
		}
		if got := sql(t, v, "SELECT GROUP_CONCAT(v ORDER BY v) FROM `"+user+"`.marks"); strings.TrimSpace(got) != "1,2" {
			t.Errorf("a failed restore changed the database: marks = %q, want 1,2", got)
		}
		if exists(filepath.Join(v.StateDir, site.ID, "restore")) || exists(filepath.Join(v.WebRoot, site.Domain, ".chom-restore")) {
			t.Error("a failed restore left its staging behind")
		}

		// A dump that does not import changes neither the database nor the files.
		broken := tarGz(t, map[string]string{"files/index.php": "<?php echo 'from a broken backup';",
			"database.sql": "CREATE TABLE from_broken (v INT);\nTHIS IS NOT SQL;\n"})
		err = b.prov.Restore(ctx, site, drivers.BackupFull, bytes.NewReader(broken))
		if !errors.Is(err, drivers.ErrCorruptArchive) || !strings.Contains(err.Error(), "does not import") {
			t.Fatalf("restore of a dump that does not import: %v", err)
		}
		if got, _ := os.ReadFile(index); string(got) != "<?php echo 'changed after backup';" {
			t.Errorf("a restore with a broken dump changed index.php to:\n%s", got)
		}
		if got := tables(); got != "marks" {
			t.Errorf("tables after a broken restore = %q, want marks", got)
		}
		if got := sql(t, v, "SELECT GROUP_CONCAT(v ORDER BY v) FROM `"+user+"`.marks"); strings.TrimSpace(got) != "1,2" {
			t.Errorf("a broken restore changed the database: marks = %q, want 1,2", got)
		}
		if got := sql(t, v, "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE '%chom_restore%'"); strings.TrimSpace(got) != "0" {
			t.Error("a broken restore left its scratch database behind")
		}

		if err := b.prov.Deprovision(ctx, site); err != nil {
			t.Fatal(err)
		}
		b.eventually(t, site.Domain, func(s int, _ string) bool { return s == 404 })
		if got := sql(t, v, "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '"+user+"'"); strings.TrimSpace(got) != "0" {
			t.Error("database still exists after Deprovision")
		}
		if got := sql(t, v, "SELECT COUNT(*) FROM mysql.user WHERE user = '"+user+"'"); strings.TrimSpace(got) != "0" {
			t.Error("database user still exists after Deprovision")
		}
		if err := v.LoginAs(ctx, user, password, ""); err == nil {
			t.Error("the site's database login still works after Deprovision")
		}
		if userExists(user) || exists(envPath) {
			t.Error("system user or db.env still exists after Deprovision")
		}
	})

	t.Run("html site: an interrupted restore is repaired", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		site := b.spec("site_intr1", "intr1.example.com", drivers.SiteTypeHTML)
		if _, err := b.prov.Provision(ctx, site, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.prov.Deprovision(context.WithoutCancel(ctx), site) })
		root := filepath.Join(v.WebRoot, site.Domain)
		if err := os.WriteFile(filepath.Join(root, "public", "mine.txt"), []byte("live"), 0o644); err != nil {
			t.Fatal(err)
		}
		// Killed between the renames: no public/, the live tree as .chom-old.
		if err := os.Rename(filepath.Join(root, "public"), filepath.Join(root, ".chom-old")); err != nil {
			t.Fatal(err)
		}
		if err := b.prov.Restore(ctx, site, drivers.BackupFiles, strings.NewReader("not an archive")); err == nil {
			t.Fatal("restore of garbage succeeded")
		}
		if got, err := os.ReadFile(filepath.Join(root, "public", "mine.txt")); err != nil || string(got) != "live" {
			t.Errorf("public/mine.txt after the failed retry: %q, %v; want the live tree put back", got, err)
		}
		if exists(filepath.Join(root, ".chom-old")) {
			t.Error(".chom-old is still there")
		}
	})

	t.Run("html site: disk and bandwidth metered on the server", func(t *testing.T) {
		t.Parallel()
		testMetering(t, b)
	})

	t.Run("tls: challenge, deploy, replace under load, reject, remove", func(t *testing.T) {
		t.Parallel()
		testTLS(t, b)
	})

	t.Run("changed host key refused", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		other, _ := genKey(t)
		site := b.spec("site_hk1", "hk1.example.com", drivers.SiteTypeHTML)
		site.Server.HostKey = authorized(other.PublicKey())
		_, err := b.prov.Provision(ctx, site, nil)
		if !errors.Is(err, drivers.ErrHostKeyMismatch) {
			t.Fatalf("Provision with another pinned key: %v, want ErrHostKeyMismatch", err)
		}
		if errors.Is(err, drivers.ErrUnreachable) {
			t.Error("a host key mismatch must not look like an unreachable server (it would be retried)")
		}
		for _, err := range []error{
			b.prov.Deprovision(ctx, site),
			b.prov.Archive(ctx, site, drivers.BackupFiles, io.Discard),
			b.prov.Restore(ctx, site, drivers.BackupFiles, strings.NewReader("x")),
			func() error { _, err := b.prov.DiskBytes(ctx, site); return err }(),
			func() error {
				_, err := b.prov.Bandwidth(ctx, site, time.Now().Add(-time.Hour), time.Now())
				return err
			}(),
			b.prov.PutChallenge(ctx, site, tokenA, keyAuthA),
			b.prov.RemoveChallenge(ctx, site, tokenA),
			b.prov.RemoveCertificate(ctx, site),
		} {
			if !errors.Is(err, drivers.ErrHostKeyMismatch) {
				t.Errorf("got %v, want ErrHostKeyMismatch", err)
			}
		}
		if exists(filepath.Join(v.WebRoot, site.Domain)) || userExists(drivers.SystemUser(site.ID)) {
			t.Error("something was created on a server with the wrong host key")
		}
	})

	t.Run("rejected nginx config is rolled back", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		failing := newProvisioner(t, v, func(l *ssh.Layout) { l.NginxCheck = []string{"sh", "-c", "echo 'emerg: test says no' >&2; exit 1"} })
		site := b.spec("site_rej1", "rej1.example.com", drivers.SiteTypeHTML)
		_, err := failing.Provision(ctx, site, nil)
		if !errors.Is(err, drivers.ErrConfigRejected) || !strings.Contains(err.Error(), "test says no") {
			t.Fatalf("Provision with a failing nginx -t: %v, want ErrConfigRejected with the check's output", err)
		}
		for _, p := range []string{filepath.Join(v.NginxAvailable, site.Domain+".conf"), filepath.Join(v.NginxEnabled, site.Domain+".conf")} {
			if exists(p) {
				t.Errorf("%s left behind by a rejected provision", p)
			}
		}
		// Compensation (Deprovision) removes the rest.
		if err := b.prov.Deprovision(ctx, site); err != nil {
			t.Fatal(err)
		}
		if userExists(drivers.SystemUser(site.ID)) {
			t.Error("system user left after Deprovision")
		}
	})
}

func sql(t *testing.T, v *vpsenv.VPS, stmt string) string {
	t.Helper()
	out, err := v.SQL(t.Context(), stmt)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, val, ok := strings.Cut(l, "="); ok {
			m[k] = val
		}
	}
	return m
}

// tarNames lists an ArchiveFormat stream's members and returns database.sql.
func tarNames(t *testing.T, data []byte) ([]string, string) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var (
		names []string
		dump  string
	)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, dump
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, strings.TrimSuffix(h.Name, "/"))
		if h.Name == "database.sql" {
			b, _ := io.ReadAll(tr)
			dump = string(b)
		}
	}
}

// tarGz is a gzip-compressed tar of files (name → content), in name order.
func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	names := slices.Sorted(maps.Keys(files))
	for _, name := range names {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[name])); err != nil {
			t.Fatal(err)
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
