package stack

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chomhq/chom/events"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md from the settings table")

// docs/configuration.md is generated from the settings table; it cannot drift.
func TestConfigurationDoc(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "configuration.md")
	want := ConfigurationMarkdown()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s is not what the settings table generates; run `go tool task docs:config`", path)
	}
	for _, s := range Settings() {
		if !strings.Contains(string(got), "| `"+s.Env+"` |") {
			t.Errorf("%s lacks %s", path, s.Env)
		}
	}
}

// Every setting has a unique CHOM_ name, a doc, a role, and a default that
// its own parser accepts; LoadConfig of an empty environment is valid.
func TestSettingsTable(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, s := range Settings() {
		if !strings.HasPrefix(s.Env, "CHOM_") || seen[s.Env] || s.Doc == "" || s.Roles == 0 || s.set == nil {
			t.Errorf("setting %+v: want a unique CHOM_ name, a doc, roles and a parser", s.Env)
		}
		seen[s.Env] = true
		var c Config
		if err := s.set(&c, s.Default); err != nil && s.Default != "" {
			t.Errorf("%s: its default %q does not parse: %v", s.Env, s.Default, err)
		}
	}
	if _, err := LoadConfig(func(string) string { return "" }); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

// A bad environment is reported whole: one error naming every bad variable.
func TestLoadConfigReportsEveryProblem(t *testing.T) {
	t.Parallel()
	bad := map[string]string{
		"CHOM_WORKER_CONCURRENCY": "many", "CHOM_RETRY_BASE": "soon", "CHOM_OPS_UI": "perhaps",
		"CHOM_LOG_LEVEL": "loud", "CHOM_DRIVER": "ftp", "CHOM_RATE_LIMIT": "-1", "CHOM_PUBLIC_URL": "api.example.com",
		"CHOM_KAFKA_TOPIC_PREFIX": "bad prefix!", "CHOM_BACKUP_SIGNING_KEY": "short",
		"CHOM_DATABASE_READ_URL": "sqlite:///replica.db",
	}
	_, err := LoadConfig(func(k string) string { return bad[k] })
	if err == nil {
		t.Fatal("accepted")
	}
	for name := range bad {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("the error does not name %s:\n%v", name, err)
		}
	}
}

// chom dev's defaults: embedded parts, paths under the data directory, text
// logs, one replica, and a one-minute usage period so /usage fills within
// minutes; a variable that is set still wins.
func TestLoadDevConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, err := LoadDevConfig(func(string) string { return "" }, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{DatabaseURL: "sqlite://" + dir + "/chom.db", LocalRoot: dir + "/vps", BackupDir: dir + "/backups",
		Listen: "127.0.0.1:8080", LogFormat: "text", KafkaReplication: 1, MeteringEvery: time.Minute, AutoMigrate: true}
	got := Config{DatabaseURL: c.DatabaseURL, LocalRoot: c.LocalRoot, BackupDir: c.BackupDir, Listen: c.Listen,
		LogFormat: c.LogFormat, KafkaReplication: c.KafkaReplication, MeteringEvery: c.MeteringEvery, AutoMigrate: c.AutoMigrate}
	if !reflect.DeepEqual(got, want) || c.RedisURL != "" || len(c.KafkaBrokers) != 0 {
		t.Errorf("dev config\n got %+v (redis %q, kafka %v)\nwant %+v, redis and kafka embedded", got, c.RedisURL, c.KafkaBrokers, want)
	}
	c, err = LoadDevConfig(func(k string) string {
		return map[string]string{"CHOM_METERING_INTERVAL": "2h", "CHOM_LOG_FORMAT": "json"}[k]
	}, dir)
	if err != nil || c.MeteringEvery != 2*time.Hour || c.LogFormat != "json" {
		t.Errorf("set variables must win: %v, %s, %s", err, c.MeteringEvery, c.LogFormat)
	}
}

// --help lists what the command reads, with the right defaults.
func TestWriteEnvHelp(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := WriteEnvHelp(&b, RoleRelay, false); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"CHOM_KAFKA_BROKERS", "CHOM_RELAY_POLL_INTERVAL", "100ms", "CHOM_DATABASE_URL"} {
		if !strings.Contains(out, want) {
			t.Errorf("relay help lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "CHOM_WORKER_CONCURRENCY") {
		t.Errorf("relay help lists a worker setting:\n%s", out)
	}
	b.Reset()
	if err := WriteEnvHelp(&b, RoleDev, true); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`CHOM_METERING_INTERVAL +1m `).MatchString(b.String()) {
		t.Errorf("dev help does not show the dev metering default:\n%s", b.String())
	}
}

func TestDurText(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		2 * time.Second: "2s", 5 * time.Minute: "5m", 250 * time.Millisecond: "250ms", 7 * 24 * time.Hour: "168h",
		24 * time.Hour: "24h", 90 * time.Minute: "1h30m", 100 * time.Millisecond: "100ms", 30 * time.Second: "30s",
	} {
		if got := durText(d); got != want {
			t.Errorf("durText(%s) = %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(want); err != nil || back != d {
			t.Errorf("%q does not parse back to %s", want, d)
		}
	}
}

// CHOM_KAFKA_MIN_INSYNC_REPLICAS: unset, the events package's default for the
// replication factor (2 of 3); more than the replicas is refused at start-up,
// since no acks=all write could then succeed.
func TestKafkaMinInSyncReplicas(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env     map[string]string
		want    int // of the topic spec
		refused bool
	}{
		{map[string]string{}, 2, false},
		{map[string]string{"CHOM_KAFKA_REPLICATION": "1"}, 1, false},
		{map[string]string{"CHOM_KAFKA_MIN_INSYNC_REPLICAS": "3"}, 3, false},
		{map[string]string{"CHOM_KAFKA_MIN_INSYNC_REPLICAS": "4"}, 0, true},
		{map[string]string{"CHOM_KAFKA_MIN_INSYNC_REPLICAS": "0"}, 0, true},
	} {
		c, err := LoadConfig(func(k string) string { return tc.env[k] })
		if tc.refused {
			if err == nil || !strings.Contains(err.Error(), "CHOM_KAFKA_MIN_INSYNC_REPLICAS") {
				t.Errorf("%v: error %v, want one naming CHOM_KAFKA_MIN_INSYNC_REPLICAS", tc.env, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.env, err)
			continue
		}
		spec := c.topicSpec()
		if spec.MinInSyncReplicas == 0 {
			spec.MinInSyncReplicas = events.DefaultMinInSyncReplicas(spec.ReplicationFactor)
		}
		if spec.MinInSyncReplicas != tc.want || spec.Validate() != nil {
			t.Errorf("%v: topic spec %+v (%v), want min.insync.replicas %d", tc.env, spec, spec.Validate(), tc.want)
		}
	}
}
