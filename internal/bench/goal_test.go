package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

// TestGoals: each goal of the table is met exactly when the figure is on
// the right side of factor × baseline (the bound itself included), and never
// when the baseline or, for an upper bound, the figure measured nothing.
func TestGoals(t *testing.T) {
	for _, tc := range []struct {
		name              string
		f                 func(got, base, factor float64) (string, bool)
		got, base, factor float64
		goal              string
		met               bool
	}{
		{"rate above", atLeast, 101, 100, 1.0, "≥ 1.0×", true},
		{"rate at the bound", atLeast, 100, 100, 1.0, "≥ 1.0×", true},
		{"rate below", atLeast, 99, 100, 1.0, "≥ 1.0×", false},
		{"half the rate", atLeast, 50, 100, 0.5, "≥ 0.5×", true},
		{"no baseline", atLeast, 100, 0, 1.0, "≥ 1.0×", false},
		{"no calls", atLeast, 0, 100, 1.0, "≥ 1.0×", false},
		{"p99 within", atMost, 11, 10, 1.2, "≤ 1.2×", true},
		{"p99 at the bound", atMost, 12, 10, 1.2, "≤ 1.2×", true},
		{"p99 over", atMost, 12.1, 10, 1.2, "≤ 1.2×", false},
		{"p99 of no call", atMost, 0, 10, 1.2, "≤ 1.2×", false},
		{"p99 beside no baseline", atMost, 5, 0, 1.2, "≤ 1.2×", false},
		{"p99 not a number", atMost, math.NaN(), 10, 1.2, "≤ 1.2×", false},
		{"cpu per message, 1.5×", atMost, 3, 2, 1.5, "≤ 1.5×", true},
		{"cpu per message, over", atMost, 3.1, 2, 1.5, "≤ 1.5×", false},
	} {
		goal, met := tc.f(tc.got, tc.base, tc.factor)
		if goal != tc.goal || met != tc.met {
			t.Errorf("%s: %q, met %v; want %q, met %v", tc.name, goal, met, tc.goal, tc.met)
		}
	}
	if verdict(true, false) != "NO" || verdict(false, true) != "NO" || verdict(true, true) != "yes" {
		t.Error("verdict must say yes only for a met goal of a clean measurement")
	}
}

// TestCPUPerCall: the CPU split of the table is each process's CPU over
// the window divided by the calls in it.
func TestCPUPerCall(t *testing.T) {
	c := cpuUse{wall: 10 * time.Second, svc: 690 * time.Millisecond, redis: 430 * time.Millisecond, gen: 350 * time.Millisecond, others: time.Second}
	if got := c.perCall(10_000); got != "69 + 43 + 35 µs" {
		t.Errorf("perCall = %q", got)
	}
	if got := c.perCall(0); got != "-" {
		t.Errorf("perCall of no calls = %q", got)
	}
	if c.total() != 1470*time.Millisecond {
		t.Errorf("total = %s; the other processes must not count", c.total())
	}
}

// TestThroughputRows: a stage-2 call's rows carry each goal beside its
// baseline; a faster service with failed calls does not meet its goal, nor
// one faster over the run but slower in one of its rounds, and GetOrder has
// no p99 goal.
func TestThroughputRows(t *testing.T) {
	// load is a round of 1 s: calls that took p50, but for a twentieth that
	// took p99.
	load := func(calls, errs int, p50, p99 time.Duration) loadResult {
		lats := make([]time.Duration, calls)
		for i := range lats {
			lats[i] = p50
			if i%20 == 0 {
				lats[i] = p99
			}
		}
		return loadResult{calls: calls, errs: errs, rate: float64(calls), lats: lats, d: time.Second, lat: summarize(lats)}
	}
	ms := time.Millisecond
	fast, base := load(2000, 0, ms, 11*ms), load(1000, 0, ms, 10*ms)
	met := func(rows []row) (rate, p99 string) {
		for _, r := range rows {
			switch {
			case strings.Contains(r.Measure, " rate, worst of "):
				rate = r.Goal + " " + r.Met
			case strings.HasSuffix(r.Measure, " p99"):
				p99 = r.Goal + " " + r.Met
			}
		}
		return rate, p99
	}
	for _, tc := range []struct {
		name      string
		svc, base []loadResult
		p99Goal   bool
		rate, p99 string
	}{
		{"faster, p99 within 1.2×", []loadResult{fast}, []loadResult{base}, true, "≥ 1.0× each round yes", "≤ 1.2× yes"},
		{"failed calls", []loadResult{load(2000, 1, ms, 11*ms)}, []loadResult{base}, true, "≥ 1.0× each round NO", "≤ 1.2× NO"},
		{"slower, p99 over", []loadResult{load(900, 0, ms, 13*ms)}, []loadResult{base}, true, "≥ 1.0× each round NO", "≤ 1.2× NO"},
		{"faster over the run, slower in a round", []loadResult{fast, load(990, 0, ms, 11*ms)}, []loadResult{base, base}, true, "≥ 1.0× each round NO", "≤ 1.2× yes"},
		{"no p99 goal", []loadResult{fast, fast}, []loadResult{base, base}, false, "≥ 1.0× each round yes", " "},
	} {
		r := &runner{}
		r.throughputRows("Checkout gRPC", tc.svc, tc.base, "minimal", tc.p99Goal)
		if rate, p99 := met(r.t.rows); rate != tc.rate || p99 != tc.p99 {
			t.Errorf("%s: rate goal %q, p99 goal %q; want %q, %q", tc.name, rate, p99, tc.rate, tc.p99)
		}
	}
}
