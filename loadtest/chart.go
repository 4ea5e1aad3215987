package loadtest

import (
	"fmt"
	"image/color"
	"os"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	colP50    = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colP95    = color.RGBA{R: 255, G: 127, B: 14, A: 255}
	colP99    = color.RGBA{R: 214, G: 39, B: 40, A: 255}
	colRPS    = color.RGBA{R: 44, G: 160, B: 44, A: 255}
	colErr    = color.RGBA{R: 214, G: 39, B: 40, A: 255}
	colUsers  = color.RGBA{R: 148, G: 103, B: 189, A: 255}
	colHeap   = color.RGBA{R: 127, G: 127, B: 127, A: 255}
	colStages = color.RGBA{R: 170, G: 170, B: 170, A: 255}
	colMark   = color.NRGBA{R: 255, G: 165, B: 0, A: 70} // translucent: the lines show through
	colMarkTx = color.RGBA{R: 160, G: 82, B: 45, A: 255}
)

// chartRow is one row of the chart: a run, its title and the marks that
// fall in it.
type chartRow struct {
	title string
	r     *ScenarioResult
	marks []MarkFigures
}

// WriteChart draws the per-second series of every scenario (and of the accept
// runs) as a PNG at path: one row per run, with latency percentiles, throughput
// and errors, and users (and the Go heap) over time; dashed lines mark stages.
func (r *Report) WriteChart(path string) error {
	var rows []chartRow
	marks := r.FigureMarks()
	for _, s := range r.Scenarios {
		row := chartRow{title: fmt.Sprintf("%s (%s)", s.Scenario.Name, shortStages(s.Scenario)), r: s}
		for _, m := range marks {
			if m.Scenario == s.Scenario.Name {
				row.marks = append(row.marks, m)
			}
		}
		rows = append(rows, row)
	}
	if a := r.Accept; a != nil {
		if a.CHOM != nil {
			rows = append(rows, chartRow{title: fmt.Sprintf("accept: CHOM POST /sites (%d users)", a.Users), r: a.CHOM})
		}
		if a.Baseline != nil {
			rows = append(rows, chartRow{title: fmt.Sprintf("accept: naive baseline (%d users)", a.Users), r: a.Baseline})
		}
	}
	if len(rows) == 0 {
		return nil
	}
	plots := make([][]*plot.Plot, len(rows))
	for i, row := range rows {
		var err error
		if plots[i], err = rowPlots(row); err != nil {
			return fmt.Errorf("loadtest: chart %s: %w", row.title, err)
		}
	}
	const rowHeight = 3.2 * vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(16*vg.Inch, rowHeight*vg.Length(len(rows))), vgimg.UseDPI(100))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(rows), Cols: 3, PadX: vg.Millimeter * 6, PadY: vg.Millimeter * 8,
		PadTop: vg.Millimeter * 3, PadBottom: vg.Millimeter * 3, PadLeft: vg.Millimeter * 3, PadRight: vg.Millimeter * 3}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		for j := range plots[i] {
			plots[i][j].Draw(canvases[i][j])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("loadtest: write chart: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("loadtest: write chart: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("loadtest: write chart: %w", err)
	}
	return nil
}

// rowPlots returns the three plots of one run.
func rowPlots(row chartRow) ([]*plot.Plot, error) {
	s := row.r.Series
	end := max(int(row.r.Seconds), 1) // the last, partial second is left out
	lat, rps, users := plot.New(), plot.New(), plot.New()
	lat.Title.Text = row.title + " — latency (held long polls excluded)"
	lat.Y.Label.Text = "ms"
	rps.Title.Text = "throughput"
	rps.Y.Label.Text = "requests/s"
	users.Title.Text = "virtual users and Go heap"
	users.Y.Label.Text = "users · MiB"
	for _, p := range []*plot.Plot{lat, rps, users} {
		p.Y.Tick.Marker = plainTicks{}
		p.X.Label.Text = "seconds"
		p.X.Min, p.Y.Min = 0, 0
		p.Legend.Top = true
		p.Add(plotter.NewGrid())
	}
	series := func(p *plot.Plot, name string, c color.Color, dashed bool, y func(Second) (float64, bool)) (float64, error) {
		pts := make(plotter.XYs, 0, len(s))
		top := 0.0
		for _, x := range s {
			if x.T >= end {
				break // the requests still in flight when the users stopped
			}
			v, ok := y(x)
			if !ok {
				continue
			}
			pts = append(pts, plotter.XY{X: float64(x.T), Y: v})
			top = max(top, v)
		}
		if len(pts) == 0 {
			return 0, nil
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return 0, err
		}
		l.Color = c
		l.Width = vg.Points(1.2)
		if dashed {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l)
		p.Legend.Add(name, l)
		return top, nil
	}
	type line struct {
		p      *plot.Plot
		name   string
		c      color.Color
		dashed bool
		y      func(Second) (float64, bool)
	}
	hasLat := func(x Second) bool { return x.Requests > 0 && x.P99 > 0 }
	lines := []line{
		{lat, "p50", colP50, false, func(x Second) (float64, bool) { return x.P50, hasLat(x) }},
		{lat, "p95", colP95, false, func(x Second) (float64, bool) { return x.P95, hasLat(x) }},
		{lat, "p99", colP99, false, func(x Second) (float64, bool) { return x.P99, hasLat(x) }},
		{rps, "requests/s", colRPS, false, func(x Second) (float64, bool) { return float64(x.Requests), true }},
		{rps, "errors/s", colErr, true, func(x Second) (float64, bool) { return float64(x.Errors), true }},
		{users, "users", colUsers, false, func(x Second) (float64, bool) { return float64(x.Users), true }},
		{users, "heap MiB", colHeap, true, func(x Second) (float64, bool) { return x.HeapMB, x.HeapMB > 0 }},
	}
	tops := map[*plot.Plot]float64{}
	for _, l := range lines {
		top, err := series(l.p, l.name, l.c, l.dashed, l.y)
		if err != nil {
			return nil, err
		}
		tops[l.p] = max(tops[l.p], top)
	}
	for _, p := range []*plot.Plot{lat, rps, users} {
		top := max(tops[p]*1.3, 1) // room for the legend
		p.Y.Max = top
		p.X.Max = max(float64(end), 1)
		for i, st := range row.r.Stages {
			if i == 0 {
				continue
			}
			l, err := plotter.NewLine(plotter.XYs{{X: st.StartSecond, Y: 0}, {X: st.StartSecond, Y: top}})
			if err != nil {
				return nil, err
			}
			l.Color = colStages
			l.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
			p.Add(l)
		}
		if err := addMarks(p, row.marks, top); err != nil {
			return nil, err
		}
	}
	return []*plot.Plot{lat, rps, users}, nil
}

// addMarks shades each mark's span on p (a thin band for an instant) and
// writes its name, numbered from the top so neighbouring names do not
// overlap.
func addMarks(p *plot.Plot, marks []MarkFigures, top float64) error {
	for i, m := range marks {
		to := max(m.ToSecond, m.FromSecond+0.5)
		band, err := plotter.NewPolygon(plotter.XYs{{X: m.FromSecond, Y: 0}, {X: to, Y: 0}, {X: to, Y: top}, {X: m.FromSecond, Y: top}})
		if err != nil {
			return err
		}
		band.Color = colMark
		band.LineStyle.Width = 0
		band.LineStyle.Color = color.Transparent
		p.Add(band)
		y := top * (0.95 - 0.07*float64(i%4))
		labels, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: m.FromSecond, Y: y}}, Labels: []string{m.Mark.Name}})
		if err != nil {
			return err
		}
		for j := range labels.TextStyle {
			labels.TextStyle[j].Color = colMarkTx
			labels.TextStyle[j].Font.Size = vg.Points(7)
		}
		p.Add(labels)
	}
	return nil
}

// plainTicks are gonum's default ticks labelled without trailing zeros
// ("2500", not "2500.00").
type plainTicks struct{}

// Ticks returns the default ticks between lo and hi with plain labels.
func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(ts[i].Value, 'f', -1, 64)
		}
	}
	return ts
}

// shortStages is "10→50→100 users", cut to its ends when it has many steps.
func shortStages(sc Scenario) string {
	full := stagesText(sc)
	parts := strings.Split(full, "→")
	if len(parts) <= 4 {
		return full + " users"
	}
	return fmt.Sprintf("%s→…→%s users, %d steps", parts[0], parts[len(parts)-1], len(parts))
}
