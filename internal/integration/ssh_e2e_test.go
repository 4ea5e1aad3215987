package integration

import (
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/ssh"
	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/internal/vpsenv"
	"github.com/chomhq/chom/jobs"
	"github.com/chomhq/chom/models"
)

// page GETs / from v's nginx with Host host until check passes (nginx and
// php-fpm reload asynchronously, and PHP's opcache revalidates a changed file
// only every few seconds) or 15s pass, and returns the body.
func page(t *testing.T, v *vpsenv.VPS, host, want string, check func(status int, body string) bool) string {
	t.Helper()
	var (
		status int
		body   string
		err    error
	)
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, body, err = v.Get(t.Context(), host, "/")
		if err == nil && check(status, body) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET Host %s: want %s; got status %d, error %v, body:\n%s", host, want, status, err, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The whole path on real servers: the API, PostgreSQL, Redis and the worker
// drive the SSH driver against sshd, nginx and php-fpm on loopback (the
// "server" is this machine). An html and a php site are provisioned and served
// by nginx under their Host headers; their usage is metered over SSH; the php
// site is backed up, changed,
// restored to its original page; both are deleted and nginx answers 404.
func TestSSHEndToEnd(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts sshd, nginx, php-fpm and MariaDB")
	}
	start := time.Now()
	step := func(name string, since time.Time) {
		t.Helper()
		t.Logf("step %-20s %v", name, time.Since(since).Round(time.Millisecond))
	}

	v := vpsenv.Start(t)
	step("vpsenv.Start", start)
	prov, err := ssh.NewProvisioner(ssh.Config{
		Signer: v.Client, User: v.User, DialTimeout: 5 * time.Second, StepTimeout: 30 * time.Second,
		Layout: v.SSHLayout(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prov.Close() })
	t0 := time.Now()
	// The meter's clock is ahead, so it meters the period around now.
	s := newStack(t, testenv.Postgres(t), stackOpts{remote: &remoteDriver{driver: prov, sshPort: v.SSHPort, hostKey: v.HostKey},
		meterNow: func() time.Time { return time.Now().Add(3 * time.Hour) }})
	s.needBackups()
	step("newStack", t0)

	// wait fails the test unless operation id succeeds.
	wait := func(what, id string) {
		t.Helper()
		if done := s.waitOp(s.tokenA, id); done.Status != models.OpSucceeded {
			t.Fatalf("%s: operation %s %s: %+v", what, id, done.Status, done.Error)
		}
	}

	const htmlHost, phpHost = "ssh-html.example.com", "ssh-php.example.com"
	t0 = time.Now()
	htmlOp := s.createSite(s.tokenA, htmlHost, "html")
	// vpsenv runs Debian 12's PHP, not the API's default version.
	phpOp := accepted(t, s.do("POST", "/api/v1/sites", s.tokenA,
		map[string]string{"domain": phpHost, "site_type": "php", "php_version": vpsenv.PHPVersion}))
	wait("provision html", htmlOp.ID)
	wait("provision php", phpOp.ID)
	step("provision html+php", t0)

	t0 = time.Now()
	page(t, v, htmlHost, "the html starter page", func(st int, body string) bool {
		return st == http.StatusOK && strings.Contains(body, "<h1>"+htmlHost+"</h1>") && !strings.Contains(body, "PHP")
	})
	isStarter := func(st int, body string) bool {
		return st == http.StatusOK && strings.Contains(body, "<h1>"+phpHost+"</h1>") &&
			strings.Contains(body, "PHP "+vpsenv.PHPVersion+".") && strings.Contains(body, "6 * 7 = 42") && !strings.Contains(body, "<?")
	}
	original := page(t, v, phpHost, "the PHP-rendered starter page", isStarter)
	step("GET both pages", t0)

	t0 = time.Now()
	meterOverSSH(t, s, v, map[string]string{htmlOp.TargetID: htmlHost, phpOp.TargetID: phpHost}, start)
	step("meter usage", t0)

	// The site's rows point at the vpsenv: the API shows it active on the stack's server.
	var site models.Site
	s.do("GET", "/api/v1/sites/"+phpOp.TargetID, s.tokenA, nil).json(t, &site)
	if site.Status != models.SiteStatusActive || site.PHPVersion != vpsenv.PHPVersion || site.VPSID == nil || *site.VPSID != s.vpsID ||
		site.DocumentRoot != filepath.Join(v.WebRoot, phpHost, "public") {
		t.Fatalf("php site %+v", site)
	}

	t0 = time.Now()
	bop := accepted(t, s.do("POST", "/api/v1/sites/"+phpOp.TargetID+"/backups", s.tokenA, map[string]string{"type": "files"}))
	wait("backup", bop.ID)
	if bk := s.backup(t, s.tokenA, bop.TargetID); bk.Status != models.BackupStatusCompleted || bk.SizeBytes <= 0 {
		t.Fatalf("backup %+v", bk)
	}
	step("backup (files)", t0)

	// Change the index file on the "server" (this machine), under the layout's web root.
	t0 = time.Now()
	index := filepath.Join(site.DocumentRoot, "index.php")
	if _, err := os.Stat(index); err != nil {
		t.Fatalf("index file of the php site: %v", err)
	}
	if err := os.WriteFile(index, []byte("<?php echo 'changed after backup: ', 6 * 7;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	page(t, v, phpHost, "the changed page", func(st int, body string) bool {
		return st == http.StatusOK && body == "changed after backup: 42"
	})
	step("change index.php", t0)

	t0 = time.Now()
	rop := accepted(t, s.do("POST", "/api/v1/backups/"+bop.TargetID+"/restore", s.tokenA, nil))
	wait("restore", rop.ID)
	restored := page(t, v, phpHost, "the original page after restore", isStarter)
	if restored != original {
		t.Fatalf("page after restore:\n%s\nwant the original:\n%s", restored, original)
	}
	step("restore", t0)

	t0 = time.Now()
	var dels []ingress.OperationView
	for _, id := range []string{htmlOp.TargetID, phpOp.TargetID} {
		dels = append(dels, accepted(t, s.do("DELETE", "/api/v1/sites/"+id, s.tokenA, nil)))
	}
	for _, op := range dels {
		wait("deprovision", op.ID)
	}
	for _, host := range []string{htmlHost, phpHost} {
		page(t, v, host, "404 after deprovision", func(st int, _ string) bool { return st == http.StatusNotFound })
		if _, err := os.Lstat(filepath.Join(v.WebRoot, host)); !os.IsNotExist(err) {
			t.Errorf("site root of %s after deprovision: %v, want it gone", host, err)
		}
	}
	step("deprovision both", t0)
	step("total", start)
}

// meterOverSSH meters tenant A's period around now through the SSH driver and
// checks each site's records against the server's own files (the "server" is
// this machine): disk_bytes is the size of the document root's files, and
// bandwidth_bytes what drivers.ScanAccessLog sums from the site's access.log
// read here directly, which holds the pages just served (so it is not zero).
func meterOverSSH(t *testing.T, s *stack, v *vpsenv.VPS, hosts map[string]string, since time.Time) {
	t.Helper()
	ctx := t.Context()
	for _, host := range hosts {
		v.WaitAccessLog(t, host, 1) // the pages just served
	}
	periodStart := since.Add(-time.Hour).UTC().Truncate(time.Second)
	periodEnd := periodStart.Add(2 * time.Hour)
	rep, err := s.meter.Meter(ctx, s.tenantA, periodStart, periodEnd)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, r := range rep.Inserted {
		got[r.Metric+"/"+r.SiteID] = r.Quantity
	}
	if got[jobs.MetricActiveSites+"/"] != int64(len(hosts)) {
		t.Errorf("active sites %d, want %d (records %v)", got[jobs.MetricActiveSites+"/"], len(hosts), got)
	}
	for id, host := range hosts {
		var disk int64
		err := filepath.WalkDir(filepath.Join(v.WebRoot, host, "public"), func(_ string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			info, err := d.Info()
			disk += info.Size()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(filepath.Join(v.LogDir, host, "access.log"))
		if err != nil {
			t.Fatal(err)
		}
		bw, err := drivers.ScanAccessLog(ctx, f, periodStart, periodEnd)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if bw.Bytes == 0 {
			t.Fatalf("%s: access.log holds no bytes served, so the comparison proves nothing", host)
		}
		if q := got[jobs.MetricDiskBytes+"/"+id]; q != disk {
			t.Errorf("%s: disk_bytes %d, want %d (the files under its document root)", host, q, disk)
		}
		if q := got[jobs.MetricBandwidthBytes+"/"+id]; q != bw.Bytes {
			t.Errorf("%s: bandwidth_bytes %d, want %d (its access.log, read on the server)", host, q, bw.Bytes)
		}
	}
	t.Logf("metered over SSH: %v", got)
}
