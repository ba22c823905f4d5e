package rpc

import (
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// TestLatenessSummary checks the percentiles, the window and the bound on
// the samples kept.
func TestLatenessSummary(t *testing.T) {
	now := time.Now()
	l := NewLateness(time.Minute)
	if s := l.summary(now); s.GetCount() != 0 || s.P50 != nil || s.Max != nil {
		t.Fatalf("summary of nothing: %v, want count 0 and no figures", s)
	}
	// Outside the window: 10 samples of an hour late, 2 minutes ago.
	for range 10 {
		l.Observe(order.Event{Deadline: now.Add(-2*time.Minute - time.Hour)}, now.Add(-2*time.Minute))
	}
	// Inside: 1 ms to 100 ms late.
	for i := 1; i <= 100; i++ {
		l.Observe(order.Event{Deadline: now.Add(-time.Duration(i) * time.Millisecond)}, now)
	}
	s := l.summary(now)
	if s.GetCount() != 100 || s.GetP50().AsDuration() != 50*time.Millisecond || s.GetP99().AsDuration() != 99*time.Millisecond || s.GetMax().AsDuration() != 100*time.Millisecond {
		t.Errorf("summary: count %d, p50 %v, p99 %v, max %v; want 100, 50ms, 99ms, 100ms",
			s.GetCount(), s.GetP50().AsDuration(), s.GetP99().AsDuration(), s.GetMax().AsDuration())
	}
	// The ring keeps the last latenessSamples: these overwrite the rest.
	for range latenessSamples {
		l.Observe(order.Event{Deadline: now.Add(-time.Second)}, now)
	}
	if s := l.summary(now); s.GetCount() != latenessSamples || s.GetMax().AsDuration() != time.Second {
		t.Errorf("summary after %d more: count %d, max %v; want %d, 1s", latenessSamples, s.GetCount(), s.GetMax().AsDuration(), latenessSamples)
	}
}
