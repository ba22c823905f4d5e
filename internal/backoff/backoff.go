// Package backoff spaces out retries against a dependency that is down.
package backoff

import (
	"context"
	"time"
)

const (
	// First is the first delay.
	First = 50 * time.Millisecond
	// Max bounds the delay: once the dependency is back, a loop that
	// backs off notices within this long, so recovery takes at most about
	// a second.
	Max = time.Second
)

// Backoff doubles a retry delay from First up to Max. Its zero value is
// ready to use; it is owned by one goroutine.
type Backoff struct{ d time.Duration }

// Next returns the delay before the next try.
func (b *Backoff) Next() time.Duration {
	b.d = min(max(2*b.d, First), Max)
	return b.d
}

// Reset starts over after a success.
func (b *Backoff) Reset() { b.d = 0 }

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
