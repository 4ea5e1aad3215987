package drivers

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
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
}

// Add returns the sum of b and o.
func (b Bandwidth) Add(o Bandwidth) Bandwidth {
	return Bandwidth{Bytes: b.Bytes + o.Bytes, Requests: b.Requests + o.Requests,
		Skipped: b.Skipped + o.Skipped, Files: b.Files + o.Files}
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
	at, err := time.Parse(timeLocalLayout, string(rest[:closeAt]))
	if err != nil {
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
	fields := bytes.SplitN(bytes.TrimPrefix(rest, []byte(" ")), []byte(" "), 3)
	if len(fields) != 3 || len(fields[0]) != 3 {
		return time.Time{}, 0, false
	}
	if status, err := strconv.Atoi(string(fields[0])); err != nil || status < 100 || status > 599 {
		return time.Time{}, 0, false
	}
	size, err := strconv.ParseInt(string(fields[1]), 10, 64)
	if err != nil || size < 0 {
		return time.Time{}, 0, false
	}
	tail := fields[2]
	if len(tail) < 5 || tail[0] != '"' || tail[len(tail)-1] != '"' || !bytes.Contains(tail, []byte(`" "`)) {
		return time.Time{}, 0, false
	}
	return at, size, true
}
