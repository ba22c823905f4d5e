package bench

import (
	"fmt"
	"math"
)

// A goal of issue 13 sets a figure of the service beside its baseline from
// the same run: at least or at most a factor of it. Its text names the
// factor; met says whether the figures show it. A baseline that measured
// nothing (zero, or not a number) shows no goal met, and neither does a
// figure of the service that is zero when it must be at most the
// baseline's: a latency of zero means no call was measured.

// atLeast is the goal "got ≥ factor × base".
func atLeast(got, base, factor float64) (goal string, met bool) {
	return fmt.Sprintf("≥ %.1f×", factor), valid(base) && valid(got) && got >= factor*base
}

// atMost is the goal "got ≤ factor × base".
func atMost(got, base, factor float64) (goal string, met bool) {
	return fmt.Sprintf("≤ %.1f×", factor), valid(base) && valid(got) && got <= factor*base
}

func valid(x float64) bool { return x > 0 && !math.IsInf(x, 0) && !math.IsNaN(x) }

// verdict is the table's "met" column for a goal: yes only when the figures
// meet it and the measurement was clean (every call answered, every event
// delivered).
func verdict(met, clean bool) string { return yesNo(met && clean) }
