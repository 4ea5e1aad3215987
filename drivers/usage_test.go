package drivers_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chomhq/chom/drivers"
)

// logLine is one access-log line as nginx writes it in the combined format.
func logLine(at time.Time, request string, status int, bytes int64) string {
	return fmt.Sprintf(`203.0.113.7 - - [%s] "%s" %d %d "https://ref.example/" "Mozilla/5.0 (X11; Linux x86_64)"`+"\n",
		at.Format("02/Jan/2006:15:04:05 -0700"), request, status, bytes)
}

func TestScanAccessLog(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	end := start.Add(time.Hour)
	cet := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		log  string
		want drivers.Bandwidth
	}{
		{"empty", "", drivers.Bandwidth{}},
		{"one inside", logLine(start.Add(time.Minute), "GET / HTTP/1.1", 200, 512),
			drivers.Bandwidth{Bytes: 512, Requests: 1}},
		{"start is inclusive", logLine(start, "GET / HTTP/1.1", 200, 100),
			drivers.Bandwidth{Bytes: 100, Requests: 1}},
		{"end is exclusive", logLine(end, "GET / HTTP/1.1", 200, 100), drivers.Bandwidth{}},
		{"last second inside", logLine(end.Add(-time.Second), "GET / HTTP/1.1", 200, 7),
			drivers.Bandwidth{Bytes: 7, Requests: 1}},
		{"before", logLine(start.Add(-time.Second), "GET / HTTP/1.1", 200, 100), drivers.Bandwidth{}},
		{"other time zone, same instant", logLine(start.Add(30*time.Minute).In(cet), "GET / HTTP/1.1", 200, 9),
			drivers.Bandwidth{Bytes: 9, Requests: 1}},
		{"other time zone, outside", logLine(end.In(cet), "GET / HTTP/1.1", 200, 9), drivers.Bandwidth{}},
		{"zero bytes and errors count", logLine(start.Add(time.Minute), "HEAD / HTTP/1.1", 304, 0) +
			logLine(start.Add(2*time.Minute), "GET /missing HTTP/1.1", 404, 153),
			drivers.Bandwidth{Bytes: 153, Requests: 2}},
		{"escaped quote in request", logLine(start.Add(time.Minute), `GET /a\x22b HTTP/1.1`, 200, 10),
			drivers.Bandwidth{Bytes: 10, Requests: 1}},
		{"no trailing newline", strings.TrimSuffix(logLine(start.Add(time.Minute), "GET / HTTP/1.1", 200, 3), "\n"),
			drivers.Bandwidth{Bytes: 3, Requests: 1}},
		{"CRLF", strings.Replace(logLine(start.Add(time.Minute), "GET / HTTP/1.1", 200, 3), "\n", "\r\n", 1),
			drivers.Bandwidth{Bytes: 3, Requests: 1}},
		{"blank lines are not malformed", "\n\n" + logLine(start.Add(time.Minute), "GET / HTTP/1.1", 200, 3) + "\n",
			drivers.Bandwidth{Bytes: 3, Requests: 1}},
		{"malformed lines are skipped and counted", strings.Join([]string{
			"garbage\n",
			`203.0.113.7 - - [not a time] "GET / HTTP/1.1" 200 5 "-" "-"` + "\n",
			`203.0.113.7 - - [01/Dec/2026:10:05:00 +0000] "GET / HTTP/1.1" 200 -5 "-" "-"` + "\n",
			`203.0.113.7 - - [01/Dec/2026:10:05:00 +0000] "GET / HTTP/1.1" 200 abc "-" "-"` + "\n",
			`203.0.113.7 - - [01/Dec/2026:10:05:00 +0000] "GET / HTTP/1.1" 20 5 "-" "-"` + "\n",
			`203.0.113.7 - - [01/Dec/2026:10:05:00 +0000] "GET / HTTP/1.1 200 5` + "\n",  // truncated
			`203.0.113.7 - - [01/Dec/2026:10:05:00 +0000] "GET / HTTP/1.1" 200 5` + "\n", // no referer, agent
			logLine(start.Add(time.Minute), "GET / HTTP/1.1", 200, 1000),
		}, ""), drivers.Bandwidth{Bytes: 1000, Requests: 1, Skipped: 7}},
		{"an over-long line is skipped, the next counted",
			`203.0.113.7 - - [01/Dec/2026:10:05:00 +0000] "GET /` + strings.Repeat("a", 70<<10) + ` HTTP/1.1" 200 5 "-" "-"` + "\n" +
				logLine(start.Add(time.Minute), "GET / HTTP/1.1", 200, 11),
			drivers.Bandwidth{Bytes: 11, Requests: 1, Skipped: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := drivers.ScanAccessLog(t.Context(), strings.NewReader(tc.log), start, end)
			if err != nil {
				t.Fatalf("ScanAccessLog: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ScanAccessLog (-want +got):\n%s", diff)
			}
		})
	}
}

// endless is a reader of an access log that never ends.
type endless struct{ line []byte }

func (e endless) Read(p []byte) (int, error) {
	n := 0
	for n+len(e.line) <= len(p) {
		n += copy(p[n:], e.line)
	}
	if n == 0 {
		return copy(p, e.line), nil
	}
	return n, nil
}

func TestScanAccessLogStreamsAndHonoursContext(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	// An endless log can only be scanned by streaming it; the scan must stop
	// when the context ends rather than run (or grow) forever.
	_, err := drivers.ScanAccessLog(ctx, io.Reader(endless{[]byte(logLine(start, "GET / HTTP/1.1", 200, 1))}), start, start.Add(time.Hour))
	if err != context.DeadlineExceeded {
		t.Fatalf("ScanAccessLog of an endless log = %v, want %v", err, context.DeadlineExceeded)
	}
}

func BenchmarkScanAccessLog(b *testing.B) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var sb strings.Builder
	for i := range 10000 {
		sb.WriteString(logLine(start.Add(time.Duration(i)*time.Second/3), "GET /index.php?p=1 HTTP/1.1", 200, int64(i)))
	}
	log := sb.String()
	b.SetBytes(int64(len(log)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := drivers.ScanAccessLog(b.Context(), strings.NewReader(log), start, start.Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
}

// parseTimeLocal accepts exactly what time.Parse(timeLocalLayout, …) accepts
// and returns the same instant: every field at, around and past its limits,
// leap days, offsets both ways, and mangled separators and lengths.
func TestParseTimeLocalMatchesTimeParse(t *testing.T) {
	var inputs []string
	for _, day := range []string{"00", "01", "28", "29", "30", "31", "32", "1 ", "a1"} {
		for _, mon := range []string{"Jan", "Feb", "Apr", "Dec", "jan", "Foo", "JAN"} {
			for _, year := range []string{"2024", "2026", "1900", "2000", "0000", "20x6"} {
				inputs = append(inputs, day+"/"+mon+"/"+year+":12:30:45 +0000")
			}
		}
	}
	for _, clock := range []string{"00:00:00", "23:59:59", "24:00:00", "12:60:00", "12:00:60", "12:00:99", "1:00:000", "12-00-00"} {
		for _, off := range []string{"+0000", "-0700", "+1400", "-1200", "+0530", "+0060", "+0061", "+2400", "-2460", "+2500", "+9959", "+00:0", "0000 ", "x0100"} {
			inputs = append(inputs, "29/Feb/2024:"+clock+" "+off)
		}
	}
	inputs = append(inputs, "", "01/Dec/2026:21:05:09", "01/Dec/2026:21:05:09 +00000", "01/Dec/2026 21:05:09 +0000",
		"01-Dec-2026:21:05:09 +0000", "01/Dec/2026:21:05:09_+0000", "1/Dec/2026:21:05:09 +0000")
	// And valid stamps with one or two bytes mangled at random.
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "0123456789/: +-aJFDecnb"
	for range 20000 {
		b := []byte("01/Dec/2026:21:05:09 +0100")
		for range 1 + rng.IntN(2) {
			b[rng.IntN(len(b))] = alphabet[rng.IntN(len(alphabet))]
		}
		inputs = append(inputs, string(b))
	}
	var accepted int
	for _, in := range inputs {
		want, werr := time.Parse(drivers.TimeLocalLayout, in)
		got, ok := drivers.ParseTimeLocal([]byte(in))
		switch {
		case (werr == nil) != ok:
			t.Errorf("%q: parseTimeLocal ok=%v, time.Parse err=%v", in, ok, werr)
		case ok && !got.Equal(want):
			t.Errorf("%q: parseTimeLocal %v, time.Parse %v", in, got, want)
		case ok:
			accepted++
		}
	}
	if accepted < 50 || accepted == len(inputs) {
		t.Fatalf("%d of %d inputs accepted: the table does not exercise both sides", accepted, len(inputs))
	}
}

// Which files of a site's log directory are its access logs.
func TestIsAccessLog(t *testing.T) {
	for name, want := range map[string]bool{
		"access.log": true, "access.log.1": true, "access.log.12": true, "access.log.2.gz": true,
		"access.log.old": false, "access.log-20261201": false, "access.log.gz": false, "error.log": false,
		"access.log.1.gz.tmp": false, "xaccess.log": false, "access.log.": false,
	} {
		if got := drivers.IsAccessLog(name); got != want {
			t.Errorf("IsAccessLog(%q) = %v, want %v", name, got, want)
		}
	}
}
