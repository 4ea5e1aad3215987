package events

import (
	"slices"
	"testing"
	"time"
)

// The reader's floor stays below every ID it skipped (a transaction that
// took lower IDs and has not committed) until the ID is read or its gap
// expires, so a late commit is read by the next read, not the next sweep.
func TestReaderFloorWaitsForGaps(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 13, 0, 0, 0, time.UTC)
	rd := &reader{limit: 100, now: func() time.Time { return t0 }}
	check := func(at time.Time, want int64, what string) {
		t.Helper()
		if got := rd.floor(at); got != want {
			t.Errorf("%s: floor %d, want %d (cursor %d, gaps %+v)", what, got, want, rd.cursor, rd.gaps)
		}
	}

	rd.saw([]int64{3, 4, 5}, false, t0)
	check(t0, 5, "first read: nothing known below it")
	rd.saw([]int64{8, 9, 12}, false, t0)
	check(t0, 5, "6, 7, 10 and 11 not seen")
	rd.saw([]int64{6}, false, t0.Add(10*time.Millisecond))
	check(t0, 6, "6 seen")
	rd.saw([]int64{7, 11}, false, t0.Add(20*time.Millisecond))
	check(t0, 9, "10 still missing")
	rd.saw([]int64{10, 13}, false, t0.Add(30*time.Millisecond))
	check(t0, 13, "every ID up to 13 seen")

	// A rollback: 14 never appears; the floor waits for it gapTimeout, then
	// the reader reads from its cursor (a sweep finds 14 if it ever commits).
	at := t0.Add(time.Second)
	rd.saw([]int64{15, 16}, false, at)
	check(at.Add(gapTimeout-time.Millisecond), 13, "14 missing, not expired")
	check(at.Add(gapTimeout+time.Millisecond), 16, "14 expired")
	if len(rd.gaps) != 0 {
		t.Errorf("gaps %+v after expiry, want none", rd.gaps)
	}

	// A full read that stops below the cursor (rows read ahead were dropped
	// after a failed publish): the cursor moves back to the read's last ID.
	rd.saw([]int64{20, 25}, false, at) // 17-19, 21-24 missing
	rd.saw([]int64{21, 22}, true, at)
	if want := (gapSet{{17, 19, at}}); rd.cursor != 22 || !slices.Equal(rd.gaps, want) {
		t.Errorf("after a full read ending at 22: cursor %d, gaps %+v; want 22, %+v", rd.cursor, rd.gaps, want)
	}
	check(at, 16, "17-19 still missing")
	rd.saw([]int64{17, 18, 19}, false, at)
	check(at, 22, "the rows above 22 are read again")
}

// A gap is split by an ID read inside it, and closed when its last ID is read.
func TestGapSetFill(t *testing.T) {
	t0 := time.Now()
	var g gapSet
	g.add(10, 19, t0)
	g.add(30, 30, t0)
	g.fill(15)
	g.fill(10)
	g.fill(19)
	g.fill(30)
	g.fill(99) // in no gap
	want := gapSet{{11, 14, t0}, {16, 18, t0}}
	if !slices.Equal(g, want) {
		t.Errorf("gaps %+v, want %+v", g, want)
	}
}
