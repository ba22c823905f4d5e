package storetest

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

const maxTTL = time.Hour

func reschedule(t *testing.T, s order.Store, id string, r order.Reschedule) order.Order {
	t.Helper()
	if r.MaxTTL == 0 {
		r.MaxTTL = maxTTL
	}
	o, err := s.Reschedule(t.Context(), id, r)
	if err != nil {
		t.Fatalf("Reschedule(%q, %+v): %v", id, r, err)
	}
	return o
}

// testReschedule: an order expires at its new deadline, later or earlier,
// once, never at its old one, and says how often it was rescheduled.
func testReschedule(t *testing.T, su suite) {
	s := su.start(t, retention)
	md := map[string]string{"cart": "7"}

	later := checkout(t, s, "later", 150*time.Millisecond, md)
	before := time.Now()
	r := reschedule(t, s, "later", order.Reschedule{TTL: 600 * time.Millisecond})
	checkWithin(t, "new deadline", r.Deadline, before.Add(600*time.Millisecond), time.Now().Add(600*time.Millisecond))
	if r.Status != order.StatusPending || r.Reschedules != 1 || !r.CreatedAt.Equal(later.CreatedAt) {
		t.Errorf("Reschedule: %+v, want pending, created %v, rescheduled once", r, later.CreatedAt)
	}
	earlier := checkout(t, s, "earlier", time.Hour, nil)
	at := time.Now().Add(300 * time.Millisecond).Truncate(time.Millisecond)
	e := reschedule(t, s, "earlier", order.Reschedule{At: at, Expected: earlier.Deadline})
	if !e.Deadline.Equal(at) {
		t.Errorf("Reschedule to %v: deadline %v", at, e.Deadline)
	}
	e = reschedule(t, s, "earlier", order.Reschedule{At: at.Add(-100 * time.Millisecond), Expected: at})
	if e.Reschedules != 2 {
		t.Errorf("after two reschedules: %d", e.Reschedules)
	}

	// Past the old deadline of "later", still pending.
	time.Sleep(time.Until(later.Deadline.Add(100 * time.Millisecond)))
	if got := get(t, s, "later"); got.Status != order.StatusPending || !got.Deadline.Equal(r.Deadline) || got.Reschedules != 1 {
		t.Errorf("Get after the old deadline: %v, deadline %v, rescheduled %d; want pending until %v, rescheduled once", got.Status, got.Deadline, got.Reschedules, r.Deadline)
	}

	evs := waitEvents(t, s, nil, 2, func(ev order.Event) bool { return ev.OrderID == "later" || ev.OrderID == "earlier" })
	for _, ev := range evs {
		want := r.Deadline
		if ev.OrderID == "earlier" {
			want = e.Deadline
		}
		if !ev.Deadline.Equal(want) {
			t.Errorf("event of %q: deadline %v, want the new deadline %v", ev.OrderID, ev.Deadline, want)
		}
		if ev.ExpiredAt.Before(want) || ev.ExpiredAt.Sub(want) > time.Second {
			t.Errorf("event of %q: expired at %v, want at its new deadline %v", ev.OrderID, ev.ExpiredAt, want)
		}
	}
	if got := get(t, s, "later"); got.Status != order.StatusExpired || got.Reschedules != 1 || !maps.Equal(got.Metadata, md) {
		t.Errorf("Get after expiry: %+v, want expired, rescheduled once, metadata %v", got, md)
	}
	barrier(t, s)
	all := allEvents(t, s)
	for _, id := range []string{"later", "earlier"} {
		if n := countFor(all, id); n != 1 {
			t.Errorf("%d events for %q, want 1", n, id)
		}
	}
}

// testRescheduleRefused: each refusal has its kind and changes nothing.
func testRescheduleRefused(t *testing.T, su suite) {
	s := su.start(t, retention)
	o := checkout(t, s, "r", time.Minute, nil)
	checkout(t, s, "done", time.Minute, nil)
	complete(t, s, "done")
	now := time.Now()
	tests := []struct {
		name string
		id   string
		r    order.Reschedule
		want order.Kind
	}{
		{"unknown order", "nope", order.Reschedule{TTL: time.Minute}, order.KindNotFound},
		{"closed order", "done", order.Reschedule{TTL: time.Minute}, order.KindFailedPrecondition},
		{"expected deadline differs", "r", order.Reschedule{TTL: time.Minute, Expected: o.Deadline.Add(time.Millisecond)}, order.KindAborted},
		{"deadline in the past", "r", order.Reschedule{At: now.Add(-time.Second)}, order.KindInvalid},
		{"deadline past the maximum ttl", "r", order.Reschedule{At: now.Add(2 * maxTTL)}, order.KindInvalid},
		{"ttl past the maximum", "r", order.Reschedule{TTL: 2 * maxTTL}, order.KindInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.r.MaxTTL = maxTTL
			_, err := s.Reschedule(t.Context(), tt.id, tt.r)
			wantKind(t, "Reschedule", err, tt.want)
		})
	}
	if got := get(t, s, "r"); !got.Deadline.Equal(o.Deadline) || got.Reschedules != 0 {
		t.Errorf("after refused reschedules: deadline %v, rescheduled %d; want %v, 0", got.Deadline, got.Reschedules, o.Deadline)
	}
}

// testRescheduleRacesExpiry reschedules many orders at their deadline: each
// is rescheduled and then expires once at its new deadline, or expires once
// at its old one and the reschedule is refused; never both.
func testRescheduleRacesExpiry(t *testing.T, su suite) {
	s := su.start(t, retention)
	const n = 200
	type result struct {
		old, new time.Time // new is zero when the reschedule was refused
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		id := "race-" + strconv.Itoa(i)
		// Deadlines 200 ms after each checkout and 2 ms more for each
		// order, so that they spread over 400 ms and more, and are never
		// past however slow the checkouts are on a busy machine; each
		// reschedule is sent within 4 ms either side of its order's
		// deadline, so that both outcomes come.
		o := checkout(t, s, id, 200*time.Millisecond+time.Duration(i*2)*time.Millisecond, nil)
		results[i].old = o.Deadline
		wg.Go(func() {
			time.Sleep(time.Until(o.Deadline.Add(time.Duration(i%9-4) * time.Millisecond)))
			got, err := s.Reschedule(t.Context(), id, order.Reschedule{TTL: 300 * time.Millisecond, MaxTTL: maxTTL, Expected: o.Deadline})
			switch {
			case err == nil:
				results[i].new = got.Deadline
			case order.KindOf(err) != order.KindFailedPrecondition:
				errs <- fmt.Errorf("Reschedule(%s): %w", id, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	evs := waitEvents(t, s, nil, n, func(ev order.Event) bool { return strings.HasPrefix(ev.OrderID, "race-") })
	barrier(t, s)
	all := allEvents(t, s)
	rescheduled := 0
	for i, r := range results {
		id := "race-" + strconv.Itoa(i)
		if c := countFor(all, id); c != 1 {
			t.Errorf("%s: %d events, want 1", id, c)
			continue
		}
		var ev order.Event
		for _, e := range evs {
			if e.OrderID == id {
				ev = e
			}
		}
		want := r.old
		if !r.new.IsZero() {
			want = r.new
			rescheduled++
		}
		if !ev.Deadline.Equal(want) {
			t.Errorf("%s: expired with deadline %v; want %v (rescheduled: %v)", id, ev.Deadline, want, !r.new.IsZero())
		}
	}
	t.Logf("%d of %d orders rescheduled at their deadline, the rest expired first", rescheduled, n)
}
