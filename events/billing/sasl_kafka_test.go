package billing_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/events/billing"
	"github.com/chomhq/chom/internal/stack"
	"github.com/chomhq/chom/internal/testenv"
	"github.com/chomhq/chom/models"
)

// TestMain stops the SASL_SSL broker the tests of this package share (one per
// run: it costs about 5s and 512 MB).
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopKafkaSASL()
	os.Exit(code)
}

// saslBroker returns the shared SASL_SSL broker and logs how long it took to
// start.
func saslBroker(t *testing.T) *testenv.KafkaSASLServer {
	t.Helper()
	srv := testenv.KafkaSASL(t)
	t.Logf("SASL_SSL broker %s (started in %s)", srv.Brokers()[0], srv.Started.Round(time.Millisecond))
	return srv
}

// security returns user's SASL_SSL settings on srv.
func security(srv *testenv.KafkaSASLServer, mechanism, user string) events.KafkaSecurity {
	return events.KafkaSecurity{TLS: true, CAFile: srv.CAFile, SASLMechanism: mechanism,
		Username: user, Password: srv.Password(user)}
}

// grantACLs gives the relay's and the billing consumer's users what
// docs/events.md ("Broker security") grants them, under prefix and group: the
// relay writes (and creates) the topics under the prefix; the consumer reads
// them, creates the three it uses, writes only its dead-letter topic, and uses
// its group. Nobody else gets anything.
func grantACLs(t *testing.T, srv *testenv.KafkaSASLServer, prefix, group string) {
	t.Helper()
	admin, err := srv.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	relay, bill := "User:"+testenv.KafkaSASLRelay, "User:"+testenv.KafkaSASLBilling
	acl := func(rt kafka.ResourceType, name string, pt kafka.PatternType, principal string, op kafka.ACLOperationType) kafka.ACLEntry {
		return kafka.ACLEntry{ResourceType: rt, ResourceName: name, ResourcePatternType: pt, Principal: principal,
			Host: "*", Operation: op, PermissionType: kafka.ACLPermissionTypeAllow}
	}
	topic, lit, pre := kafka.ResourceTypeTopic, kafka.PatternTypeLiteral, kafka.PatternTypePrefixed
	entries := []kafka.ACLEntry{
		acl(topic, prefix+".", pre, relay, kafka.ACLOperationTypeWrite),
		acl(topic, prefix+".", pre, relay, kafka.ACLOperationTypeDescribe),
		acl(topic, prefix+".", pre, relay, kafka.ACLOperationTypeCreate),
		acl(topic, prefix+".", pre, bill, kafka.ACLOperationTypeRead),
		acl(topic, prefix+".", pre, bill, kafka.ACLOperationTypeDescribe),
		acl(kafka.ResourceTypeGroup, group, lit, bill, kafka.ACLOperationTypeRead),
		acl(topic, events.FullTopic(prefix, events.TopicBillingDLQ), lit, bill, kafka.ACLOperationTypeWrite),
	}
	for _, tp := range []string{events.TopicUsage, events.TopicSites, events.TopicBillingDLQ} {
		entries = append(entries, acl(topic, events.FullTopic(prefix, tp), lit, bill, kafka.ACLOperationTypeCreate))
	}
	res, err := admin.CreateACLs(t.Context(), &kafka.CreateACLsRequest{ACLs: entries})
	if err != nil {
		t.Fatalf("create ACLs: %v", err)
	}
	if err := errors.Join(res.Errors...); err != nil {
		t.Fatalf("create ACLs: %v", err)
	}
}

// secretFree fails the test when text holds any of the broker's passwords.
func secretFree(t *testing.T, srv *testenv.KafkaSASLServer, what, text string, extra ...string) {
	t.Helper()
	for _, u := range []string{testenv.KafkaSASLAdmin, testenv.KafkaSASLRelay, testenv.KafkaSASLBilling, testenv.KafkaSASLOther} {
		extra = append(extra, srv.Password(u))
	}
	for _, pw := range extra {
		if strings.Contains(text, pw) {
			t.Errorf("%s holds a password (%q):\n%s", what, pw, text)
		}
	}
}

// The relay and the billing consumer on a SASL_SSL broker with ACLs, each under
// its own principal, with SCRAM-SHA-512 and with PLAIN: every outbox row is
// published once and billed once; the other principals cannot produce to
// CHOM's topics; no password reaches the logs.
func TestSASLSSLRelayToBilling(t *testing.T) {
	t.Parallel()
	srv := saslBroker(t)
	for _, mech := range []string{events.SASLScramSHA512, events.SASLPlain} {
		t.Run(mech, func(t *testing.T) {
			prefix := randomPrefix(t)
			group := prefix + "-billing"
			grantACLs(t, srv, prefix, group)
			db := testenv.SQLite(t)
			s := newStore(t, db)
			tenants := []string{models.NewID(models.PrefixTenant), models.NewID(models.PrefixTenant)}
			want := map[string]int64{}
			rows := insertUsage(t, db, tenants, 0, 30, want)
			var logs testenv.SyncBuffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			spec := events.TopicSpec{Partitions: 2, ReplicationFactor: 1}
			relay, err := events.NewRelay(events.RelayConfig{Store: s, Brokers: srv.Brokers(), Logger: log, Topics: spec,
				TopicPrefix: prefix, PollInterval: 20 * time.Millisecond, Security: security(srv, mech, testenv.KafkaSASLRelay)})
			if err != nil {
				t.Fatal(err)
			}
			testenv.RunInBackground(t, "relay", relay.Run)
			c, err := billing.New(billing.Config{Store: s, Brokers: srv.Brokers(), Logger: log, Topics: spec,
				TopicPrefix: prefix, GroupID: group, SessionTimeout: 6 * time.Second,
				Security: security(srv, mech, testenv.KafkaSASLBilling)})
			if err != nil {
				t.Fatal(err)
			}
			testenv.RunInBackground(t, "consumer", c.Run)

			waitFor(t, "outbox drained over SASL_SSL", 60*time.Second, func() bool {
				n, _ := s.CountUnpublished(t.Context())
				return n == 0
			})
			waitFor(t, "every usage record billed", 60*time.Second, func() bool {
				got := billedByTenant(t, db)
				for ten, q := range want {
					if got[ten] != q {
						return false
					}
				}
				return true
			})
			time.Sleep(500 * time.Millisecond) // anything still in flight would overshoot now
			got := billedByTenant(t, db)
			for ten, q := range want {
				if got[ten] != q {
					t.Errorf("tenant %s billed %d, want exactly %d", ten, got[ten], q)
				}
			}
			if st := c.Stats(); st.Billed != uint64(len(rows)) || st.Duplicates != 0 || st.DeadLettered != 0 {
				t.Errorf("consumer Stats = %+v, want %d billed, no duplicates, none dead-lettered", st, len(rows))
			}
			usageTopic := events.FullTopic(prefix, events.TopicUsage)
			msgs, err := srv.Records(t.Context(), usageTopic)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]int{}
			for _, m := range msgs {
				env, err := events.Parse(m)
				if err != nil {
					t.Errorf("record at %d/%d: %v", m.Partition, m.Offset, err)
					continue
				}
				seen[env.ID]++
			}
			for _, r := range rows {
				if n := seen[r.EventID]; n != 1 {
					t.Errorf("event %s is on %s %d times, want once", r.EventID, usageTopic, n)
				}
			}
			if len(msgs) != len(rows) {
				t.Errorf("%d records on %s, want %d", len(msgs), usageTopic, len(rows))
			}

			// Attack: principals other than the relay's produce a forged usage
			// record to CHOM's topic. The broker refuses them.
			forged := events.Message(prefix, usage(t, tenants[0], base.Add(1000*time.Hour), 1_000_000_000))
			// The intruder, with no ACL at all, does not even see the topic.
			refusals := map[string]error{testenv.KafkaSASLOther: kafka.UnknownTopicOrPartition, testenv.KafkaSASLBilling: kafka.TopicAuthorizationFailed}
			for user, refusal := range refusals {
				tr, err := events.NewTransport("intruder", 5*time.Second, security(srv, mech, user))
				if err != nil {
					t.Fatal(err)
				}
				w := &kafka.Writer{Addr: kafka.TCP(srv.Brokers()...), Transport: tr, RequiredAcks: kafka.RequireAll, MaxAttempts: 1}
				err = w.WriteMessages(t.Context(), forged)
				_ = w.Close()
				var werrs kafka.WriteErrors
				if errors.As(err, &werrs) && len(werrs) == 1 {
					err = werrs[0]
				}
				if !errors.Is(err, refusal) {
					t.Errorf("%s produced to %s: error %v, want %v", user, usageTopic, err, refusal)
				}
			}
			if msgs, err := srv.Records(t.Context(), usageTopic); err != nil || len(msgs) != len(rows) {
				t.Errorf("%s holds %d records (%v) after the forgeries, want %d", usageTopic, len(msgs), err, len(rows))
			}
			secretFree(t, srv, "the relay's and the consumer's logs", logs.String())
		})
	}
}

// A wrong password and a CA that did not sign the broker's certificate each
// fail with an error that says so, and holds no password: from the admin calls
// directly, and in the relay's and the consumer's logs.
func TestSASLSSLFailuresAreClear(t *testing.T) {
	t.Parallel()
	srv := saslBroker(t)
	wrongPassword := security(srv, events.SASLScramSHA512, testenv.KafkaSASLRelay)
	wrongPassword.Password = "not-" + wrongPassword.Password
	plainWrong := security(srv, events.SASLPlain, testenv.KafkaSASLRelay)
	plainWrong.Password = wrongPassword.Password
	noCA := security(srv, events.SASLScramSHA512, testenv.KafkaSASLRelay)
	noCA.CAFile = "" // the system roots, which do not hold the test CA
	otherCA := security(srv, events.SASLScramSHA512, testenv.KafkaSASLRelay)
	otherCA.CAFile = srv.OtherCAFile
	cases := []struct {
		name string
		sec  events.KafkaSecurity
		want string
	}{
		{"scram wrong password", wrongPassword, "Authentication failed"},
		{"plain wrong password", plainWrong, "Authentication failed"},
		{"missing CA", noCA, "certificate signed by unknown authority"},
		{"other CA", otherCA, "certificate signed by unknown authority"},
	}
	prefix := randomPrefix(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := events.NewTransport("chom-test", 5*time.Second, tc.sec)
			if err != nil {
				t.Fatal(err)
			}
			client := &kafka.Client{Addr: kafka.TCP(srv.Brokers()...), Timeout: 5 * time.Second, Transport: tr}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err = events.EnsureTopics(ctx, client, events.TopicSpec{Partitions: 1, ReplicationFactor: 1}, events.FullTopic(prefix, events.TopicUsage))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("EnsureTopics: error %v, want one that says %q", err, tc.want)
			} else {
				t.Logf("EnsureTopics: %v", err)
			}
			secretFree(t, srv, "the error", errString(err), tc.sec.Password)

			// The same through the relay and the consumer: they keep retrying
			// and log why.
			db := testenv.SQLite(t)
			s := newStore(t, db)
			row := usage(t, models.NewID(models.PrefixTenant), base, 1)
			row.CreatedAt = time.Now().UTC()
			if _, err := db.NewInsert().Model(&row).Exec(t.Context()); err != nil {
				t.Fatal(err)
			}
			var logs testenv.SyncBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			relay, err := events.NewRelay(events.RelayConfig{Store: s, Brokers: srv.Brokers(), Logger: log, TopicPrefix: prefix,
				Topics: events.TopicSpec{Partitions: 1, ReplicationFactor: 1}, WriteTimeout: 3 * time.Second, Security: tc.sec})
			if err != nil {
				t.Fatal(err)
			}
			stopRelay := testenv.RunInBackground(t, "relay", relay.Run)
			c, err := billing.New(billing.Config{Store: s, Brokers: srv.Brokers(), Logger: log, TopicPrefix: prefix,
				Topics: events.TopicSpec{Partitions: 1, ReplicationFactor: 1}, Security: tc.sec})
			if err != nil {
				t.Fatal(err)
			}
			stopConsumer := testenv.RunInBackground(t, "consumer", c.Run)
			waitFor(t, "the relay and the consumer log the failure", 30*time.Second, func() bool {
				out := logs.String()
				return strings.Count(out, tc.want) >= 2 &&
					strings.Contains(out, "publish failed") && strings.Contains(out, "create topics; retrying")
			})
			stopRelay()
			stopConsumer()
			if n, _ := s.CountUnpublished(t.Context()); n != 1 {
				t.Errorf("%d rows unpublished, want the one row still waiting", n)
			}
			secretFree(t, srv, "the logs", logs.String(), tc.sec.Password)
		})
	}
}

// randomPrefix is a topic prefix no other test uses.
func randomPrefix(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "t" + hex.EncodeToString(b)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// `chom relay` and `chom billing-consumer` as production builds them, from
// CHOM_KAFKA_TLS, CHOM_KAFKA_TLS_CA_FILE and CHOM_KAFKA_SASL_* through the
// settings loader, each with its own SCRAM-SHA-512 user: the usage reaches the
// invoices over SASL_SSL, and neither process logs a password.
func TestSASLSSLThroughTheProductionLoader(t *testing.T) {
	t.Parallel()
	srv := saslBroker(t)
	prefix, group := randomPrefix(t), "chom-billing-"+randomPrefix(t)
	grantACLs(t, srv, prefix, group)
	dbURL := "sqlite://" + filepath.Join(t.TempDir(), "chom.db")
	db, err := models.Open(t.Context(), dbURL, models.PoolConfig{MaxOpenConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s := newStore(t, db)
	ten := models.NewID(models.PrefixTenant)
	var rows []models.OutboxEvent
	var want int64
	for h := range 12 {
		rows = append(rows, usage(t, ten, base.Add(time.Duration(h)*time.Hour), int64(7_000_001+h)))
		rows[h].CreatedAt = time.Now().UTC()
		want += int64(7_000_001 + h)
	}
	if _, err := db.NewInsert().Model(&rows).Exec(t.Context()); err != nil {
		t.Fatal(err)
	}

	var logs testenv.SyncBuffer
	run := func(user string, build func(context.Context, stack.Config, io.Writer) (*stack.Process, error)) {
		env := map[string]string{
			"CHOM_DATABASE_URL": dbURL, "CHOM_KAFKA_BROKERS": srv.Brokers()[0], "CHOM_KAFKA_TOPIC_PREFIX": prefix,
			"CHOM_KAFKA_PARTITIONS": "1", "CHOM_KAFKA_REPLICATION": "1", "CHOM_BILLING_GROUP": group,
			"CHOM_METRICS_LISTEN": "127.0.0.1:0", "CHOM_RELAY_POLL_INTERVAL": "20ms", "CHOM_LOG_LEVEL": "debug",
			"CHOM_KAFKA_TLS": "true", "CHOM_KAFKA_TLS_CA_FILE": srv.CAFile, "CHOM_KAFKA_SASL_MECHANISM": "scram-sha-512",
			"CHOM_KAFKA_SASL_USERNAME": user, "CHOM_KAFKA_SASL_PASSWORD": srv.Password(user),
		}
		c, err := stack.LoadConfig(func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		p, err := build(t.Context(), c, &logs)
		if err != nil {
			t.Fatal(err)
		}
		testenv.RunInBackground(t, user, p.Run)
	}
	run(testenv.KafkaSASLRelay, stack.RelayProcess)
	run(testenv.KafkaSASLBilling, stack.BillingProcess)

	waitFor(t, "usage billed through the production processes", 90*time.Second, func() bool {
		return billedByTenant(t, db)[ten] == want
	})
	if n, _ := s.CountUnpublished(t.Context()); n != 0 {
		t.Errorf("%d rows unpublished", n)
	}
	for _, w := range []string{"user=relay", "user=billing", "sasl=scram-sha-512"} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("the processes' logs do not say %q", w)
		}
	}
	secretFree(t, srv, "the processes' logs", logs.String())
}
