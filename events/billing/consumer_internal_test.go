package billing

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chomhq/chom/events"
	"github.com/chomhq/chom/models"
)

// staleReader plays kafka-go's reader after a broker outage: the errors its
// partition readers queued while the broker was away come first, then the
// records behind them; once those are committed the test ends.
type staleReader struct {
	errs      int
	msgs      []kafka.Message
	committed int
	done      context.CancelFunc
}

func (r *staleReader) FetchMessage(ctx context.Context) (kafka.Message, error) {
	if r.errs > 0 {
		r.errs--
		return kafka.Message{}, errors.New("failed to dial: failed to open connection to 127.0.0.1:9092: connect: connection refused")
	}
	if len(r.msgs) > 0 {
		m := r.msgs[0]
		r.msgs = r.msgs[1:]
		return m, nil
	}
	<-ctx.Done()
	return kafka.Message{}, ctx.Err()
}

func (r *staleReader) CommitMessages(_ context.Context, msgs ...kafka.Message) error {
	r.committed += len(msgs)
	if len(r.msgs) == 0 {
		r.done()
	}
	return nil
}

// TestFetchErrorsDoNotStallTheConsumer queues 60 stale fetch errors ahead of a
// record, as kafka-go does while a broker is away, and adds up the waits the
// consumer asks for before it reaches the record. Each error may cost only
// the short fixed fetchRetryPause (kafka-go paces its own reconnects): 1.5s
// for all 60. The consumer that slept a growing backoff per error asked for
// about 550s here, which is how TestFleet saw billing stop for minutes after
// a Kafka broker came back.
func TestFetchErrorsDoNotStallTheConsumer(t *testing.T) {
	row, err := events.UsageOutbox(events.UsageEvent{TenantID: models.NewID(models.PrefixTenant), SiteID: models.NewID(models.PrefixSite), Metric: "bandwidth_bytes",
		Quantity: 1, Unit: "byte", PeriodStart: time.Unix(0, 0).UTC(), PeriodEnd: time.Unix(3600, 0).UTC(), OccurredAt: time.Unix(3600, 0).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const stale = 60
	reader := &staleReader{errs: stale, msgs: []kafka.Message{events.Message(events.DefaultTopicPrefix, row)}, done: cancel}
	var waited time.Duration
	var pauses int
	c := &Consumer{
		cfg: Config{MaxBatch: 10, Linger: 5 * time.Millisecond},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		pause: func(ctx context.Context, d time.Duration) bool {
			waited += d
			pauses++
			return ctx.Err() == nil
		},
	}
	if err := c.consume(ctx, reader, nil); err != nil {
		t.Fatalf("consume: %v", err)
	}
	if reader.committed != 1 || c.Stats().Ignored != 1 {
		t.Fatalf("committed %d records, stats %+v; want the record behind the errors read and committed", reader.committed, c.Stats())
	}
	t.Logf("%d stale errors: %d pauses, %s asked for in all", stale, pauses, waited)
	if limit := stale * fetchRetryPause; waited > limit {
		t.Errorf("the consumer asked to wait %s in all behind %d stale fetch errors, want at most %s (%s each)",
			waited, stale, limit, fetchRetryPause)
	}
}
