package bench

import (
	"errors"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// writeCapacityPlot draws the capacity curves as an SVG file: lateness p50
// (dashed) and p99 (solid) in milliseconds against the rate, both on log
// scales, a colour per store, the goal as a grey line, and the legend to
// the right of the plot. A lateness that did not arrive within the wait is
// drawn at the wait, a lower bound.
func writeCapacityPlot(path string, curves []capCurve, goal time.Duration) error {
	p := plot.New()
	p.Title.Text = "Expiry lateness at a watcher against a sustained expiry rate"
	p.X.Label.Text = "expirations a second"
	p.Y.Label.Text = "lateness, ms (p99 solid, p50 dashed)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true

	const floorMs = 0.01 // the least lateness drawn: a log scale has no zero
	toMs := func(l lateResult, d time.Duration) float64 {
		if d == never {
			d = l.waited
		}
		return max(float64(d)/1e6, floorMs)
	}
	var rates []float64
	lo, hi := math.Inf(1), math.Inf(-1)
	n := 0
	for i, c := range curves {
		if len(c.steps) == 0 {
			continue
		}
		for _, q := range []struct {
			name string
			at   func(capStep) float64
			dash []vg.Length
		}{
			{"p99", func(s capStep) float64 { return toMs(s.res, s.res.late.P99) }, nil},
			{"p50", func(s capStep) float64 { return toMs(s.res, s.res.late.P50) }, []vg.Length{vg.Points(4), vg.Points(3)}},
		} {
			xys := make(plotter.XYs, len(c.steps))
			for j, s := range c.steps {
				xys[j] = plotter.XY{X: float64(s.rate), Y: q.at(s)}
				lo, hi = min(lo, xys[j].Y), max(hi, xys[j].Y)
				rates = append(rates, float64(s.rate))
			}
			line, points, err := plotter.NewLinePoints(xys)
			if err != nil {
				return err
			}
			line.Color, line.Dashes, line.Width = plotutil.Color(i), q.dash, vg.Points(1.5)
			points.Color, points.Shape = plotutil.Color(i), plotutil.Shape(i)
			p.Add(line, points)
			legend.Add(c.store+" "+q.name, line, points)
			n++
		}
	}
	if n == 0 {
		return errors.New("no step was measured: nothing to draw")
	}
	g := float64(goal) / 1e6
	lo, hi = min(lo, g), max(hi, g)
	minRate, maxRate := rates[0], rates[0]
	for _, r := range rates {
		minRate, maxRate = min(minRate, r), max(maxRate, r)
	}
	p.X.Min, p.X.Max = minRate/1.2, maxRate*1.2
	goalLine, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: g}, {X: p.X.Max, Y: g}})
	if err != nil {
		return err
	}
	goalLine.Color, goalLine.Width = color.Gray{Y: 150}, vg.Points(1)
	p.Add(goalLine)
	legend.Add("goal: p99 ≤ "+ms(goal), goalLine)
	p.Y.Min, p.Y.Max = lo/1.5, hi*1.5
	p.X.Tick.Marker = rateTicks(rates)
	p.Y.Tick.Marker = plot.TickerFunc(msTicks)
	p.Add(plotter.NewGrid())

	const w, h, legendW = 24 * vg.Centimeter, 12 * vg.Centimeter, 6 * vg.Centimeter
	c := vgsvg.New(w, h)
	dc := draw.New(c)
	p.Draw(draw.Crop(dc, 0, -legendW, 0, 0))
	legend.Draw(draw.Crop(dc, w-legendW+vg.Millimeter*3, 0, 0, -vg.Centimeter))

	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// rateTicks labels the x axis at the rates measured.
func rateTicks(rates []float64) plot.ConstantTicks {
	var ts plot.ConstantTicks
	seen := map[float64]bool{}
	for _, r := range rates {
		if !seen[r] {
			seen[r] = true
			label := strconv.FormatFloat(r, 'f', -1, 64)
			if r >= 1000 && math.Mod(r, 1000) == 0 {
				label = strconv.FormatFloat(r/1000, 'f', -1, 64) + "k"
			}
			ts = append(ts, plot.Tick{Value: r, Label: label})
		}
	}
	return ts
}

// msTicks labels a log axis of milliseconds at 1, 2 and 5 of each decade,
// unlabelled ticks at the other digits.
func msTicks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for dec := math.Pow(10, math.Floor(math.Log10(lo))); dec <= hi; dec *= 10 {
		for d := 1.0; d < 10; d++ {
			v := d * dec
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if d == 1 || d == 2 || d == 5 {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			ts = append(ts, t)
		}
	}
	return ts
}
