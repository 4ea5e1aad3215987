package drivers

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// UsageProbe measures what a site uses on its server, for metering. Every
// figure is measured on the server, never estimated. Implementations: local
// (a directory on this machine) and ssh (real servers).
type UsageProbe interface {
	// DiskBytes returns the bytes of the site's document root: the sum of the
	// sizes of the regular files under it (symbolic links are not followed). A
	// document root that does not exist holds 0 bytes. A spec that fails
	// ValidateSiteSpec is an error wrapping ErrInvalidSpec.
	DiskBytes(ctx context.Context, site SiteSpec) (int64, error)
	// Bandwidth sums the response sizes ($body_bytes_sent) of the requests in
	// the site's nginx access logs (the current file and rotated ones) whose
	// time falls in [start, end). Missing logs mean no traffic.
	Bandwidth(ctx context.Context, site SiteSpec, start, end time.Time) (Bandwidth, error)
}

// Bandwidth is what a scan of access logs found for one period.
type Bandwidth struct {
	// Bytes is the sum of $body_bytes_sent of the requests in the period.
	Bytes int64
	// Requests is how many lines fell in the period.
	Requests int64
	// Skipped counts lines that are not in nginx's combined format (they are
	// not billed; a non-zero count is worth a look).
	Skipped int64
	// Files is how many log files were read.
	Files int
	// RefusedFiles counts log files that were not billed because they could
	// not be read safely: a link, not a regular file, a compressed file that
	// is corrupt or decompresses past MaxLogBytes (ErrLogRefused). Each was
	// logged; a non-zero count means the bill is short and is worth a look.
	RefusedFiles int
}

// Add returns the sum of b and o.
func (b Bandwidth) Add(o Bandwidth) Bandwidth {
	return Bandwidth{Bytes: b.Bytes + o.Bytes, Requests: b.Requests + o.Requests,
		Skipped: b.Skipped + o.Skipped, Files: b.Files + o.Files, RefusedFiles: b.RefusedFiles + o.RefusedFiles}
}

// accessLogName matches a site's access logs: access.log, which the server
// blocks name (drivers/siteconf), and what logrotate leaves beside it,
// access.log.1 and older ones compressed, access.log.2.gz, ….
var accessLogName = regexp.MustCompile(`^access\.log(\.[0-9]+(\.gz)?)?$`)

// IsAccessLog reports whether a file named name in a site's log directory is
// one of its access logs (see UsageProbe.Bandwidth); access.log.old,
// access.log-20261201 and the like are not.
func IsAccessLog(name string) bool { return accessLogName.MatchString(name) }

// MaxLogBytes bounds what one compressed log file may decompress to (4 GiB,
// some 20 million requests): a gzip bomb a site planted, or a corrupt file,
// is refused instead of read for ever. A plain file is bounded by its size on
// disk and is read whole.
const MaxLogBytes int64 = 4 << 30

// ErrLogRefused marks a log file a scan refused to bill (a link, not a regular
// file, a corrupt or oversize compressed file): the caller skips it, logs it
// and counts it in Bandwidth.RefusedFiles, and goes on with the other files.
var ErrLogRefused = errors.New("log file refused")

// ScanAccessLogFile is ScanAccessLog of one access log file named name read
// from r, decompressed on the fly when name ends in .gz (a rotated log);
// Files is 1. A .gz file that is not gzip, is corrupt, or decompresses past
// maxBytes (MaxLogBytes when 0) is an error wrapping ErrLogRefused.
func ScanAccessLogFile(ctx context.Context, r io.Reader, name string, start, end time.Time, maxBytes int64) (Bandwidth, error) {
	if maxBytes <= 0 {
		maxBytes = MaxLogBytes
	}
	var lr *limitedReader
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return Bandwidth{}, fmt.Errorf("%w: open gzip %s: %w", ErrLogRefused, name, err)
		}
		defer zr.Close()
		lr = &limitedReader{r: zr, left: maxBytes}
		r = lr
	}
	bw, err := ScanAccessLog(ctx, r, start, end)
	switch {
	case lr != nil && lr.over:
		return Bandwidth{}, fmt.Errorf("%w: %s decompresses to more than %d bytes", ErrLogRefused, name, maxBytes)
	case lr != nil && err != nil && lr.err != nil && errors.Is(err, lr.err) && isCorrupt(lr.err):
		return Bandwidth{}, fmt.Errorf("%w: %s is corrupt: %w", ErrLogRefused, name, err)
	case err != nil:
		return Bandwidth{}, fmt.Errorf("scan %s: %w", name, err)
	}
	bw.Files = 1
	return bw, nil
}

// isCorrupt reports whether a gzip reader's error says the stream is bad (as
// opposed to the transport under it failing).
func isCorrupt(err error) bool {
	var ce flate.CorruptInputError
	return errors.As(err, &ce) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// limitedReader reads at most left bytes of r; past that it fails, with over
// set. err is the last error r returned.
type limitedReader struct {
	r    io.Reader
	left int64
	over bool
	err  error
}

// errTooLarge ends a scan whose decompressed file passed its bound.
var errTooLarge = errors.New("decompressed log too large")

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// One byte more tells a file of exactly the bound from a larger one.
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			l.over = true
			return 0, errTooLarge
		}
		l.err = err
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	l.err = err
	return n, err
}

// maxLogLine bounds the memory of one log line; a longer line is skipped (nginx
// lines are a few hundred bytes; only a broken writer makes such a line).
const maxLogLine = 64 << 10

// timeLocalLayout is nginx's $time_local, e.g. 01/Dec/2026:21:05:09 +0000.
const timeLocalLayout = "02/Jan/2006:15:04:05 -0700"

// ScanAccessLog streams an nginx access log in the combined format
//
//	$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
//
// and sums $body_bytes_sent over the lines whose $time_local is in [start, end).
// Lines that do not parse (and lines over 64 KiB) are counted in Skipped, never
// billed. It reads r line by line, holding at most one line in memory, and stops
// with ctx's error when ctx ends.
func ScanAccessLog(ctx context.Context, r io.Reader, start, end time.Time) (Bandwidth, error) {
	var bw Bandwidth
	br := bufio.NewReaderSize(r, maxLogLine)
	for n := 0; ; n++ {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return bw, err
			}
		}
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			bw.Skipped++
			for errors.Is(err, bufio.ErrBufferFull) { // drop the rest of the long line
				_, err = br.ReadSlice('\n')
			}
			if errors.Is(err, io.EOF) {
				return bw, nil
			}
			if err != nil {
				return bw, fmt.Errorf("read access log: %w", err)
			}
			continue
		}
		if len(bytes.TrimSpace(line)) > 0 {
			at, size, ok := parseCombined(line)
			switch {
			case !ok:
				bw.Skipped++
			case !at.Before(start) && at.Before(end):
				bw.Requests++
				bw.Bytes += size
			}
		}
		if errors.Is(err, io.EOF) {
			return bw, nil
		}
		if err != nil {
			return bw, fmt.Errorf("read access log: %w", err)
		}
	}
}

// parseCombined returns the time and $body_bytes_sent of one combined-format
// line, and false when the line is not in that format.
func parseCombined(line []byte) (time.Time, int64, bool) {
	line = bytes.TrimRight(line, "\r\n")
	// $remote_addr - $remote_user [
	open := bytes.IndexByte(line, '[')
	if open < 0 || !bytes.Contains(line[:open], []byte(" - ")) {
		return time.Time{}, 0, false
	}
	rest := line[open+1:]
	closeAt := bytes.IndexByte(rest, ']')
	if closeAt < 0 {
		return time.Time{}, 0, false
	}
	at, ok := parseTimeLocal(rest[:closeAt])
	if !ok {
		return time.Time{}, 0, false
	}
	rest = rest[closeAt+1:]
	// "$request": nginx escapes '"' inside it as \x22, so the next quote ends it.
	if !bytes.HasPrefix(rest, []byte(` "`)) {
		return time.Time{}, 0, false
	}
	rest = rest[2:]
	q := bytes.IndexByte(rest, '"')
	if q < 0 {
		return time.Time{}, 0, false
	}
	rest = rest[q+1:]
	// $status $body_bytes_sent "$http_referer" "$http_user_agent"
	rest = bytes.TrimPrefix(rest, []byte(" "))
	sp := bytes.IndexByte(rest, ' ')
	if sp != 3 || rest[0] < '1' || rest[0] > '5' || !isDigit(rest[1]) || !isDigit(rest[2]) {
		return time.Time{}, 0, false
	}
	rest = rest[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	if sp < 0 {
		return time.Time{}, 0, false
	}
	size, ok := parseSize(rest[:sp])
	if !ok {
		return time.Time{}, 0, false
	}
	tail := rest[sp+1:]
	if len(tail) < 5 || tail[0] != '"' || tail[len(tail)-1] != '"' || !bytes.Contains(tail, []byte(`" "`)) {
		return time.Time{}, 0, false
	}
	return at, size, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseSize parses a non-negative decimal int64 of 1 to 18 digits (more than
// any response could be), without allocating.
func parseSize(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// months are the month abbreviations of $time_local.
var months = [12]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// parseTimeLocal parses nginx's $time_local, 01/Dec/2026:21:05:09 +0000
// (timeLocalLayout), as time.Parse does but without allocating: it accepts
// exactly what time.Parse(timeLocalLayout, …) accepts (a differential test
// holds it to that) and returns the same instant, in UTC. It is the hot path of
// metering: time.Parse was a quarter of the scan's CPU.
func parseTimeLocal(b []byte) (time.Time, bool) {
	// 02/Jan/2006:15:04:05 -0700
	if len(b) != 26 || b[2] != '/' || b[6] != '/' || b[11] != ':' || b[14] != ':' || b[17] != ':' || b[20] != ' ' {
		return time.Time{}, false
	}
	num := func(i, n int) (int, bool) {
		v := 0
		for _, c := range b[i : i+n] {
			if !isDigit(c) {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	day, ok1 := num(0, 2)
	year, ok2 := num(7, 4)
	hour, ok3 := num(12, 2)
	minute, ok4 := num(15, 2)
	sec, ok5 := num(18, 2)
	offH, ok6 := num(22, 2)
	offM, ok7 := num(24, 2)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || !ok7 {
		return time.Time{}, false
	}
	month := 0
	for i, m := range months {
		// time.Parse matches month names without regard to case.
		if lower(b[3]) == lower(m[0]) && lower(b[4]) == lower(m[1]) && lower(b[5]) == lower(m[2]) {
			month = i + 1
			break
		}
	}
	sign := b[21]
	// As time.Parse: offsets of 24 hours or 60 minutes pass, as some write them.
	if month == 0 || (sign != '+' && sign != '-') || hour > 23 || minute > 59 || sec > 59 || offH > 24 || offM > 60 {
		return time.Time{}, false
	}
	if day < 1 || day > daysIn(time.Month(month), year) {
		return time.Time{}, false
	}
	offset := time.Duration(offH)*time.Hour + time.Duration(offM)*time.Minute
	if sign == '-' {
		offset = -offset
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, 0, time.UTC).Add(-offset), true
}

// lower is c in lower case when it is an ASCII letter.
func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// daysIn is the number of days of month m in year y.
func daysIn(m time.Month, y int) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
