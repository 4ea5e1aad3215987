package ssh_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chomhq/chom/drivers"
)

// attackPHP is tenant A's code: each attack in turn, one "name<TAB>result"
// line each. A result is "refused…" when PHP said no (false, or an Error such
// as a call to a disabled function), "GOT:…" when the attack worked. The
// last two lines are things A's own site must still do (own-…).
const attackPHP = `<?php
header('Content-Type: text/plain');
$B = %[1]q; $TARGET = %[2]q; $LOGS = %[3]q;
function attempt($name, $f) {
	try { $v = $f(); } catch (\Throwable $e) { echo "$name\trefused: ", $e->getMessage(), "\n"; return; }
	if ($v === false || $v === null) { echo "$name\trefused\n"; return; }
	if (is_resource($v)) { $v = 'a ' . get_resource_type($v) . ' resource'; }
	echo "$name\tGOT:", str_replace("\n", " ", is_string($v) ? $v : var_export($v, true)), "\n";
}
attempt('read B wp-config.php', fn() => @file_get_contents("$B/wp-config.php"));
attempt('list B document root', fn() => @scandir($B));
attempt('write into B tree', fn() => @file_put_contents("$B/pwned.php", '<?php echo 1;'));
attempt('append to a root-only file', fn() => @file_put_contents($TARGET, "pwned\n", FILE_APPEND));
attempt('write shared /tmp', fn() => @file_put_contents('/tmp/chom-attack-pwned', 'x'));
attempt('read /etc/shadow', fn() => @file_get_contents('/etc/shadow'));
attempt('exec', fn() => exec('id'));
attempt('system', fn() => system('id'));
attempt('shell_exec', fn() => shell_exec('id'));
attempt('passthru', fn() => passthru('id'));
attempt('proc_open', fn() => proc_open('id', [['pipe', 'r'], ['pipe', 'w'], ['pipe', 'w']], $pipes));
attempt('popen', fn() => popen('id', 'r'));
attempt('pcntl_exec', fn() => pcntl_exec('/usr/bin/id'));
attempt('putenv LD_PRELOAD (mail bypass)', fn() => putenv('LD_PRELOAD=/tmp/evil.so'));
attempt('widen open_basedir', fn() => ini_set('open_basedir', '/'));
attempt('replace access.log with a link', fn() => @symlink($TARGET, "$LOGS/access.log"));
attempt('delete access.log', fn() => @unlink("$LOGS/access.log"));
attempt('own-tmp', fn() => @file_put_contents(sys_get_temp_dir() . '/own', 'ok') === 2 ? 'ok in ' . sys_get_temp_dir() : false);
attempt('own-session', fn() => @session_start() ? 'ok in ' . session_save_path() : false);
`

// describe is a file's mode, or the error of its lstat.
func describe(fi os.FileInfo, err error) string {
	if err != nil {
		return err.Error()
	}
	return fi.Mode().String()
}

// phpAttacks are the names attackPHP prints, in order.
var phpAttacks = []string{
	"read B wp-config.php", "list B document root", "write into B tree", "append to a root-only file",
	"write shared /tmp", "read /etc/shadow", "exec", "system", "shell_exec", "passthru", "proc_open", "popen",
	"pcntl_exec", "putenv LD_PRELOAD (mail bypass)", "widen open_basedir", "replace access.log with a link",
	"delete access.log", "own-tmp", "own-session",
}

// testAttackSuite puts two tenants' PHP sites on one server (real
// sshd, nginx, php-fpm) and has tenant A's code, requested through nginx, try
// everything a hostile tenant would: read B's files, follow a link into B's
// tree through nginx, write outside its root, run commands, read
// /etc/shadow, replace its logs with links and get a reload. Every attempt
// must fail, A's own site must still work, and the SHA-256 of every file the
// attacks aimed at is the same afterwards. The list of attacks and what each
// proved is logged, so it is in CI's output.
func testAttackSuite(t *testing.T, b *realBundle) {
	ctx := t.Context()
	v := b.vps
	siteA := b.spec("site_atka", "a.attack.example", drivers.SiteTypePHP)
	siteB := b.spec("site_atkb", "b.attack.example", drivers.SiteTypePHP)
	siteB.TenantID = "ten_2"
	for _, s := range []drivers.SiteSpec{siteA, siteB} {
		if _, err := b.prov.Provision(ctx, s, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.prov.Deprovision(context.WithoutCancel(ctx), s) })
	}
	userA, userB := drivers.SystemUser(siteA.ID), drivers.SystemUser(siteB.ID)
	docA := filepath.Join(v.WebRoot, siteA.Domain, "public")
	docB := filepath.Join(v.WebRoot, siteB.Domain, "public")
	logsA := filepath.Join(v.LogDir, siteA.Domain)
	const password = "b-db-password-5f3c9e"

	// B's secrets, as B (its own files, the usual 0644).
	for name, content := range map[string]string{
		"wp-config.php": "<?php define('DB_PASSWORD', '" + password + "');\n",
		"notes.txt":     "DB_PASSWORD=" + password + "\n",
	} {
		p := filepath.Join(docB, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("chown", userB+":"+userB, p).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v: %s", err, out)
		}
	}
	target := attackTarget(t)
	// The files the attacks aim to change. /etc/shadow is only read: other
	// tests (and useradd) change it meanwhile, so its hash proves nothing.
	watched := []string{filepath.Join(docB, "wp-config.php"), filepath.Join(docB, "notes.txt"), target}
	before := map[string]string{}
	for _, p := range watched {
		before[p] = fileHash(t, p)
	}
	entriesB := func() string {
		out, _ := exec.Command("find", "-P", filepath.Join(v.WebRoot, siteB.Domain), "-printf", "%P %y %U %m\n").Output()
		return string(out)
	}
	treeB := entriesB()

	type result struct{ attack, proof string }
	var results []result
	fail := func(format string, args ...any) { t.Errorf(format, args...) }

	// A's code, uploaded by A.
	script := filepath.Join(docA, "attack.php")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(attackPHP, docB, target, logsA)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", userA+":"+userA, script).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	b.eventually(t, siteA.Domain, func(s int, _ string) bool { return s == 200 })
	status, body, err := v.Get(ctx, siteA.Domain, "/attack.php")
	if err != nil || status != 200 {
		t.Fatalf("GET /attack.php: %d %v\n%s", status, err, body)
	}
	// What system() and passthru() would print goes between the lines: only
	// "name<TAB>result" lines count, and every attack must have one.
	got := map[string]string{}
	for _, line := range strings.Split(body, "\n") {
		if name, res, ok := strings.Cut(line, "\t"); ok {
			got[name] = res
		}
	}
	for _, name := range phpAttacks {
		res, ok := got[name]
		own := strings.HasPrefix(name, "own-")
		switch {
		case !ok:
			fail("attack.php printed no result for %q:\n%s", name, body)
		case own && !strings.HasPrefix(res, "GOT:ok in "+filepath.Join(v.WebRoot, siteA.Domain)+"/"):
			fail("A's own site: %s: %s; want it to work inside A's root", name, res)
		case !own && !strings.HasPrefix(res, "refused"):
			fail("attack %q from A's PHP worked: %s", name, res)
		case own:
			results = append(results, result{"PHP " + name, "works inside A's root: " + strings.TrimPrefix(res, "GOT:")})
		default:
			results = append(results, result{"PHP " + name, res})
		}
	}
	if strings.Contains(body, password) || strings.Contains(body, "root:") {
		fail("attack.php's output holds B's password or /etc/shadow:\n%s", body)
	}

	// The operating system's answer, below PHP: A's user itself (as code that
	// escaped PHP would run) cannot read B's tree or A's logs' directory.
	for _, c := range []struct {
		attack string
		argv   []string
	}{
		{"A's user reads B's wp-config.php", []string{"cat", filepath.Join(docB, "wp-config.php")}},
		{"A's user lists B's document root", []string{"ls", docB}},
		{"A's user replaces its access.log with a link", []string{"ln", "-sfn", target, filepath.Join(logsA, "access.log")}},
		{"A's user reads /etc/shadow", []string{"cat", "/etc/shadow"}},
	} {
		out, err := asUser(userA, c.argv...)
		if err == nil || !strings.Contains(out, "ermission denied") {
			fail("%s: %v: %s; want permission denied", c.attack, err, out)
			continue
		}
		results = append(results, result{c.attack, "permission denied"})
	}

	// Links into B's tree, served by nginx (whose workers may read B's
	// document root): disable_symlinks if_not_owner refuses them.
	for link, dest := range map[string]string{"steal.txt": filepath.Join(docB, "notes.txt"), "bdir": docB} {
		if out, err := asUser(userA, "ln", "-s", dest, filepath.Join(docA, link)); err != nil {
			t.Fatalf("A creates a link in its own tree: %v: %s", err, out)
		}
	}
	for _, p := range []string{"/steal.txt", "/bdir/notes.txt", "/bdir/wp-config.php"} {
		status, body, err := v.Get(ctx, siteA.Domain, p)
		if err != nil {
			t.Fatal(err)
		}
		if status == 200 || strings.Contains(body, password) {
			fail("nginx served %s of A (a link into B's tree): %d\n%s", p, status, body)
			continue
		}
		results = append(results, result{"nginx follows A's link " + p + " into B's tree", fmt.Sprintf("refused with %d", status)})
	}

	// A gets nginx reloaded (as creating or deleting one of its sites does)
	// and sends requests: nothing it aimed at may have changed.
	reloadNginx(t, v)
	requestUntil(t, v, siteA.Domain, "/after-reload", 2*time.Second, func() bool { return false })
	for _, p := range watched {
		if got := fileHash(t, p); got != before[p] {
			fail("%s changed: sha256 %s → %s", p, before[p], got)
		}
	}
	if got := entriesB(); got != treeB {
		fail("B's tree changed:\nbefore:\n%s\nafter:\n%s", treeB, got)
	}
	if _, err := os.Lstat("/tmp/chom-attack-pwned"); err == nil {
		fail("A wrote /tmp/chom-attack-pwned")
		_ = os.Remove("/tmp/chom-attack-pwned")
	}
	if fi, err := os.Lstat(filepath.Join(logsA, "access.log")); err != nil || fi.Mode()&os.ModeSymlink != 0 {
		fail("A's access.log after the attacks: %v; want nginx's regular file", describe(fi, err))
	}
	results = append(results, result{"after a reload and requests", fmt.Sprintf("sha256 unchanged of %d targeted files; B's tree the same", len(watched))})

	// The layout behind these answers.
	for _, c := range []struct {
		path string
		uid  string
		mode os.FileMode
	}{{docB, userB, 0o750}, {logsA, "root", 0o750}, {filepath.Join(v.WebRoot, siteA.Domain, "sessions"), userA, 0o700}} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		owner := "root"
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 {
			out, _ := exec.Command("id", "-nu", fmt.Sprint(uid)).Output()
			owner = strings.TrimSpace(string(out))
		}
		if owner != c.uid || fi.Mode().Perm() != c.mode {
			fail("%s: owner %s mode %v, want %s %v", c.path, owner, fi.Mode().Perm(), c.uid, c.mode)
		}
	}

	t.Logf("attack suite: tenant A (%s) against tenant B (%s) on one server, %d attacks:", siteA.Domain, siteB.Domain, len(results))
	for _, r := range results {
		t.Logf("  %-55s → %s", r.attack, r.proof)
	}
}
