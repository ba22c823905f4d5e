package bench

import (
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestWriteCapacityPlot: the capacity plot, drawn from fixed curves, is a
// well-formed SVG document with a line for each store's p99 and p50, each
// through its points, and the goal, all named in the legend.
func TestWriteCapacityPlot(t *testing.T) {
	step := func(rate int, p50, p99 time.Duration) capStep {
		return capStep{rate: rate, res: lateResult{want: 10, got: 10, late: dist{N: 10, P50: p50, P99: p99}, waited: 5 * time.Second}}
	}
	curves := []capCurve{
		{store: "1 Redis", steps: []capStep{step(1000, time.Millisecond, 4*time.Millisecond), step(2000, 2*time.Millisecond, 9*time.Millisecond), step(4000, 30*time.Millisecond, 400*time.Millisecond)}},
		{store: "cluster 3+3", steps: []capStep{step(1000, 5*time.Millisecond, 20*time.Millisecond), step(2000, 90*time.Millisecond, never)}},
		{store: "empty"}, // no steps: no line
	}
	path := filepath.Join(t.TempDir(), "curve.svg")
	if p := os.Getenv("CAPACITY_PLOT_OUT"); p != "" {
		path = p
	}
	if err := writeCapacityPlot(path, curves, capGoal); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The SVG's text and its paths (d and style).
	var texts []string
	type svgPath struct{ d, style string }
	var paths []svgPath
	flipped := false // whether a group flips the y axis
	root := ""
	dec := xml.NewDecoder(f)
	inText := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = el.Name.Local
			}
			inText = el.Name.Local == "text"
			for _, a := range el.Attr {
				if el.Name.Local == "g" && a.Name.Local == "transform" && strings.HasPrefix(a.Value, "scale(1, -1)") {
					flipped = true
				}
			}
			if el.Name.Local == "path" {
				var p svgPath
				for _, a := range el.Attr {
					switch a.Name.Local {
					case "d":
						p.d = a.Value
					case "style":
						p.style = a.Value
					}
				}
				paths = append(paths, p)
			}
		case xml.CharData:
			if inText {
				texts = append(texts, string(el))
			}
		case xml.EndElement:
			inText = false
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	all := strings.Join(texts, "|")
	for _, want := range []string{"1 Redis p99", "1 Redis p50", "cluster 3+3 p99", "cluster 3+3 p50", "goal: p99 ≤ 50.0 ms", "1k", "2k", "4k"} {
		if !strings.Contains(all, want) {
			t.Errorf("the plot's text lacks %q; it has %s", want, all)
		}
	}
	if strings.Contains(all, "empty") {
		t.Errorf("a store without steps is in the legend: %s", all)
	}

	// The data lines are the paths drawn 1.5 points wide: per store a
	// colour, p99 solid and p50 dashed, each once through its points and
	// once as a 2-point sample in the legend.
	type series struct {
		colour string
		dashed bool
	}
	ys := map[series][][]float64{} // each path's y coordinates
	for _, p := range paths {
		if !strings.Contains(p.style, "stroke-width:1.5") {
			continue
		}
		_, colour, _ := strings.Cut(p.style, "stroke:")
		colour, _, _ = strings.Cut(colour, ";")
		var y []float64
		for _, pt := range strings.FieldsFunc(p.d, func(r rune) bool { return r == 'M' || r == 'L' }) {
			_, v, _ := strings.Cut(pt, ",")
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("path %q: %v", p.d, err)
			}
			y = append(y, f)
		}
		k := series{colour, strings.Contains(p.style, "dasharray")}
		ys[k] = append(ys[k], y)
	}
	colours := map[string]bool{}
	for k := range ys {
		colours[k.colour] = true
	}
	if len(colours) != 2 || len(ys) != 4 {
		t.Fatalf("data lines %v, want 2 colours each solid and dashed", ys)
	}
	// The longest path of each series is its line through the steps.
	line := func(k series) []float64 {
		var l []float64
		for _, y := range ys[k] {
			if len(y) > len(l) {
				l = y
			}
		}
		return l
	}
	byPoints := map[int][]series{}
	for k := range ys {
		if len(ys[k]) != 2 {
			t.Errorf("series %v drawn %d times, want twice (the line and its legend sample)", k, len(ys[k]))
		}
		byPoints[len(line(k))] = append(byPoints[len(line(k))], k)
	}
	if len(byPoints[3]) != 2 || len(byPoints[2]) != 2 {
		t.Fatalf("lines by points %v, want two of 3 points (1 Redis) and two of 2 (the cluster)", byPoints)
	}
	// p99 lies above p50 at every step: a greater y, since the plot's group
	// flips the y axis (scale(1, -1)).
	if !flipped {
		t.Fatal("no group flips the y axis: the test's reading of the lines' y coordinates is wrong")
	}
	for _, k := range append(byPoints[3], byPoints[2]...) {
		if k.dashed {
			continue
		}
		p99, p50 := line(k), line(series{k.colour, true})
		for i := range p99 {
			if p99[i] <= p50[i] {
				t.Errorf("%s: the p99 line at step %d (y %v) is not above the p50 line (y %v)", k.colour, i, p99[i], p50[i])
			}
		}
	}
}

// TestWriteCapacityPlotEmpty: nothing measured is an error, not an empty
// plot.
func TestWriteCapacityPlotEmpty(t *testing.T) {
	if err := writeCapacityPlot(filepath.Join(t.TempDir(), "c.svg"), []capCurve{{store: "1 Redis"}}, capGoal); err == nil {
		t.Fatal("no error for curves without steps")
	}
}
