package loadtest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Mark is something that happened to the system under load, shown on the
// report's time axis: a fault from the moment it was injected (From) to the
// moment the part came back (To; zero for an instant). A fault script writes
// one JSON line per mark, for example
//
//	{"name":"kafka broker","from":"2026-12-05T04:30:10Z","to":"2026-12-05T04:30:15Z"}
//
// and chom-loadtest --marks reads them when it writes its report.
type Mark struct {
	Name string    `json:"name"`
	From time.Time `json:"from"`
	To   time.Time `json:"to,omitzero"`
}

// ReadMarks reads marks, one JSON object per line; blank lines are skipped. It
// names the line of the first malformed mark.
func ReadMarks(r io.Reader) ([]Mark, error) {
	var out []Mark
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var m Mark
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("loadtest: mark on line %d: %w", n, err)
		}
		switch {
		case m.Name == "":
			return nil, fmt.Errorf("loadtest: mark on line %d: no name", n)
		case m.From.IsZero():
			return nil, fmt.Errorf("loadtest: mark %q on line %d: no from time", m.Name, n)
		case !m.To.IsZero() && m.To.Before(m.From):
			return nil, fmt.Errorf("loadtest: mark %q on line %d: to %s is before from %s", m.Name, n,
				m.To.Format(time.RFC3339Nano), m.From.Format(time.RFC3339Nano))
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("loadtest: read marks: %w", err)
	}
	return out, nil
}

// WriteMark appends m to w as one JSON line, the form ReadMarks reads.
func WriteMark(w io.Writer, m Mark) error {
	if m.Name == "" || m.From.IsZero() {
		return errors.New("loadtest: a mark needs a name and a from time")
	}
	line, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("loadtest: encode mark: %w", err)
	}
	if _, err := w.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("loadtest: write mark: %w", err)
	}
	return nil
}

// MarkFigures is how the load fared around one mark, in the run that spans it.
type MarkFigures struct {
	Mark Mark `json:"mark"`
	// Scenario is the run the mark fell in.
	Scenario string `json:"scenario"`
	// FromSecond and ToSecond are the mark's place on that run's time axis.
	FromSecond float64 `json:"from_second"`
	ToSecond   float64 `json:"to_second"`
	// During are the requests of the seconds from From to To (at least one
	// second); After those of the ten seconds after To.
	During WindowFigures `json:"during"`
	After  WindowFigures `json:"after"`
}

// WindowFigures are a window's requests, errors and worst per-second p99.
type WindowFigures struct {
	Requests uint64  `json:"requests"`
	Errors   uint64  `json:"errors"`
	MaxP99   float64 `json:"max_p99_ms"`
}

// markAfter is the window after a mark that MarkFigures.After covers.
const markAfter = 10

// FigureMarks places each mark in the scenario run it falls in and sums the
// load's figures during and after it; marks outside every run are left out.
func (r *Report) FigureMarks() []MarkFigures {
	var out []MarkFigures
	for _, m := range r.Marks {
		for _, s := range r.Scenarios {
			from := m.From.Sub(s.Started).Seconds()
			if from < 0 || from > s.Seconds {
				continue
			}
			to := from
			if !m.To.IsZero() {
				to = m.To.Sub(s.Started).Seconds()
			}
			f := MarkFigures{Mark: m, Scenario: s.Scenario.Name, FromSecond: from, ToSecond: to}
			f.During = window(s.Series, int(from), max(int(to), int(from)+1))
			f.After = window(s.Series, max(int(to), int(from)+1), max(int(to), int(from)+1)+markAfter)
			out = append(out, f)
			break
		}
	}
	return out
}

// window sums the seconds in [from, to) of a series.
func window(series []Second, from, to int) WindowFigures {
	var w WindowFigures
	for _, x := range series {
		if x.T < from || x.T >= to {
			continue
		}
		w.Requests += x.Requests
		w.Errors += x.Errors
		w.MaxP99 = max(w.MaxP99, x.P99)
	}
	return w
}
