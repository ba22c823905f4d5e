// Package backoff spaces out retries against a dependency that is down,
// or that refused a try: the one exponential backoff of the module. The
// service's loops, the push deliverer, the Redis Cluster calls of a moving
// slot and the Go client each give it their own Policy.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

const (
	// First is the first delay of the zero Policy.
	First = 50 * time.Millisecond
	// Max bounds the delay of the zero Policy: once the dependency is
	// back, a loop that backs off notices within this long, so recovery
	// takes at most about a second.
	Max = time.Second
)

// Policy says how long to wait before each retry: First, then Multiplier
// times the delay before, up to Max, each delay then spread at random by
// Less and More. Its zero value is the service's: 50ms doubling up to 1s,
// without jitter.
type Policy struct {
	// First is the delay before the first retry; 0 means First.
	First time.Duration
	// Max bounds the delay before the spread; 0 means Max when First is
	// 0 too, and no bound otherwise.
	Max time.Duration
	// Multiplier grows the delay from one retry to the next; 0 means 2.
	Multiplier float64
	// Less and More spread each delay d at random, uniformly over
	// [d − Less·d, d + More·d], so that the retries of callers that
	// failed together do not come together again. Less is at most 1.
	Less, More float64
	// Rand draws the spread, a number in [0, 1); nil means math/rand/v2.
	// Tests set it to make delays deterministic.
	Rand func() float64
}

// Delay returns the wait before retry n (0 for the first).
func (p Policy) Delay(n int) time.Duration {
	first, limit, m := p.First, p.Max, p.Multiplier
	if first <= 0 {
		first = First
		if limit <= 0 {
			limit = Max
		}
	}
	if m <= 0 {
		m = 2
	}
	d, top := float64(first), float64(limit)
	if limit <= 0 {
		top = float64(1 << 62) // no bound but the Duration's range
	}
	// At most until the bound: n may be far larger than the doublings
	// that reach it.
	for ; n > 0 && d < top; n-- {
		d *= m
	}
	d = min(d, top)
	if p.Less != 0 || p.More != 0 {
		r := p.Rand
		if r == nil {
			r = rand.Float64
		}
		d *= 1 - min(p.Less, 1) + (min(p.Less, 1)+p.More)*r()
	}
	return time.Duration(max(d, 0))
}

// Backoff follows a Policy from one retry to the next. Its zero value is
// ready to use, with the zero Policy; it is owned by one goroutine.
type Backoff struct {
	Policy Policy
	n      int
}

// Next returns the delay before the next try.
func (b *Backoff) Next() time.Duration {
	d := b.Policy.Delay(b.n)
	if b.n < 1<<20 {
		b.n++
	}
	return d
}

// Reset starts over after a success.
func (b *Backoff) Reset() { b.n = 0 }

// Wait sleeps for the next delay; it returns false if ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool { return Sleep(ctx, b.Next()) }

// Sleep waits for d or until ctx ends; it reports whether ctx is still live.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
