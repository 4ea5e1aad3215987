package events

import (
	"context"
	"time"

	"github.com/chomhq/chom/models"
)

// sweepInterval is the longest the leader reads without a sweep (reading the
// outbox from its start): a row whose gap expired (see gapTimeout) is
// published at most about this long after it commits.
const sweepInterval = time.Second

// gapTimeout is how long the reader waits for an ID it skipped (a gap: a row
// with a lower ID than rows already read, not visible yet) before it stops
// reading from below it. A gap is a transaction that has inserted its rows
// and not yet committed, or one that rolled back (its IDs never appear). The
// rows of a gap that commit after it expired are found by the next sweep.
const gapTimeout = 500 * time.Millisecond

// reader chooses the leader's reads, and remembers which IDs it has not seen.
//
// Reading the outbox from its start (a sweep: models.OutboxLease.
// UnpublishedExcept) finds every unpublished row, but walks past the rows
// being published and marked and the index entries of every row published
// since the last VACUUM: at 10,000 events/s that is most of the work of a
// read, and it grows until the next VACUUM. So the reader reads from its
// floor (UnpublishedAfter): the highest ID below which it has seen every row
// but those of expired gaps. Rows of a transaction commit together, and a
// transaction that took its IDs before another but commits after it (a late
// commit) leaves a gap in the IDs the reader sees; the floor stays below the
// oldest open gap, so the next read finds those rows as soon as they commit.
// A gap that stays open gapTimeout (a long transaction, a rollback) stops
// holding the floor, and the sweeps, one at least every sweepInterval, find
// whatever it still holds. The reader sweeps at the start and after a failed
// publish too: the rows read ahead were dropped then.
type reader struct {
	lease *models.OutboxLease
	limit int

	cursor    int64     // the highest ID seen, 0 before the first read
	sweep     bool      // the next read must sweep
	lastSweep time.Time // when the last sweep was
	gaps      gapSet    // IDs below cursor not seen yet
	now       func() time.Time
}

// newReader returns a reader of lease's outbox, limit rows a read.
func newReader(lease *models.OutboxLease, limit int) *reader {
	return &reader{lease: lease, limit: limit, now: time.Now}
}

// read returns the next rows to publish, skipping those of skip (published or
// being published, not yet marked).
func (rd *reader) read(ctx context.Context, skip []int64) ([]models.OutboxEvent, error) {
	return rd.readN(ctx, skip, rd.limit)
}

// readN is read of at most limit rows.
func (rd *reader) readN(ctx context.Context, skip []int64, limit int) ([]models.OutboxEvent, error) {
	now := rd.now()
	var rows []models.OutboxEvent
	var err error
	if rd.cursor == 0 || rd.sweep || now.Sub(rd.lastSweep) >= sweepInterval {
		rd.lastSweep = now
		rows, err = rd.lease.UnpublishedExcept(ctx, skip, limit)
	} else {
		rows, err = rd.lease.UnpublishedAfter(ctx, rd.floor(now), skip, limit)
	}
	if err != nil {
		return nil, err
	}
	rd.sweep = false
	ids := make([]int64, len(rows))
	for i, row := range rows {
		ids[i] = row.ID
	}
	rd.saw(ids, len(rows) == limit, now)
	return rows, nil
}

// floor returns the ID after which the next read starts: below the oldest
// gap still open at now, else the cursor.
func (rd *reader) floor(now time.Time) int64 {
	rd.gaps.expire(now.Add(-gapTimeout))
	if lo, ok := rd.gaps.lowest(); ok {
		return lo - 1
	}
	return rd.cursor
}

// saw records the IDs of a read (ascending): each below the cursor fills a
// gap (or is a row read again after a failed publish); the IDs skipped
// between those above it open gaps. A full read may have stopped short of
// rows below the cursor (read ahead, then dropped after a failed publish), so
// the cursor moves back to its last ID and forgets the gaps above.
func (rd *reader) saw(ids []int64, full bool, now time.Time) {
	if len(ids) == 0 {
		return
	}
	first := rd.cursor == 0 // nothing known below: no gaps yet
	prev := rd.cursor
	for _, id := range ids {
		if id <= rd.cursor {
			rd.gaps.fill(id)
			continue
		}
		if !first && id > prev+1 {
			rd.gaps.add(prev+1, id-1, now)
		}
		prev = id
		first = false
	}
	last := ids[len(ids)-1]
	if full && last < prev {
		rd.gaps.dropAbove(last)
		prev = last
	}
	rd.cursor = prev
}

// restart makes the next read a sweep: the rows read since the last publish
// were dropped.
func (rd *reader) restart() { rd.sweep = true }

// gap is a range of IDs, lo to hi inclusive, not seen since since.
type gap struct {
	lo, hi int64
	since  time.Time
}

// gapSet are a reader's open gaps, in ID order. There are few at once (about
// one per transaction in flight), so a slice is searched.
type gapSet []gap

// add opens the gap lo..hi, above every open gap.
func (g *gapSet) add(lo, hi int64, since time.Time) {
	*g = append(*g, gap{lo: lo, hi: hi, since: since})
}

// fill closes id's place in its gap, if it has one.
func (g *gapSet) fill(id int64) {
	s := *g
	for i, x := range s {
		if id < x.lo || id > x.hi {
			continue
		}
		switch {
		case x.lo == x.hi:
			*g = append(s[:i], s[i+1:]...)
		case id == x.lo:
			s[i].lo++
		case id == x.hi:
			s[i].hi--
		default:
			*g = append(s[:i+1], s[i:]...) // duplicate x, then split it
			(*g)[i].hi = id - 1
			(*g)[i+1].lo = id + 1
		}
		return
	}
}

// expire forgets the gaps opened before cutoff.
func (g *gapSet) expire(cutoff time.Time) {
	s := (*g)[:0]
	for _, x := range *g {
		if !x.since.Before(cutoff) {
			s = append(s, x)
		}
	}
	*g = s
}

// dropAbove forgets the IDs above id.
func (g *gapSet) dropAbove(id int64) {
	s := (*g)[:0]
	for _, x := range *g {
		if x.lo > id {
			continue
		}
		x.hi = min(x.hi, id)
		s = append(s, x)
	}
	*g = s
}

// lowest returns the lowest ID of an open gap, and false when none is open.
func (g gapSet) lowest() (int64, bool) {
	if len(g) == 0 {
		return 0, false
	}
	return g[0].lo, true
}
