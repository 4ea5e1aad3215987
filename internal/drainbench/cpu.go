package drainbench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is the kernel's USER_HZ: /proc/<pid>/stat counts CPU time in
// these. Linux has fixed it at 100 on every architecture Go supports.
const clockTicks = 100

// CPUSample is the CPU time each process on the machine had used when it was
// read, by PID, with the process's command name.
type CPUSample map[int]ProcessCPU

// ProcessCPU is one process's name and the CPU time it had used, user and
// system, in clock ticks.
type ProcessCPU struct {
	Name  string
	Ticks int64
}

// SampleCPU reads /proc/<pid>/stat of every process. A process that ends
// while it is read is left out.
func SampleCPU() (CPUSample, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	s := CPUSample{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // ended meanwhile
		}
		if p, ok := parseStat(b); ok {
			s[pid] = p
		}
	}
	return s, nil
}

// parseStat reads the command name and utime+stime out of a /proc/<pid>/stat
// line: "pid (comm) state ppid ... utime stime ..." where comm may hold
// spaces and parentheses, so the fields are counted from the last ')'.
func parseStat(b []byte) (ProcessCPU, bool) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return ProcessCPU{}, false
	}
	f := strings.Fields(string(b[end+1:]))
	// f[0] is the state (field 3); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return ProcessCPU{}, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return ProcessCPU{}, false
	}
	return ProcessCPU{Name: string(b[open+1 : end]), Ticks: u + st}, true
}

// CPUSplit is the CPU time, in seconds, the machine spent between two
// samples, by where it went.
type CPUSplit map[string]float64

// Split sums the CPU time every process used from before to s, by group:
// group names a process (by PID and command name) and "" leaves it out. A
// process started after before counts from zero; one that ended before s
// was taken is not counted (take s while the processes of interest run).
func (s CPUSample) Split(before CPUSample, group func(pid int, name string) string) CPUSplit {
	out := CPUSplit{}
	for pid, p := range s {
		g := group(pid, p.Name)
		if g == "" {
			continue
		}
		d := p.Ticks
		if b, ok := before[pid]; ok && b.Ticks <= p.Ticks {
			// The same process (a kernel worker renames itself as it
			// runs different work, so the name is no test; a PID reused
			// within a pass is too rare to matter, and one whose clock
			// went back is counted from zero).
			d -= b.Ticks
		}
		out[g] += float64(d) / clockTicks
	}
	return out
}

// Total is the CPU time summed over the groups.
func (c CPUSplit) Total() float64 {
	var t float64
	for _, v := range c {
		t += v
	}
	return t
}
