package storetest

import (
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// stats returns the store's stats, checking what holds of any answer: one
// entry per partition, whose pending orders sum to the total.
func stats(t *testing.T, s order.Store) order.Stats {
	t.Helper()
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if n := partitions(t, s); len(st.Partitions) != n {
		t.Fatalf("Stats: %d partitions, want the store's %d", len(st.Partitions), n)
	}
	var sum int64
	for _, p := range st.Partitions {
		sum += p.Pending
	}
	if sum != st.Pending {
		t.Errorf("Stats: the partitions' pending orders sum to %d, the total is %d", sum, st.Pending)
	}
	return st
}

// statCounts are the counts of Stats that a test predicts.
type statCounts struct{ Pending, Expired, Completed, Cancelled int64 }

func countsOf(st order.Stats) statCounts {
	return statCounts{st.Pending, st.Expired, st.Completed, st.Cancelled}
}

// testStats follows the counts and the partitions' next deadlines through
// checkouts, completions, cancellations, reschedules and expiries, and
// checks that a call refused, or a checkout repeated, counts nothing.
func testStats(t *testing.T, su suite) {
	before := time.Now()
	s := su.start(t, retention)
	st := stats(t, s)
	if got := countsOf(st); got != (statCounts{}) {
		t.Errorf("Stats of a new store: %+v, want all zero", got)
	}
	for i, p := range st.Partitions {
		if p != (order.PartitionStats{}) {
			t.Errorf("Stats of a new store: partition %d is %+v, want all zero", i, p)
		}
	}
	if st.Since.IsZero() || st.Since.Before(before.Add(-time.Second)) || st.Since.After(time.Now().Add(clockSlack)) {
		t.Errorf("Stats of a new store: since %v, want about when the store was made (%v)", st.Since, before)
	}

	// The next deadline of each partition is its earliest pending one.
	deadlines := map[string]time.Time{}
	for id, ttl := range map[string]time.Duration{"st-a": time.Hour, "st-b": 2 * time.Hour, "st-c": 30 * time.Minute, "st-d": 3 * time.Hour} {
		deadlines[id] = checkout(t, s, id, ttl, nil).Deadline
	}
	if _, created, err := s.Checkout(t.Context(), "st-a", time.Hour, nil); err != nil || created {
		t.Fatalf("Checkout of a pending order again: created %v, %v; want false, nil", created, err)
	}
	checkNext := func(when string) {
		t.Helper()
		st := stats(t, s)
		want := make([]time.Time, len(st.Partitions))
		for id, d := range deadlines {
			p := partitionOf(t, s, id)
			if want[p].IsZero() || d.Before(want[p]) {
				want[p] = d
			}
		}
		for i, p := range st.Partitions {
			if !p.NextDeadline.Equal(want[i]) {
				t.Errorf("%s: partition %d's next deadline is %v, want %v", when, i, p.NextDeadline, want[i])
			}
		}
	}
	checkNext("after 4 checkouts")
	if got, want := countsOf(stats(t, s)), (statCounts{Pending: 4}); got != want {
		t.Errorf("Stats after 4 checkouts and a repeat: %+v, want %+v", got, want)
	}

	complete(t, s, "st-c")
	delete(deadlines, "st-c")
	if _, err := s.Cancel(t.Context(), "st-b"); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	delete(deadlines, "st-b")
	// Refused: closed already. Nothing more is counted.
	if _, err := s.Complete(t.Context(), "st-c"); err == nil {
		t.Fatalf("Complete of a completed order succeeded")
	}
	if _, err := s.Cancel(t.Context(), "st-c"); err == nil {
		t.Fatalf("Cancel of a completed order succeeded")
	}
	checkNext("after a completion and a cancellation")
	if got, want := countsOf(stats(t, s)), (statCounts{Pending: 2, Completed: 1, Cancelled: 1}); got != want {
		t.Errorf("Stats after a completion, a cancellation and two refused calls: %+v, want %+v", got, want)
	}

	// A reschedule moves the next deadline, earlier or later, and counts
	// nothing.
	deadlines["st-d"] = reschedule(t, s, "st-d", order.Reschedule{TTL: 10 * time.Minute, MaxTTL: 24 * time.Hour}).Deadline
	checkNext("after a reschedule to the earliest deadline")
	deadlines["st-d"] = reschedule(t, s, "st-d", order.Reschedule{TTL: 5 * time.Hour, MaxTTL: 24 * time.Hour}).Deadline
	checkNext("after a reschedule of the earliest order to the latest deadline")

	// Expiries are counted, and the events the log retains.
	expire(t, s, "st-x1", "st-x2", "st-x3")
	st = stats(t, s)
	if got, want := countsOf(st), (statCounts{Pending: 2, Expired: 3, Completed: 1, Cancelled: 1}); got != want {
		t.Errorf("Stats after 3 expiries: %+v, want %+v", got, want)
	}
	var events int64
	for _, p := range st.Partitions {
		events += p.Events
	}
	if events != 3 {
		t.Errorf("Stats after 3 expiries: the partitions retain %d events, want 3", events)
	}
	checkNext("after 3 expiries")
}

// testStatsAfterRetention checks that the closed orders stay counted after
// retention has dropped their tombstones and events, while the events
// retained go back to none.
func testStatsAfterRetention(t *testing.T, su suite) {
	const keep = 300 * time.Millisecond
	s := su.start(t, keep)
	checkout(t, s, "kept-c", time.Minute, nil)
	complete(t, s, "kept-c")
	checkout(t, s, "kept-x", time.Minute, nil)
	if _, err := s.Cancel(t.Context(), "kept-x"); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	since := time.Now()
	ev := expire(t, s, "kept-e")[0]
	waitTrimmed(t, s, ev, since)
	if _, err := s.Get(t.Context(), "kept-c"); order.KindOf(err) != order.KindNotFound {
		t.Fatalf("Get of an order completed longer ago than retention: %v, want NotFound", err)
	}
	st := stats(t, s)
	if got, want := countsOf(st), (statCounts{Expired: 1, Completed: 1, Cancelled: 1}); got != want {
		t.Errorf("Stats after retention dropped every closed order: %+v, want %+v", got, want)
	}
	for i, p := range st.Partitions {
		if p.Events != 0 {
			t.Errorf("Stats after retention: partition %d retains %d events, want 0", i, p.Events)
		}
	}
}
