package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/chomhq/chom/drivers"
)

var _ drivers.UsageProbe = (*Provisioner)(nil)

// DiskBytes returns the bytes of the site's document root as the remote `find`
// lists them: the sizes of the regular files under it, summed, symbolic links
// not followed. A missing document root holds 0 bytes. The listing streams;
// nothing but the running sum is kept. The host key must match
// site.Server.HostKey when that is set.
func (p *Provisioner) DiskBytes(ctx context.Context, site drivers.SiteSpec) (int64, error) {
	sp, s, err := p.start(site)
	if err != nil {
		return 0, fmt.Errorf("ssh: disk bytes: %w", err)
	}
	sum := &sizeSum{}
	if _, _, err := p.r.run(ctx, s.ep, scriptDiskBytes, []string{sp.docRoot}, runOpts{stdout: sum}); err != nil {
		return 0, fmt.Errorf("ssh: disk bytes of %s: %w", site.Domain, err)
	}
	total, err := sum.result()
	if err != nil {
		return 0, fmt.Errorf("ssh: disk bytes of %s: %w", site.Domain, err)
	}
	return total, nil
}

// Bandwidth sums the response sizes of the site's requests in [start, end)
// from its access.log and the rotated access.log.N and access.log.N.gz files
// on the server, streaming each through drivers.ScanAccessLog (a .gz one
// decompressed here, on the fly). A file last written before start holds no
// line of the period and is not read; a file already read under another name
// (the same device and inode: access.log renamed to access.log.1 by a rotation
// during the scan) is not counted twice. Missing logs mean no traffic.
func (p *Provisioner) Bandwidth(ctx context.Context, site drivers.SiteSpec, start, end time.Time) (drivers.Bandwidth, error) {
	sp, s, err := p.start(site)
	if err != nil {
		return drivers.Bandwidth{}, fmt.Errorf("ssh: bandwidth: %w", err)
	}
	out, err := s.run(ctx, scriptListLogs, runOpts{}, sp.logDir)
	if err != nil {
		return drivers.Bandwidth{}, fmt.Errorf("ssh: bandwidth of %s: list logs: %w", site.Domain, err)
	}
	files, err := parseLogListing(out, start)
	if err != nil {
		return drivers.Bandwidth{}, fmt.Errorf("ssh: bandwidth of %s: %w", site.Domain, err)
	}
	var total drivers.Bandwidth
	seen := map[string]bool{}
	for _, name := range files {
		bw, err := p.scanLog(ctx, s, path.Join(sp.logDir, name), start, end, seen)
		if errors.Is(err, drivers.ErrLogRefused) {
			p.cfg.Logger.WarnContext(ctx, "access log refused; its requests are not billed",
				"vps_id", site.Server.ID, "site_id", site.ID, "domain", site.Domain, "file", name, "error", err)
			total.RefusedFiles++
			continue
		}
		if err != nil {
			return drivers.Bandwidth{}, fmt.Errorf("ssh: bandwidth of %s: %s: %w", site.Domain, name, err)
		}
		total = total.Add(bw)
	}
	return total, nil
}

// parseLogListing returns, in name order, the access logs of a scriptListLogs
// listing that were written at or after start.
func parseLogListing(out string, start time.Time) ([]string, error) {
	var files []string
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		stamp, name, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("log listing line %q: want \"<mtime> <name>\"", line)
		}
		if !drivers.IsAccessLog(name) {
			continue
		}
		secs, err := strconv.ParseFloat(stamp, 64)
		if err != nil {
			return nil, fmt.Errorf("log listing line %q: mtime: %w", line, err)
		}
		// Whole seconds, rounded up, so a file written in start's second is read.
		if time.Unix(int64(secs)+1, 0).Before(start) {
			continue
		}
		files = append(files, name)
	}
	sort.Strings(files)
	return files, nil
}

// errAlreadyRead ends the reading of a log file whose inode was read already.
var errAlreadyRead = errors.New("file already read under another name")

// scanLog streams one remote log file into drivers.ScanAccessLog. seen holds
// the "<dev>:<ino>" of the files read so far in this scan.
func (p *Provisioner) scanLog(ctx context.Context, s *session, file string, start, end time.Time, seen map[string]bool) (drivers.Bandwidth, error) {
	pr, pw := io.Pipe()
	type scanned struct {
		bw  drivers.Bandwidth
		err error
	}
	done := make(chan scanned, 1)
	go func() {
		bw, err := drivers.ScanAccessLogFile(ctx, pr, file, start, end, p.cfg.MaxLogBytes)
		// Whatever ended the scan ends the remote command too.
		pr.CloseWithError(errors.Join(err, io.ErrClosedPipe))
		done <- scanned{bw: bw, err: err}
	}()
	head := &inodeHeader{next: pw, seen: seen}
	_, _, runErr := p.r.run(ctx, s.ep, scriptReadLog, []string{file}, runOpts{stdout: head})
	pw.Close()
	if head.refused != "" {
		<-done
		return drivers.Bandwidth{}, fmt.Errorf("%w: %s", drivers.ErrLogRefused, head.refused)
	}
	if errors.Is(runErr, errAlreadyRead) || (runErr == nil && !head.done) {
		// Read already, or gone since the listing: its lines are in another file.
		<-done
		return drivers.Bandwidth{}, nil
	}
	res := <-done
	switch {
	case runErr != nil && (res.err == nil || !errors.Is(runErr, res.err)):
		// The command failed on its own (unreachable, exit status): that is
		// the error, not what the cut-off stream did to the scan.
		return drivers.Bandwidth{}, fmt.Errorf("read: %w", runErr)
	case res.err != nil:
		return drivers.Bandwidth{}, res.err
	}
	return res.bw, nil
}

// inodeHeader takes the "<dev>:<ino>" line scriptReadLog prints first, fails
// with errAlreadyRead when seen holds it, and passes the rest to next. A
// "refused: <why>" line instead is kept in refused, and nothing is passed on.
type inodeHeader struct {
	next    io.Writer
	seen    map[string]bool
	line    []byte
	done    bool
	refused string
}

func (h *inodeHeader) Write(b []byte) (int, error) {
	n := len(b)
	if !h.done {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(h.line)+len(b) > 64 {
				return 0, errors.New("read log: no file identity line")
			}
			h.line = append(h.line, b...)
			return n, nil
		}
		h.line = append(h.line, b[:i]...)
		b = b[i+1:]
		h.done = true
		id := string(h.line)
		if why, ok := strings.CutPrefix(id, "refused: "); ok {
			h.refused = why
			return n, nil
		}
		if h.seen[id] {
			return 0, errAlreadyRead
		}
		h.seen[id] = true
	}
	if len(b) == 0 || h.refused != "" {
		return n, nil
	}
	if _, err := h.next.Write(b); err != nil {
		return 0, err
	}
	return n, nil
}

// sizeSum adds up the decimal sizes scriptDiskBytes prints, one per line,
// holding at most one partial line.
type sizeSum struct {
	total   int64
	partial []byte
	err     error
}

func (s *sizeSum) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 && s.err == nil {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			s.partial = append(s.partial, b...)
			if len(s.partial) > 32 {
				s.err = fmt.Errorf("size listing: line too long")
			}
			break
		}
		s.partial = append(s.partial, b[:i]...)
		b = b[i+1:]
		s.add()
	}
	if s.err != nil {
		return 0, s.err
	}
	return n, nil
}

func (s *sizeSum) add() {
	line := string(s.partial)
	s.partial = s.partial[:0]
	v, err := strconv.ParseInt(line, 10, 64)
	if err != nil || v < 0 {
		s.err = fmt.Errorf("size listing: %q is not a size", line)
		return
	}
	s.total += v
}

// result is the sum, or the first listing error.
func (s *sizeSum) result() (int64, error) {
	if s.err == nil && len(s.partial) > 0 {
		s.add()
	}
	return s.total, s.err
}
