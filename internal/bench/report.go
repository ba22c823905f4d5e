package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// dist summarizes a set of latencies.
type dist struct {
	N             int
	P50, P99, Max time.Duration
}

// summarize sorts ds in place and returns its nearest-rank percentiles.
func summarize(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	slices.Sort(ds)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.999999) - 1
		return ds[min(max(i, 0), len(ds)-1)]
	}
	return dist{N: len(ds), P50: rank(0.50), P99: rank(0.99), Max: ds[len(ds)-1]}
}

// row is one line of the result table: a figure of the service beside its
// baseline from the same run, their ratio, and the goal set for it.
type row struct {
	Stage, Measure, Value, Base, Ratio, Goal, Met string
}

// table collects the rows and notes of a run.
type table struct {
	rows  []row
	notes []string
}

func (t *table) add(r row) { t.rows = append(t.rows, r) }

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

// print writes the table as aligned text and, with markdown, as a Markdown
// table.
func (t *table) print(w io.Writer, markdown bool) {
	head := row{"stage", "measure", "orderexpiry", "baseline", "ratio", "goal", "met"}
	if markdown {
		line := func(r row) {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Stage, r.Measure, r.Value, r.Base, r.Ratio, r.Goal, r.Met)
		}
		line(head)
		fmt.Fprintln(w, "|---|---|--:|--:|--:|---|---|")
		for _, r := range t.rows {
			line(r)
		}
	} else {
		var buf strings.Builder
		tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
		line := func(r row) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Stage, r.Measure, r.Value, r.Base, r.Ratio, r.Goal, r.Met)
		}
		line(head)
		for _, r := range t.rows {
			line(r)
		}
		tw.Flush()
		for _, l := range strings.SplitAfter(buf.String(), "\n") {
			fmt.Fprint(w, strings.TrimRight(l, " \n")+strings.Repeat("\n", strings.Count(l, "\n")))
		}
	}
	if len(t.notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range t.notes {
			fmt.Fprintln(w, "- "+n)
		}
	}
}

// ms formats a duration in milliseconds, or in seconds from 10 s on.
func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	}
}

// ratio formats a/b, or "-" when b is zero.
func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	r := a / b
	if r >= 0.1 && r < 100 {
		return fmt.Sprintf("%.2f×", r)
	}
	return fmt.Sprintf("%.2g×", r)
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

// count formats "got/want".
func count(got, want int) string { return fmt.Sprintf("%d/%d", got, want) }

func rate(perSec float64) string { return fmt.Sprintf("%.0f/s", perSec) }

func bytesPer(b float64) string { return fmt.Sprintf("%.0f B", b) }

// indent prefixes each line of s.
func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}
