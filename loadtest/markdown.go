package loadtest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

func fmtMS(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

func fmtPct(rate float64) string {
	switch {
	case rate == 0:
		return "0 %"
	case rate < 0.0001:
		return fmt.Sprintf("%.4f %%", 100*rate)
	}
	return fmt.Sprintf("%.2f %%", 100*rate)
}

func mark(ok bool) string {
	if ok {
		return "✅"
	}
	return "❌"
}

func stagesText(sc Scenario) string {
	var b strings.Builder
	for i, st := range sc.Stages {
		if i > 0 {
			b.WriteString("→")
		}
		if i > 0 && sc.Stages[i-1].Users == st.Users {
			continue
		}
		fmt.Fprintf(&b, "%d", st.Users)
	}
	return strings.TrimSuffix(b.String(), "→")
}

// Verdict is a scenario's figures checked against the old report's targets.
type Verdict struct {
	P95, P99, Throughput, Errors bool
	// Users is nil when the scenario never ran Targets.Users users.
	Users *bool
	// UsersStage is the first stage with at least Targets.Users users.
	UsersStage *StageResult
}

// Check compares r with Targets. The users target holds when the first stage
// with at least Targets.Users users meets the latency and error targets.
func Check(r *ScenarioResult) Verdict {
	f := r.Overall
	v := Verdict{
		P95:        f.LatencyMS.P95 < ms(Targets.P95),
		P99:        f.LatencyMS.P99 < ms(Targets.P99),
		Throughput: f.Throughput > Targets.Throughput,
		Errors:     f.ErrorRate < Targets.ErrorRate,
	}
	for i := range r.Stages {
		st := &r.Stages[i]
		if st.Stage.Users >= Targets.Users {
			g := st.Figures
			ok := g.LatencyMS.P95 < ms(Targets.P95) && g.LatencyMS.P99 < ms(Targets.P99) && g.ErrorRate < Targets.ErrorRate
			v.Users, v.UsersStage = &ok, st
			break
		}
	}
	return v
}

// Markdown renders the report: a summary table against the old report's
// targets, the accept comparison, then each scenario's stages, routes, errors
// and ledger.
func (r *Report) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# CHOM load test — %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"))
	m := r.Machine
	w("- **Target**: %s\n", r.Target)
	w("- **Scale**: %g (every stage duration × %g, at least %s)\n", r.Scale, r.Scale, MinStageDuration)
	w("- **Machine**: %d CPUs (nproc), GOMAXPROCS %d, %.1f GiB memory, %s, %s, %s\n",
		m.NumCPU, m.GOMAXPROCS, float64(m.MemoryMB)/1024, orDash(m.CPUModel), m.OS, m.GoVersion)
	if m.PostgreSQL != "" || m.Redis != "" {
		w("- **Servers**: PostgreSQL %s, Redis %s (same machine)\n", orDash(m.PostgreSQL), orDash(m.Redis))
	}
	w("- **Load**: closed-loop virtual users, no think time unless stated; each runs the user mix " +
		"(POST /sites → wait for the operation → GET /sites → GET /sites/{id} → backup when available → " +
		"DELETE /sites/{id} → wait)\n\n")

	w("## Against the old report's targets\n\n")
	w("| scenario | users | requests | p50 | p95 (< 500 ms) | p99 (< 1 s) | p99.9 | throughput (> 100 req/s) | errors (< 0.1 %%) | %d users | operations completed | operation p95 |\n", Targets.Users)
	w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |\n")
	for _, s := range r.Scenarios {
		f, v := s.Overall, Check(s)
		users := "—"
		if v.Users != nil {
			users = fmt.Sprintf("%s p95 %s, %s errors", mark(*v.Users), fmtMS(v.UsersStage.Figures.LatencyMS.P95), fmtPct(v.UsersStage.Figures.ErrorRate))
		}
		opP95 := "—"
		if s.Operations.Count > 0 {
			opP95 = fmtMS(s.Operations.MS.P95)
		}
		w("| %s | %s | %d | %s | %s %s | %s %s | %s | %.0f req/s %s | %s %s | %s | %s | %s |\n",
			s.Scenario.Name, stagesText(s.Scenario), f.Requests, fmtMS(f.LatencyMS.P50),
			fmtMS(f.LatencyMS.P95), mark(v.P95), fmtMS(f.LatencyMS.P99), mark(v.P99), fmtMS(f.LatencyMS.P999),
			f.Throughput, mark(v.Throughput), fmtPct(f.ErrorRate), mark(v.Errors), users, ledgerText(s.Ledger), opP95)
	}
	w("\nLatency percentiles leave out the long polls (`%s`), which the server holds until the operation changes; "+
		"they count in requests, throughput and errors. Throughput is every request answered, per second of the scenario. "+
		"Operation p95 is the time from a 202 to the poll that saw the operation finished: how long users wait for the work.\n\n", RouteWaitOp)
	for _, s := range r.Scenarios {
		if bp := s.Breaking; bp != nil {
			if bp.Reached {
				w("- **%s breaking point: %d users** (%s; last good step %d users; best %.0f req/s). Failure mode: %s.\n",
					s.Scenario.Name, bp.Users, bp.Reason, bp.LastGoodUsers, bp.MaxThroughput, bp.FailureMode)
			} else {
				w("- **%s breaking point: not reached** up to %d users (p99 ≤ 1 s and errors ≤ 1 %% at every step; best %.0f req/s)",
					s.Scenario.Name, bp.MaxUsersRun, bp.MaxThroughput)
				if n := len(s.Stages); n > 0 && s.Stages[n-1].Operations.Count > 0 {
					o := s.Stages[n-1].Operations.MS
					w("; at %d users operations took p50 %s, p95 %s from 202 to finished", s.Stages[n-1].Stage.Users, fmtMS(o.P50), fmtMS(o.P95))
				}
				w(".\n")
			}
		}
		if rc := s.Recovery; rc != nil {
			if rc.Recovered {
				w("- **%s recovery**: p95 back under %s (1.5 × the %s before the spike) %.0f s after %d users ended (spike p95 %s).\n",
					s.Scenario.Name, fmtMS(rc.ThresholdMS), fmtMS(rc.BeforeP95MS), rc.Seconds, rc.PeakUsers, fmtMS(rc.PeakP95MS))
			} else {
				w("- **%s recovery**: p95 not back under %s before the scenario ended.\n", s.Scenario.Name, fmtMS(rc.ThresholdMS))
			}
		}
	}
	w("\n")

	if a := r.Accept; a != nil {
		w("## Accept path: CHOM against the naive baseline\n\n")
		w("%d users each sending only `POST /sites` (a unique domain and Idempotency-Key each), one run after the other, "+
			"on the same PostgreSQL and Redis. The baseline is a bare handler: bind + validate + one INSERT + one enqueue, "+
			"no auth, no idempotency, no site row.\n\n", a.Users)
		w("| run | seconds | accepted | accepted/s | p50 | p95 | p99 | p99.9 | errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, x := range []struct {
			name string
			r    *ScenarioResult
		}{{"CHOM", a.CHOM}, {"baseline", a.Baseline}} {
			if x.r == nil {
				w("| %s | — | — | — | — | — | — | — | not run |\n", x.name)
				continue
			}
			f := x.r.Overall
			w("| %s | %.1f | %d | %.0f | %s | %s | %s | %s | %s |\n", x.name, x.r.Seconds, x.r.Ledger.Accepted,
				AcceptedPerSecond(x.r), fmtMS(f.LatencyMS.P50), fmtMS(f.LatencyMS.P95), fmtMS(f.LatencyMS.P99),
				fmtMS(f.LatencyMS.P999), fmtPct(f.ErrorRate))
		}
		if a.Ratio > 0 {
			w("\n**CHOM / baseline accept throughput: %.2f×**\n", a.Ratio)
		}
		for _, n := range a.Notes {
			w("\n- %s", n)
		}
		w("\n\n")
	}

	for _, s := range r.Scenarios {
		r.scenarioMarkdown(&b, s)
	}
	if marks := r.FigureMarks(); len(marks) > 0 {
		w("## Faults\n\n")
		w("Each fault's time on its run's axis (shaded on the chart), and the load's requests, errors and worst per-second p99 while it lasted and in the %d s after it.\n\n", markAfter)
		w("| fault | run | from (s) | to (s) | requests during | errors during | p99 during (max/s) | requests after | errors after | p99 after (max/s) |\n")
		w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, m := range marks {
			w("| %s | %s | %.1f | %.1f | %d | %d | %s | %d | %d | %s |\n", m.Mark.Name, m.Scenario, m.FromSecond, m.ToSecond,
				m.During.Requests, m.During.Errors, fmtMS(m.During.MaxP99), m.After.Requests, m.After.Errors, fmtMS(m.After.MaxP99))
		}
		w("\n")
	}
	if len(r.Notes) > 0 {
		w("## Notes\n\n")
		for _, n := range r.Notes {
			w("- %s\n", n)
		}
	}
	return b.String()
}

func (r *Report) scenarioMarkdown(b *strings.Builder, s *ScenarioResult) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## %s — %s\n\n", s.Scenario.Name, s.Scenario.Purpose)
	w("%.1f s, %d requests, %.0f req/s; process CPU %.1f s (%.0f %% of one core); Go heap %.0f → %.0f MiB.",
		s.Seconds, s.Overall.Requests, s.Overall.Throughput, s.CPUSeconds, 100*s.CPUSeconds/max(s.Seconds, 1e-9),
		s.HeapMBStart, s.HeapMBEnd)
	if s.StoppedEarly != "" {
		w(" Stopped early: %s.", s.StoppedEarly)
	}
	if o := s.Operations; o.Count > 0 {
		w(" %d operations took p50 %s, p95 %s, p99 %s from their 202 to the poll that saw them finished.",
			o.Count, fmtMS(o.MS.P50), fmtMS(o.MS.P95), fmtMS(o.MS.P99))
	}
	w("\n\n| stage | users | seconds | requests | req/s | p50 | p95 | p99 | p99.9 | errors | operation p50 / p95 |\n")
	w("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |\n")
	for _, st := range s.Stages {
		f := st.Figures
		w("| %d | %d | %.1f | %d | %.0f | %s | %s | %s | %s | %s | %s |\n", st.Index+1, st.Stage.Users, st.Seconds, f.Requests,
			f.Throughput, fmtMS(f.LatencyMS.P50), fmtMS(f.LatencyMS.P95), fmtMS(f.LatencyMS.P99), fmtMS(f.LatencyMS.P999),
			errText(f), opText(st.Operations))
	}
	w("\n| route | requests | req/s | p50 | p95 | p99 | p99.9 | errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, rt := range s.Routes {
		f := rt.Figures
		name := "`" + rt.Route + "`"
		if rt.Held {
			name += " (held)"
		}
		w("| %s | %d | %.0f | %s | %s | %s | %s | %s |\n", name, f.Requests, f.Throughput, fmtMS(f.LatencyMS.P50),
			fmtMS(f.LatencyMS.P95), fmtMS(f.LatencyMS.P99), fmtMS(f.LatencyMS.P999), errText(f))
	}
	e := s.Overall.Errors
	w("\nErrors by class: 4xx %d%s, 5xx %d%s, timeouts %d, connection errors %d.\n", e.Client4xx(), byStatus(e.Status4xx),
		e.Server5xx(), byStatus(e.Status5xx), e.Timeouts, e.Connection)
	for _, m := range s.TopErrors {
		w("- ×%d %s\n", m.Count, m.Message)
	}
	l := s.Ledger
	if l.Tracked {
		w("\nLedger: %d operations accepted (202), %d seen finished through the API (%s), %d of them by the final check (%.1f s) — **%s**.\n",
			l.Accepted, l.Completed, statusText(l.ByStatus), l.CheckedAtEnd, l.DrainSeconds, map[bool]string{true: "OK", false: "MISMATCH"}[l.OK()])
		if len(l.Unfinished) > 0 {
			w("Unfinished: %s\n", strings.Join(l.Unfinished, ", "))
		}
	}
	if s.Backup != "" {
		w("\nBackup step: %s.\n", s.Backup)
	}
	w("\n")
}

func errText(f Figures) string {
	if f.Errors.Total == 0 {
		return "0"
	}
	return fmt.Sprintf("%s (%s)", fmtPct(f.ErrorRate), f.Errors.String())
}

func opText(o OperationTimes) string {
	if o.Count == 0 {
		return "—"
	}
	return fmtMS(o.MS.P50) + " / " + fmtMS(o.MS.P95)
}

func byStatus(m map[string]uint64) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func statusText(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func ledgerText(l Ledger) string {
	if !l.Tracked {
		return "—"
	}
	return fmt.Sprintf("%d / %d %s", l.Completed, l.Accepted, mark(l.OK()))
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
