package bench

import (
	"testing"
	"time"
)

// TestCapacitySustained: a store's sustained rate is the highest step
// before the first that broke the goal, whether by its p99, by a missing
// event or by a doubled one; steps after a broken one do not count.
func TestCapacitySustained(t *testing.T) {
	ok := func(rate int) capStep {
		return capStep{rate: rate, res: lateResult{want: 100, got: 100, late: dist{P99: capGoal}}}
	}
	late := func(rate int) capStep { s := ok(rate); s.res.late.P99 = capGoal + time.Millisecond; return s }
	missed := func(rate int) capStep { s := ok(rate); s.res.got--; return s }
	doubled := func(rate int) capStep { s := ok(rate); s.res.dups = 1; return s }
	for _, tc := range []struct {
		name  string
		steps []capStep
		rate  int
		all   bool
	}{
		{"every step held", []capStep{ok(5), ok(10), ok(20)}, 20, true},
		{"p99 past the goal", []capStep{ok(5), ok(10), late(20)}, 10, false},
		{"a missing event", []capStep{ok(5), missed(10)}, 5, false},
		{"a doubled event", []capStep{ok(5), doubled(10)}, 5, false},
		{"the first step broke", []capStep{late(5)}, 0, false},
		{"a held step after a broken one", []capStep{ok(5), late(10), ok(20)}, 5, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rate, all := capCurve{steps: tc.steps}.sustained()
			if rate != tc.rate || all != tc.all {
				t.Fatalf("sustained() = %d, %v; want %d, %v", rate, all, tc.rate, tc.all)
			}
		})
	}
}
