package ssh

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/chomhq/chom/drivers"
)

// ProbeCommand is the one command the probe runs on a server. It is a constant
// built from no input at all, so nothing a tenant or an API caller sends can
// reach a remote shell through it. Each section starts with a marker line so
// the parser does not depend on the order or the line count of the tools'
// output, and LC_ALL=C keeps numbers free of locale formatting.
//
// df looks at "/": sites live under /var/www, which on the servers CHOM
// installs is on the root filesystem.
const ProbeCommand = "export LC_ALL=C; " +
	"echo '@@loadavg'; cat /proc/loadavg; " +
	"echo '@@nproc'; nproc; " +
	"echo '@@meminfo'; cat /proc/meminfo; " +
	"echo '@@df'; df -P -B1 /"

// maxOutputBytes bounds what the probe reads of ProbeCommand's output: a real
// answer is about 2 KiB, and a hostile server must not make a worker buffer
// without limit.
const maxOutputBytes = 64 << 10

// Metrics is what ParseOutput reads from ProbeCommand's output.
type Metrics struct {
	Load1, Load5, Load15             float64
	CPUs                             int
	MemTotalBytes, MemAvailableBytes uint64
	DiskTotalBytes, DiskFreeBytes    uint64
}

// apply copies m into r.
func (m Metrics) apply(r *drivers.HealthReport) {
	r.Load1, r.Load5, r.Load15 = m.Load1, m.Load5, m.Load15
	r.CPUs = m.CPUs
	r.MemTotalBytes, r.MemAvailableBytes = m.MemTotalBytes, m.MemAvailableBytes
	r.DiskTotalBytes, r.DiskFreeBytes = m.DiskTotalBytes, m.DiskFreeBytes
}

// ParseOutput reads the output of ProbeCommand. Every section must be present
// and well formed; otherwise the error names each problem (the server answered,
// so this is a plain error, not drivers.ErrUnreachable). Unknown lines and
// sections are ignored. MemAvailable falls back to MemFree+Buffers+Cached on
// kernels older than 3.14, which lack it.
func ParseOutput(out string) (Metrics, error) {
	sections := map[string][]string{}
	current := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), maxOutputBytes)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutPrefix(line, "@@"); ok {
			current = name
			sections[current] = sections[current][:0:0]
			continue
		}
		if current != "" && line != "" {
			sections[current] = append(sections[current], line)
		}
	}
	if err := sc.Err(); err != nil {
		return Metrics{}, fmt.Errorf("read probe output: %w", err)
	}

	var m Metrics
	var errs []error
	if err := parseLoadavg(sections["loadavg"], &m); err != nil {
		errs = append(errs, fmt.Errorf("loadavg: %w", err))
	}
	if err := parseNproc(sections["nproc"], &m); err != nil {
		errs = append(errs, fmt.Errorf("nproc: %w", err))
	}
	if err := parseMeminfo(sections["meminfo"], &m); err != nil {
		errs = append(errs, fmt.Errorf("meminfo: %w", err))
	}
	if err := parseDF(sections["df"], &m); err != nil {
		errs = append(errs, fmt.Errorf("df: %w", err))
	}
	if len(errs) > 0 {
		return Metrics{}, fmt.Errorf("parse probe output: %w", errors.Join(errs...))
	}
	return m, nil
}

var errMissing = errors.New("section missing")

// parseLoadavg reads "0.52 0.58 0.59 1/389 12345".
func parseLoadavg(lines []string, m *Metrics) error {
	if len(lines) == 0 {
		return errMissing
	}
	f := strings.Fields(lines[0])
	if len(f) < 3 {
		return fmt.Errorf("want 3 load averages, got %q", truncate(lines[0]))
	}
	var loads [3]float64
	for i := range loads {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("bad load average %q", truncate(f[i]))
		}
		loads[i] = v
	}
	m.Load1, m.Load5, m.Load15 = loads[0], loads[1], loads[2]
	return nil
}

// parseNproc reads "4".
func parseNproc(lines []string, m *Metrics) error {
	if len(lines) == 0 {
		return errMissing
	}
	n, err := strconv.Atoi(lines[0])
	if err != nil || n < 1 {
		return fmt.Errorf("bad processor count %q", truncate(lines[0]))
	}
	m.CPUs = n
	return nil
}

// parseMeminfo reads "MemTotal:       24684084 kB" lines.
func parseMeminfo(lines []string, m *Metrics) error {
	if len(lines) == 0 {
		return errMissing
	}
	vals := map[string]uint64{}
	for _, line := range lines {
		key, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		mult := uint64(1)
		if len(f) > 1 && strings.EqualFold(f[1], "kB") {
			mult = 1024
		}
		vals[key] = v * mult
	}
	total, ok := vals["MemTotal"]
	if !ok || total == 0 {
		return errors.New("no MemTotal")
	}
	avail, ok := vals["MemAvailable"]
	if !ok {
		free, ok := vals["MemFree"]
		if !ok {
			return errors.New("neither MemAvailable nor MemFree")
		}
		avail = free + vals["Buffers"] + vals["Cached"]
	}
	m.MemTotalBytes, m.MemAvailableBytes = total, min(avail, total)
	return nil
}

// parseDF reads the POSIX output of df -P -B1: a header, then
// "Filesystem 1-blocks Used Available Capacity Mounted-on". A long device
// name never wraps with -P.
func parseDF(lines []string, m *Metrics) error {
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) < 6 || f[0] == "Filesystem" {
			continue
		}
		total, err1 := strconv.ParseUint(f[1], 10, 64)
		free, err2 := strconv.ParseUint(f[3], 10, 64)
		if err1 != nil || err2 != nil || total == 0 {
			return fmt.Errorf("bad line %q", truncate(line))
		}
		m.DiskTotalBytes, m.DiskFreeBytes = total, min(free, total)
		return nil
	}
	return errMissing
}

// truncate shortens a value quoted in an error, so garbage from a server cannot
// flood a log line.
func truncate(s string) string {
	const n = 40
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
