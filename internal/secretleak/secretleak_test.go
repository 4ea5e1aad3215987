package secretleak_test

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
)

var chomBin string

func TestMain(m *testing.M) { testenv.ChomMain(m, "secretleak", false, &chomBin) }

// Test secrets: each is distinctive, so finding one anywhere in an output is
// a leak and never a coincidence.
const (
	redisPassword    = "RedisPw-Leak-7f3a"
	dbPassword       = "DbPw-Leak-91c2"
	dbQueryPassword  = "DbQueryPw-Leak-5d0e"
	publicPassword   = "PublicPw-Leak-2b8f"
	s3Secret         = "S3Secret-Leak-c4e1"
	signingKeyShort  = "SignKey-Leak-0a9"
	sentinelPassword = "SentinelPw-Leak-6e2d"
	// redisRealPassword is the requirepass of the test's own Redis server.
	redisRealPassword = "RedisRealPw-Leak-3c7b"
)

// baseEnv is the environment without any CHOM_ variable.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHOM_") {
			env = append(env, kv)
		}
	}
	return env
}

// run runs chom args with env until it exits (or within) and returns
// everything it wrote.
func run(t *testing.T, within time.Duration, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, chomBin, args...)
	cmd.Env = env
	out, _ := cmd.CombinedOutput()
	return string(out)
}

// The attack: an operator's mistake (a malformed URL, a wrong password, a bad
// setting next to a secret) must not print the secrets of the settings, in
// the start-up error or in a log line, where log shipping and screen shares
// would carry them. Every start-up below has its output searched for every
// test secret; then a good start-up, with the real database's password in its
// URL, serves a few requests and shuts down, and its log is searched too.
func TestNoSecretInStartupOutput(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs the chom binary on real servers; skipped with -short")
	}
	dsn, rdb := testenv.PostgresDSN(t), testenv.Redis(t)
	if chomBin == "" {
		t.Fatal("chom was not built (TestMain)")
	}
	du, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	realDBPassword, _ := du.User.Password()
	private := testenv.StartRedisServer(t, testenv.RedisServerConfig{Password: redisRealPassword})
	secrets := []string{redisRealPassword, redisPassword, dbPassword, dbQueryPassword, publicPassword, s3Secret, signingKeyShort, sentinelPassword}
	if realDBPassword != "" {
		secrets = append(secrets, realDBPassword)
	}
	withPassword := func(raw, user, pw string) string {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(user, pw)
		return u.String()
	}
	badDBAuth := withPassword(dsn, du.User.Username(), dbPassword)
	redisHost := strings.TrimPrefix(rdb.URL, "redis://")
	common := []string{"CHOM_LISTEN=127.0.0.1:0", "CHOM_METRICS_LISTEN=off", "CHOM_LOG_FORMAT=json", "CHOM_LOG_LEVEL=debug",
		"CHOM_S3_SECRET_KEY=" + s3Secret, "CHOM_S3_ACCESS_KEY=access", "CHOM_S3_ENDPOINT=127.0.0.1:1", "CHOM_S3_BUCKET=b"}
	cases := []struct {
		name string
		args []string
		env  []string
		// runs is set for the start-ups that do not fail (a wrong password is
		// found on first use): they run this long, retrying and logging.
		runs time.Duration
	}{
		{"malformed redis URL", []string{"ingress"}, []string{"CHOM_DATABASE_URL=" + dsn,
			"CHOM_REDIS_URL=redis://:" + redisPassword + "@127.0.0.1:notaport/0"}, 0},
		{"redis URL with a control character", []string{"scheduler"}, []string{
			"CHOM_REDIS_URL=redis://:" + redisPassword + "@127.0.0.1:6379/0\x7f"}, 0},
		{"unsupported redis scheme", []string{"ingress"}, []string{"CHOM_DATABASE_URL=" + dsn,
			"CHOM_REDIS_URL=rediss+tls://:" + redisPassword + "@" + redisHost}, 0},
		{"redis sentinel URL", []string{"ingress"}, []string{"CHOM_DATABASE_URL=" + dsn,
			"CHOM_REDIS_URL=redis-sentinel://:" + redisPassword + "@127.0.0.1:1,127.0.0.1:2?master=m&sentinel_password=" + sentinelPassword}, 6 * time.Second},
		{"redis cluster URL, no node answers", []string{"ingress"}, []string{"CHOM_DATABASE_URL=" + dsn,
			"CHOM_REDIS_URL=redis-cluster://:" + redisPassword + "@127.0.0.1:1,127.0.0.1:2"}, 6 * time.Second},
		{"malformed redis cluster URL", []string{"ingress"}, []string{"CHOM_DATABASE_URL=" + dsn,
			"CHOM_REDIS_URL=redis-cluster://:" + redisPassword + "@127.0.0.1:1/3?password=" + sentinelPassword}, 0},
		// The server answers WRONGPASS on every connection; the worker keeps
		// retrying (and logging) until it is stopped.
		{"wrong redis password", []string{"worker"}, []string{"CHOM_DATABASE_URL=" + dsn, "CHOM_LOCAL_ROOT=" + t.TempDir(),
			"CHOM_REDIS_URL=redis://:" + redisPassword + "@" + private.Addr + "/0"}, 6 * time.Second},
		{"malformed database URL", []string{"ingress"}, []string{"CHOM_REDIS_URL=" + rdb.URL,
			"CHOM_DATABASE_URL=postgres://chom:" + dbPassword + "@127.0.0.1:notaport/chom"}, 0},
		{"database URL with a bad scheme", []string{"migrate", "up"}, []string{
			"CHOM_DATABASE_URL=mysql://chom:" + dbPassword + "@127.0.0.1/chom"}, 0},
		// A test server that trusts local connections ignores the password.
		{"another database password", []string{"migrate", "up"}, []string{"CHOM_DATABASE_URL=" + badDBAuth}, 0},
		{"database password as a query parameter", []string{"migrate", "up"}, []string{
			"CHOM_DATABASE_URL=postgres://chom@127.0.0.1:1/chom?password=" + dbQueryPassword + "&connect_timeout=2"}, 0},
		{"public URL with user info", []string{"ingress"}, []string{"CHOM_DATABASE_URL=" + dsn, "CHOM_REDIS_URL=" + rdb.URL,
			"CHOM_PUBLIC_URL=https://admin:" + publicPassword + "@api.example.com"}, 0},
		{"short signing key, s3 store", []string{"ingress"}, []string{"CHOM_DATABASE_URL=" + dsn, "CHOM_REDIS_URL=" + rdb.URL,
			"CHOM_BACKUP_SIGNING_KEY=" + signingKeyShort, "CHOM_BACKUP_STORE=s3", "CHOM_RATE_LIMIT=-1"}, 0},
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, tc := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			within := 30 * time.Second
			if tc.runs > 0 {
				within = tc.runs
			}
			out := run(t, within, append(append(baseEnv(), common...), tc.env...), tc.args...)
			mu.Lock()
			defer mu.Unlock()
			t.Logf("%s: chom %s said:\n%s", tc.name, strings.Join(tc.args, " "), out)
			if tc.runs == 0 && strings.TrimSpace(out) == "" {
				// A case that fails at start-up must say why, or it tested nothing.
				t.Errorf("%s: no output at all; want the start-up error", tc.name)
			}
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("%s: the output of chom %s contains the secret %q", tc.name, strings.Join(tc.args, " "), s)
				}
			}
		}()
	}
	wg.Wait()

	// A good start-up, with the real database and Redis passwords in their
	// URLs, serving requests (a bad token, the ops UI's challenge, the health
	// report that pings both) until it is stopped.
	env := append(baseEnv(), "CHOM_DATABASE_URL="+dsn, "CHOM_REDIS_URL="+private.URL, "CHOM_LISTEN=127.0.0.1:0",
		"CHOM_LOG_FORMAT=json", "CHOM_LOG_LEVEL=debug", "CHOM_S3_SECRET_KEY="+s3Secret)
	if out := run(t, 30*time.Second, env, "migrate", "up"); strings.Contains(out, realDBPassword) && realDBPassword != "" {
		t.Errorf("chom migrate up printed the database password:\n%s", out)
	}
	cmd := exec.CommandContext(t.Context(), chomBin, "ingress")
	cmd.Env = env
	var log bytes.Buffer
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	addr := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			log.WriteString(line + "\n")
			if i := strings.Index(line, `"msg":"ingress listening"`); i >= 0 {
				if j := strings.Index(line, `"addr":"`); j >= 0 {
					a := line[j+len(`"addr":"`):]
					addr <- a[:strings.IndexByte(a, '"')]
				}
			}
		}
	}()
	select {
	case a := <-addr:
		for _, path := range []string{"/api/v1/sites", "/ops/queues", "/api/v1/health/detailed"} {
			req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+a+path, nil)
			req.Header.Set("Authorization", "Bearer chom_"+strings.Repeat("a", 52))
			if res, err := http.DefaultClient.Do(req); err == nil {
				res.Body.Close()
			}
		}
	case <-done:
		t.Fatalf("chom ingress exited before listening:\n%s", log.String())
	case <-time.After(30 * time.Second):
		t.Fatal("chom ingress did not listen within 30s")
	}
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	<-done
	out := log.String()
	if !strings.Contains(out, "ingress listening") {
		t.Fatalf("the good start-up's log:\n%s", out)
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the good start-up's log contains the secret %q:\n%s", s, out)
		}
	}
}
