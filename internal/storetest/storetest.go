// Package storetest is the conformance suite of the order stores: the same
// tests run against the Redis store and the in-memory store, so that the
// service behaves the same on either.
package storetest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

const (
	// retention is the retention of every test's store but the one that
	// tests retention itself.
	retention = time.Hour
	// eventTimeout bounds the wait for an event that must come; it is far
	// longer than any store needs, so reaching it means the event is lost.
	eventTimeout = 5 * time.Second
	// clockSlack allows for the store's clock (Redis's) being read a little
	// before or after the test's own.
	clockSlack = 20 * time.Millisecond
)

// Run runs the suite. newStore returns a new, empty store that keeps closed
// orders and events for the given retention; the suite runs its Run method
// itself, and stops it before the test ends.
func Run(t *testing.T, newStore func(t *testing.T, retention time.Duration) order.Store) {
	su := suite{newStore: newStore}
	tests := []struct {
		name string
		// heavy tests load the machine and measure time; they run alone.
		heavy bool
		test  func(*testing.T, suite)
	}{
		{"ExactlyOnceUnderRace", true, testExactlyOnceUnderRace},
		{"PromptWithManyPending", true, testPromptWithManyPending},
		{"Checkout", false, testCheckout},
		{"CheckoutWhilePending", false, testCheckoutWhilePending},
		{"CheckoutAt", false, testCheckoutAt},
		{"BulkChange", false, testBulkChange},
		{"BulkCancelOperation", false, testBulkCancelOperation},
		{"BatchCheckout", false, testBatchCheckout},
		{"BatchCheckoutExpires", false, testBatchCheckoutExpires},
		{"ConcurrentCallsOwnResults", false, testConcurrentCallsOwnResults},
		{"UnknownOrder", false, testUnknownOrder},
		{"Close", false, testClose},
		{"NoExpiryAfterClose", false, testNoExpiryAfterClose},
		{"Expiry", false, testExpiry},
		{"DueOrderClaimedByCalls", false, testDueOrderClaimedByCalls},
		{"CheckoutAgainAfterClose", false, testCheckoutAgainAfterClose},
		{"EventLog", false, testEventLog},
		{"EventsWait", false, testEventsWait},
		{"CheckCursor", false, testCheckCursor},
		{"Retention", false, testRetention},
		{"Ping", false, testPing},
		{"Reschedule", false, testReschedule},
		{"RescheduleRefused", false, testRescheduleRefused},
		{"RescheduleRacesExpiry", true, testRescheduleRacesExpiry},
		{"GroupCreate", false, testGroupCreate},
		{"GroupDelete", false, testGroupDelete},
		{"GroupStart", false, testGroupStart},
		{"GroupConsumers", false, testGroupConsumers},
		{"GroupConsumerLimit", false, testGroupConsumerLimit},
		{"GroupAck", false, testGroupAck},
		{"GroupRedelivery", false, testGroupRedelivery},
		{"GroupOwnRedelivery", false, testGroupOwnRedelivery},
		{"GroupNack", false, testGroupNack},
		{"GroupDeadLetters", false, testGroupDeadLetters},
		{"GroupLastAttempt", false, testGroupLastAttempt},
		{"GroupDeadLetterWhy", false, testGroupDeadLetterWhy},
		{"GroupRelease", false, testGroupRelease},
		{"GroupState", false, testGroupState},
		{"GroupRetention", false, testGroupRetention},
		{"Stats", false, testStats},
		{"StatsAfterRetention", false, testStatsAfterRetention},
		{"GroupPush", false, testGroupPush},
		{"ListFilters", false, testListFilters},
		{"ListSameDeadline", false, testListSameDeadline},
		{"ListBudget", false, testListBudget},
		{"ListDueOrder", false, testListDueOrder},
		{"ListRetention", false, testListRetention},
		{"ListPagingUnderChurn", true, testListPagingUnderChurn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.heavy {
				t.Parallel()
			}
			tt.test(t, su)
		})
	}
}

type suite struct {
	newStore func(t *testing.T, retention time.Duration) order.Store
}

// start returns a new store whose Run goroutine runs until the test ends.
func (su suite) start(t *testing.T, retention time.Duration) order.Store {
	t.Helper()
	s := su.newStore(t, retention)
	RunStore(t, s)
	return s
}

// RunStore runs a store's Run until the test ends, or until the returned
// function is called; either way it checks that Run stops cleanly.
func RunStore(t *testing.T, s interface{ Run(context.Context) error }) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v after its context ended, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return within 5s after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// idle returns a new store that nothing runs: no sweeper expires its orders,
// only the calls of the test.
func (su suite) idle(t *testing.T, retention time.Duration) order.Store {
	t.Helper()
	return su.newStore(t, retention)
}

func testCheckout(t *testing.T, su suite) {
	s := su.start(t, retention)
	tests := []struct {
		name string
		ttl  time.Duration
		md   map[string]string
	}{
		{"with metadata", time.Minute, map[string]string{"customer": "c-17", "note": "größe 42, ½ price"}},
		{"without metadata", 30 * time.Second, nil},
		{"long ttl", 7 * 24 * time.Hour, map[string]string{"k": ""}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "order-" + strconv.Itoa(i)
			md := maps.Clone(tt.md)
			before := time.Now()
			o, created, err := s.Checkout(t.Context(), id, tt.ttl, md)
			after := time.Now()
			if err != nil {
				t.Fatalf("Checkout: %v", err)
			}
			if !created {
				t.Errorf("Checkout of a new id: created = false, want true")
			}
			checkPending(t, "Checkout", o, id, tt.ttl, tt.md)
			checkWithin(t, "created_at", o.CreatedAt, before, after)

			// The store keeps its own copy of the metadata: changing the
			// caller's map or a returned one changes nothing stored.
			if md != nil {
				md["customer"] = "changed"
			}
			if o.Metadata != nil {
				o.Metadata["injected"] = "x"
			}
			got, err := s.Get(t.Context(), id)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			checkPending(t, "Get", got, id, tt.ttl, tt.md)
			if !got.CreatedAt.Equal(o.CreatedAt) || !got.Deadline.Equal(o.Deadline) {
				t.Errorf("Get: created_at %v, deadline %v; Checkout said %v, %v", got.CreatedAt, got.Deadline, o.CreatedAt, o.Deadline)
			}
		})
	}
}

func testCheckoutWhilePending(t *testing.T, su suite) {
	s := su.start(t, retention)
	md := map[string]string{"cart": "A"}
	first := checkout(t, s, "dup", time.Minute, md)
	// The same request, later in time: the same ttl counts, not the same
	// deadline.
	time.Sleep(5 * time.Millisecond)
	again, created, err := s.Checkout(t.Context(), "dup", time.Minute, map[string]string{"cart": "A"})
	if err != nil {
		t.Fatalf("second Checkout, the same request: %v", err)
	}
	if created {
		t.Errorf("second Checkout while pending: created = true, want false")
	}
	checkPending(t, "second Checkout", again, "dup", time.Minute, md)
	if !again.CreatedAt.Equal(first.CreatedAt) || !again.Deadline.Equal(first.Deadline) {
		t.Errorf("second Checkout: created_at %v, deadline %v; want the first order's %v, %v", again.CreatedAt, again.Deadline, first.CreatedAt, first.Deadline)
	}
	// Another request under the pending id: refused, naming what differs.
	for _, tt := range []struct {
		name string
		it   order.CheckoutItem
		says []string
	}{
		{"other metadata", order.CheckoutItem{TTL: time.Minute, Metadata: map[string]string{"cart": "B", "extra": "1"}}, []string{`"cart"`, `"extra"`, "metadata"}},
		{"no metadata", order.CheckoutItem{TTL: time.Minute}, []string{`key "cart"`}},
		{"other ttl", order.CheckoutItem{TTL: 2 * time.Hour, Metadata: md}, []string{"ttl of 1m,", "this asks for 2h;"}},
		{"a deadline", order.CheckoutItem{At: first.Deadline, MaxTTL: 24 * time.Hour, Metadata: md}, []string{"ttl of 1m,", "deadline"}},
	} {
		tt.it.ID = "dup"
		r := s.BatchCheckout(t.Context(), []order.CheckoutItem{tt.it})[0]
		wantKind(t, "Checkout with "+tt.name, r.Err, order.KindAlreadyExists)
		for _, w := range tt.says {
			if r.Err != nil && !strings.Contains(r.Err.Error(), w) {
				t.Errorf("Checkout with %s: %q does not say %q", tt.name, r.Err, w)
			}
		}
	}
	got := get(t, s, "dup")
	checkPending(t, "Get", got, "dup", time.Minute, md)
	if !got.Deadline.Equal(first.Deadline) {
		t.Errorf("Get: deadline %v, want the first order's %v", got.Deadline, first.Deadline)
	}
	// A reschedule does not change what the checkout asked for: its
	// retry still answers the order, with its new deadline.
	moved, err := s.Reschedule(t.Context(), "dup", order.Reschedule{TTL: time.Hour, MaxTTL: 24 * time.Hour})
	if err != nil {
		t.Fatalf("Reschedule: %v", err)
	}
	again, created, err = s.Checkout(t.Context(), "dup", time.Minute, md)
	if err != nil || created || !again.Deadline.Equal(moved.Deadline) {
		t.Errorf("Checkout after a reschedule: created %v, deadline %v, %v; want the order, due %v", created, again.Deadline, err, moved.Deadline)
	}
}

// testCheckoutAt checks a checkout that asks for an absolute deadline: the
// order is due then, the same request repeated answers it, another
// deadline is refused, and a deadline not after now or past the maximum
// ttl fails KindInvalid and creates nothing.
func testCheckoutAt(t *testing.T, su suite) {
	s := su.start(t, retention)
	const maxTTL = time.Hour
	at := time.Now().Add(10 * time.Minute).Truncate(time.Millisecond)
	one := func(it order.CheckoutItem) order.CheckoutResult {
		it.MaxTTL = maxTTL
		return s.BatchCheckout(t.Context(), []order.CheckoutItem{it})[0]
	}
	r := one(order.CheckoutItem{ID: "at", At: at.Add(400 * time.Microsecond), Metadata: map[string]string{"k": "v"}})
	if r.Err != nil || !r.Created {
		t.Fatalf("Checkout at %v: created %v, %v", at, r.Created, r.Err)
	}
	if !r.Order.Deadline.Equal(at) || r.Order.Status != order.StatusPending {
		t.Errorf("Checkout at %v: %v, deadline %v", at, r.Order.Status, r.Order.Deadline)
	}
	if got := get(t, s, "at"); !got.Deadline.Equal(at) {
		t.Errorf("Get: deadline %v, want %v", got.Deadline, at)
	}
	r = one(order.CheckoutItem{ID: "at", At: at, Metadata: map[string]string{"k": "v"}})
	if r.Err != nil || r.Created || !r.Order.Deadline.Equal(at) {
		t.Errorf("the same Checkout again: created %v, deadline %v, %v; want the order", r.Created, r.Order.Deadline, r.Err)
	}
	r = one(order.CheckoutItem{ID: "at", At: at.Add(time.Second), Metadata: map[string]string{"k": "v"}})
	wantKind(t, "Checkout at another deadline", r.Err, order.KindAlreadyExists)
	r = one(order.CheckoutItem{ID: "at", TTL: 10 * time.Minute, Metadata: map[string]string{"k": "v"}})
	wantKind(t, "Checkout with a ttl instead", r.Err, order.KindAlreadyExists)

	for name, bad := range map[string]time.Time{
		"past":           time.Now().Add(-time.Second),
		"beyond max ttl": time.Now().Add(maxTTL + time.Minute),
	} {
		r := one(order.CheckoutItem{ID: "at-bad", At: bad})
		wantKind(t, "Checkout at a deadline "+name, r.Err, order.KindInvalid)
		if _, err := s.Get(t.Context(), "at-bad"); order.KindOf(err) != order.KindNotFound {
			t.Errorf("after a refused Checkout %s: Get = %v, want not found", name, err)
		}
	}
	// A deadline a moment away expires then.
	after := tails(t, s)
	soon := time.Now().Add(150 * time.Millisecond)
	if r := one(order.CheckoutItem{ID: "at-soon", At: soon}); r.Err != nil {
		t.Fatalf("Checkout at %v: %v", soon, r.Err)
	}
	evs := waitEvents(t, s, after, 1, nil)
	if evs[0].OrderID != "at-soon" || !evs[0].Deadline.Equal(soon.Truncate(time.Millisecond)) {
		t.Errorf("event %+v, want at-soon due %v", evs[0], soon.Truncate(time.Millisecond))
	}
}

func testUnknownOrder(t *testing.T, su suite) {
	s := su.start(t, retention)
	checkout(t, s, "known", time.Minute, nil)
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			_, err := op.call(s, t.Context(), "unknown")
			wantKind(t, op.name+"(unknown)", err, order.KindNotFound)
		})
	}
}

// ops are the calls that look up an existing order.
var ops = []struct {
	name string
	call func(order.Store, context.Context, string) (order.Order, error)
}{
	{"Get", order.Store.Get},
	{"Complete", order.Store.Complete},
	{"Cancel", order.Store.Cancel},
}

// closers are the calls that close a pending order.
var closers = []struct {
	name   string
	status order.Status
	call   func(order.Store, context.Context, string) (order.Order, error)
}{
	{"Complete", order.StatusCompleted, order.Store.Complete},
	{"Cancel", order.StatusCancelled, order.Store.Cancel},
}

func testClose(t *testing.T, su suite) {
	s := su.start(t, retention)
	md := map[string]string{"sku": "42"}
	for _, c := range closers {
		t.Run(c.name, func(t *testing.T) {
			id := "close-" + c.name
			o := checkout(t, s, id, time.Minute, md)
			before := time.Now()
			closed, err := c.call(s, t.Context(), id)
			after := time.Now()
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			checkClosed(t, c.name, closed, o, c.status)
			checkWithin(t, c.name+": closed_at", closed.ClosedAt, before, after)

			got := get(t, s, id)
			checkClosed(t, "Get", got, o, c.status)
			if !got.ClosedAt.Equal(closed.ClosedAt) {
				t.Errorf("Get: closed_at %v, want %v", got.ClosedAt, closed.ClosedAt)
			}
			// A closed order stays as it is: neither call applies any more.
			for _, again := range closers {
				_, err := again.call(s, t.Context(), id)
				wantKind(t, again.name+" after "+c.name, err, order.KindFailedPrecondition)
			}
			checkClosed(t, "Get after the refused calls", get(t, s, id), o, c.status)
		})
	}
}

func testNoExpiryAfterClose(t *testing.T, su suite) {
	s := su.start(t, retention)
	for _, c := range closers {
		id := "closed-" + c.name
		checkout(t, s, id, 100*time.Millisecond, nil)
		if _, err := c.call(s, t.Context(), id); err != nil {
			t.Fatalf("%s(%s): %v", c.name, id, err)
		}
	}
	// Orders expire in deadline order, so once an order due later than the
	// closed ones has expired, any expiry of theirs would be in the log.
	barrier(t, s)
	for _, ev := range allEvents(t, s) {
		if !isBarrier(ev.OrderID) {
			t.Errorf("event for %q at %v: the order was closed before its deadline, so it must never expire", ev.OrderID, ev.ExpiredAt)
		}
	}
	for _, c := range closers {
		if got := get(t, s, "closed-"+c.name); got.Status != c.status {
			t.Errorf("Get(closed-%s) after its deadline: status %v, want %v", c.name, got.Status, c.status)
		}
	}
}

func testExpiry(t *testing.T, su suite) {
	s := su.start(t, retention)
	md := map[string]string{"customer": "c-9", "email": "a@example.com"}
	o := checkout(t, s, "exp", 100*time.Millisecond, md)
	ev := waitEvents(t, s, nil, 1, nil)[0]

	if ev.OrderID != "exp" {
		t.Fatalf("event for order %q, want %q", ev.OrderID, "exp")
	}
	if ev.Offset.IsZero() {
		t.Errorf("event cursor is zero, want a position in the log")
	}
	if !ev.Deadline.Equal(o.Deadline) || !ev.CreatedAt.Equal(o.CreatedAt) {
		t.Errorf("event: created_at %v, deadline %v; want the order's %v, %v", ev.CreatedAt, ev.Deadline, o.CreatedAt, o.Deadline)
	}
	if ev.ExpiredAt.Before(ev.Deadline) {
		t.Errorf("event: expired_at %v is before the deadline %v", ev.ExpiredAt, ev.Deadline)
	}
	if late := ev.ExpiredAt.Sub(ev.Deadline); late > time.Second {
		t.Errorf("event: expired %v after the deadline, want well under a second", late)
	}
	if !maps.Equal(ev.Metadata, md) {
		t.Errorf("event: metadata %v, want %v", ev.Metadata, md)
	}

	got := get(t, s, "exp")
	checkClosed(t, "Get after expiry", got, o, order.StatusExpired)
	if !got.ClosedAt.Equal(ev.ExpiredAt) {
		t.Errorf("Get after expiry: closed_at %v, want the event's expired_at %v", got.ClosedAt, ev.ExpiredAt)
	}
	for _, c := range closers {
		_, err := c.call(s, t.Context(), "exp")
		wantKind(t, c.name+" after expiry", err, order.KindFailedPrecondition)
	}

	barrier(t, s)
	if n := countFor(allEvents(t, s), "exp"); n != 1 {
		t.Errorf("the log has %d events for the order, want exactly 1", n)
	}
}

// testDueOrderClaimedByCalls checks that a call on an order past its deadline
// expires it itself, before any sweeper does: nobody sees a pending order
// after its deadline, and none can be completed then.
func testDueOrderClaimedByCalls(t *testing.T, su suite) {
	tests := []struct {
		name string
		call func(t *testing.T, s order.Store, due order.Order)
	}{
		{"Get", func(t *testing.T, s order.Store, due order.Order) {
			got := get(t, s, due.ID)
			checkClosed(t, "Get", got, due, order.StatusExpired)
			if got.ClosedAt.Before(due.Deadline) {
				t.Errorf("Get: closed_at %v is before the deadline %v", got.ClosedAt, due.Deadline)
			}
		}},
		{"Complete", func(t *testing.T, s order.Store, due order.Order) {
			_, err := s.Complete(t.Context(), due.ID)
			wantKind(t, "Complete after the deadline", err, order.KindFailedPrecondition)
			checkClosed(t, "Get", get(t, s, due.ID), due, order.StatusExpired)
		}},
		{"Cancel", func(t *testing.T, s order.Store, due order.Order) {
			_, err := s.Cancel(t.Context(), due.ID)
			wantKind(t, "Cancel after the deadline", err, order.KindFailedPrecondition)
			checkClosed(t, "Get", get(t, s, due.ID), due, order.StatusExpired)
		}},
		{"Checkout", func(t *testing.T, s order.Store, due order.Order) {
			o, created, err := s.Checkout(t.Context(), due.ID, time.Minute, nil)
			if err != nil {
				t.Fatalf("Checkout after the deadline: %v", err)
			}
			if !created {
				t.Errorf("Checkout after the deadline: created = false, want a new order")
			}
			checkPending(t, "Checkout after the deadline", o, due.ID, time.Minute, nil)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := su.idle(t, retention)
			md := map[string]string{"via": tt.name}
			due := checkout(t, s, "due", 50*time.Millisecond, md)
			// Nothing can be waited on here: the store is not running, and
			// the point is what a call does once the clock has passed the
			// deadline.
			time.Sleep(time.Until(due.Deadline.Add(5 * time.Millisecond)))
			if evs := allEvents(t, s); len(evs) != 0 {
				t.Fatalf("a store that is not running logged %d events before any call", len(evs))
			}

			tt.call(t, s, due)

			evs := allEvents(t, s)
			if len(evs) != 1 {
				t.Fatalf("the log has %d events after the call, want 1: the call must expire the due order", len(evs))
			}
			ev := evs[0]
			if ev.OrderID != "due" || !ev.Deadline.Equal(due.Deadline) || ev.ExpiredAt.Before(due.Deadline) || !maps.Equal(ev.Metadata, md) {
				t.Errorf("event %+v; want order \"due\", deadline %v, expired_at at or after it, metadata %v", ev, due.Deadline, md)
			}
		})
	}
}

func testCheckoutAgainAfterClose(t *testing.T, su suite) {
	s := su.start(t, retention)
	tests := []struct {
		name  string
		ttl   time.Duration
		close func(t *testing.T, s order.Store, id string)
	}{
		{"expired", 50 * time.Millisecond, func(t *testing.T, s order.Store, id string) {
			waitEvents(t, s, nil, 1, func(ev order.Event) bool { return ev.OrderID == id })
		}},
		{"completed", time.Minute, func(t *testing.T, s order.Store, id string) { complete(t, s, id) }},
		{"cancelled", time.Minute, func(t *testing.T, s order.Store, id string) {
			if _, err := s.Cancel(t.Context(), id); err != nil {
				t.Fatalf("Cancel: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "again-" + tt.name
			first := checkout(t, s, id, tt.ttl, map[string]string{"try": "1"})
			tt.close(t, s, id)
			closed := get(t, s, id)
			if closed.Status == order.StatusPending {
				t.Fatalf("order still pending after closing it")
			}

			md := map[string]string{"try": "2"}
			second, created, err := s.Checkout(t.Context(), id, time.Hour, md)
			if err != nil {
				t.Fatalf("Checkout of a %s id: %v", tt.name, err)
			}
			if !created {
				t.Errorf("Checkout of a %s id: created = false, want true", tt.name)
			}
			checkPending(t, "Checkout again", second, id, time.Hour, md)
			if second.CreatedAt.Before(closed.ClosedAt) || !second.Deadline.After(first.Deadline) {
				t.Errorf("Checkout again: created_at %v, deadline %v; want a new order created after %v, due after %v",
					second.CreatedAt, second.Deadline, closed.ClosedAt, first.Deadline)
			}
			checkPending(t, "Get", get(t, s, id), id, time.Hour, md)
			// The new order is live: it can be completed.
			complete(t, s, id)
		})
	}
}

// testEventLog checks one partition's log: the order of its events, paging
// with offsets and its tail. Its orders are all of partition 0.
func testEventLog(t *testing.T, su suite) {
	s := su.start(t, retention)
	if c := tail(t, s, 0); !c.IsZero() {
		t.Errorf("Tail of an empty log: %v, want the zero cursor", c)
	}
	if evs := events(t, s, 0, order.Offset{}, 10); len(evs) != 0 {
		t.Errorf("Events of an empty log: %d events", len(evs))
	}

	// Orders due at about the same time expire in one sweep: their events
	// share milliseconds, which the offsets must still tell apart.
	const n = 10
	for _, id := range idsOf(t, s, 0, "ev-", n) {
		checkout(t, s, id, 50*time.Millisecond, nil)
	}
	all := waitEvents(t, s, nil, n, nil)
	if len(all) != n {
		t.Fatalf("got %d events, want %d", len(all), n)
	}
	seen := map[string]bool{}
	for i, ev := range all {
		if ev.Partition != 0 {
			t.Errorf("event of %s in partition %d, want 0", ev.OrderID, ev.Partition)
		}
		if i > 0 && !all[i-1].Offset.Less(ev.Offset) {
			t.Errorf("cursor %v of event %d is not after cursor %v of the one before", ev.Offset, i, all[i-1].Offset)
		}
		if seen[ev.OrderID] {
			t.Errorf("two events for %q", ev.OrderID)
		}
		seen[ev.OrderID] = true
	}

	tests := []struct {
		name  string
		after order.Offset
		limit int
		wait  time.Duration
		want  []order.Event
	}{
		{"from the start, limited", order.Offset{}, 3, 0, all[:3]},
		{"from the start, limited, waiting", order.Offset{}, 3, 10 * time.Second, all[:3]},
		{"after a cursor", all[2].Offset, 100, 0, all[3:]},
		{"after a cursor, limited", all[2].Offset, 4, 0, all[3:7]},
		{"after a cursor, waiting", all[6].Offset, 100, 10 * time.Second, all[7:]},
		{"after the last", all[n-1].Offset, 100, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			got, err := s.Events(t.Context(), 0, tt.after, tt.limit, tt.wait)
			if err != nil {
				t.Fatalf("Events: %v", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("Events took %v although events were there", d)
			}
			if !slices.Equal(cursors(got), cursors(tt.want)) || !slices.Equal(orderIDs(got), orderIDs(tt.want)) {
				t.Errorf("Events(after %v, limit %d) = %v %v, want %v %v", tt.after, tt.limit, cursors(got), orderIDs(got), cursors(tt.want), orderIDs(tt.want))
			}
		})
	}

	// Paging one event at a time visits the whole log.
	var paged []order.Event
	for c := (order.Offset{}); ; {
		page := events(t, s, 0, c, 1)
		if len(page) == 0 {
			break
		}
		if len(page) > 1 {
			t.Fatalf("Events with limit 1 returned %d events", len(page))
		}
		paged = append(paged, page[0])
		c = page[0].Offset
	}
	if !slices.Equal(cursors(paged), cursors(all)) {
		t.Errorf("paging one by one gave %v, want %v", cursors(paged), cursors(all))
	}
	if c := tail(t, s, 0); c != all[n-1].Offset {
		t.Errorf("Tail = %v, want the last event's cursor %v", c, all[n-1].Offset)
	}
}

func testEventsWait(t *testing.T, su suite) {
	t.Run("returns when an event is appended", func(t *testing.T) {
		t.Parallel()
		s := su.start(t, retention)
		o := checkout(t, s, "awaited", 300*time.Millisecond, nil)
		const wait = 10 * time.Second
		start := time.Now()
		if start.After(o.Deadline.Add(-100 * time.Millisecond)) {
			t.Fatalf("checkout took too long: too close to the deadline to test a wait")
		}
		got, err := s.Events(t.Context(), partitionOf(t, s, "awaited"), order.Offset{}, 10, wait)
		end := time.Now()
		if err != nil {
			t.Fatalf("Events: %v", err)
		}
		if len(got) != 1 || got[0].OrderID != "awaited" {
			t.Fatalf("Events = %v, want the one event of \"awaited\"", orderIDs(got))
		}
		if end.Add(clockSlack).Before(o.Deadline) {
			t.Errorf("Events returned at %v, before the order's deadline %v", end, o.Deadline)
		}
		if d := end.Sub(start); d > 2*time.Second {
			t.Errorf("Events returned %v after the call, want it right after the event (the order was due after %v)", d, o.Deadline.Sub(start))
		}
	})
	t.Run("returns nothing when none comes", func(t *testing.T) {
		t.Parallel()
		s := su.start(t, retention)
		checkout(t, s, "later", time.Minute, nil)
		const wait = 300 * time.Millisecond
		start := time.Now()
		got, err := s.Events(t.Context(), partitionOf(t, s, "later"), order.Offset{}, 10, wait)
		d := time.Since(start)
		if err != nil {
			t.Fatalf("Events: %v", err)
		}
		if len(got) != 0 {
			t.Errorf("Events = %v, want none", orderIDs(got))
		}
		if d < wait-clockSlack || d > wait+2*time.Second {
			t.Errorf("Events with nothing to return took %v, want about the wait of %v", d, wait)
		}
	})
}

func testCheckCursor(t *testing.T, su suite) {
	s := su.start(t, retention)
	checkout(t, s, "c", 10*time.Millisecond, nil)
	ev := waitEvents(t, s, nil, 1, nil)[0]
	now := uint64(time.Now().UnixMilli())
	tests := []struct {
		name       string
		c          order.Offset
		outOfRange bool
	}{
		{"zero", order.Offset{}, false},
		{"recent event", ev.Offset, false},
		{"between events", order.Offset{Ms: ev.Offset.Ms - 1, Seq: 3}, false},
		{"older than retention", order.Offset{Ms: now - uint64((retention + time.Minute).Milliseconds())}, true},
		{"ahead of the clock", order.Offset{Ms: now + uint64(time.Hour.Milliseconds())}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkCursor(t, s, ev.Partition, tt.c)
			if !tt.outOfRange {
				if err != nil {
					t.Errorf("CheckCursor(%v): %v, want nil", tt.c, err)
				}
				return
			}
			wantKind(t, fmt.Sprintf("CheckCursor(%v)", tt.c), err, order.KindOutOfRange)
		})
	}
	// A whole watch position at once, one offset per partition: a bad
	// offset in any partition refuses it.
	good := make([]order.Offset, partitions(t, s))
	good[ev.Partition] = ev.Offset
	if err := s.CheckCursor(t.Context(), good...); err != nil {
		t.Errorf("CheckCursor(%v): %v, want nil", good, err)
	}
	for _, tt := range tests {
		if !tt.outOfRange {
			continue
		}
		bad := slices.Clone(good)
		bad[(ev.Partition+1)%len(bad)] = tt.c
		wantKind(t, fmt.Sprintf("CheckCursor(%v)", bad), s.CheckCursor(t.Context(), bad...), order.KindOutOfRange)
	}
}

// checkCursor checks a watch position with c in partition p and the start
// of every other partition.
func checkCursor(t *testing.T, s order.Store, p int, c order.Offset) error {
	t.Helper()
	pos := make([]order.Offset, partitions(t, s))
	pos[p] = c
	return s.CheckCursor(t.Context(), pos...)
}

func testRetention(t *testing.T, su suite) {
	const keep = time.Second
	s := su.start(t, keep)
	pending := checkout(t, s, "pending", time.Minute, nil)

	checkout(t, s, "expired", 20*time.Millisecond, nil)
	ev := waitEvents(t, s, nil, 1, nil)[0]
	checkout(t, s, "completed", time.Minute, nil)
	complete(t, s, "completed")
	checkout(t, s, "cancelled", time.Minute, nil)
	if _, err := s.Cancel(t.Context(), "cancelled"); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if err := checkCursor(t, s, ev.Partition, ev.Offset); err != nil {
		t.Errorf("CheckCursor of a new event: %v", err)
	}

	// Each closed order is found until retention has passed since it
	// closed, and not found soon after.
	closedAt := map[string]time.Time{}
	for _, id := range []string{"expired", "completed", "cancelled"} {
		closedAt[id] = get(t, s, id).ClosedAt
	}
	for len(closedAt) > 0 {
		for id, at := range closedAt {
			_, err := s.Get(t.Context(), id)
			now := time.Now()
			switch {
			case err == nil:
				if now.After(at.Add(keep + 2*time.Second)) {
					t.Fatalf("Get(%s) still finds the order %v after it closed; retention is %v", id, now.Sub(at), keep)
				}
			case order.KindOf(err) == order.KindNotFound:
				if now.Add(clockSlack).Before(at.Add(keep)) {
					t.Errorf("Get(%s) is NotFound %v after the order closed, before the retention of %v", id, now.Sub(at), keep)
				}
				delete(closedAt, id)
			default:
				t.Fatalf("Get(%s): %v", id, err)
			}
		}
		time.Sleep(20 * time.Millisecond) // polling: nothing announces the end of retention
	}

	// The event's offset ages out of the log's retention as well.
	for {
		err := checkCursor(t, s, ev.Partition, ev.Offset)
		if order.KindOf(err) == order.KindOutOfRange {
			break
		}
		if err != nil {
			t.Fatalf("CheckCursor(%v): %v", ev.Offset, err)
		}
		if time.Since(ev.ExpiredAt) > keep+2*time.Second {
			t.Fatalf("CheckCursor(%v) still accepts a cursor %v old; retention is %v", ev.Offset, time.Since(ev.ExpiredAt), keep)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Retention applies to closed orders only.
	checkPending(t, "Get of a pending order older than retention", get(t, s, "pending"), "pending", time.Minute, nil)
	if got := get(t, s, "pending"); !got.Deadline.Equal(pending.Deadline) {
		t.Errorf("pending order: deadline %v, want %v", got.Deadline, pending.Deadline)
	}
}

// testExactlyOnceUnderRace completes half of many orders right at their
// common deadline while the sweeper expires them: every order must end in
// exactly one way.
func testExactlyOnceUnderRace(t *testing.T, su suite) {
	s := su.start(t, retention)
	const n = 300
	// Room for 300 checkouts on a busy machine, each waiting for a replica
	// in the strict mode, before the common deadline (1.5 s were not enough
	// at a load average of 20).
	deadline := time.Now().Add(3 * time.Second)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("race-%03d", i)
	}
	// Every order gets the same deadline, give or take a millisecond.
	parallel(t, 6, n, func(i int) error {
		ttl := time.Until(deadline).Round(time.Millisecond)
		if ttl < 50*time.Millisecond {
			return fmt.Errorf("checkouts too slow: %v left before the deadline", ttl)
		}
		_, created, err := s.Checkout(t.Context(), ids[i], ttl, map[string]string{"i": strconv.Itoa(i)})
		if err == nil && !created {
			err = fmt.Errorf("created = false")
		}
		return err
	})

	// Ten goroutines complete the even orders, starting one after another
	// around the deadline, so that some calls come before it and some after.
	var mu sync.Mutex
	completed := map[string]bool{} // id -> whether Complete succeeded
	var wg sync.WaitGroup
	const workers = 10
	for w := range workers {
		wg.Go(func() {
			time.Sleep(time.Until(deadline.Add(time.Duration(w-workers/2) * 600 * time.Microsecond)))
			for i := 2 * w; i < n; i += 2 * workers {
				_, err := s.Complete(t.Context(), ids[i])
				if err != nil && order.KindOf(err) != order.KindFailedPrecondition {
					t.Errorf("Complete(%s) near the deadline: %v; want success or FailedPrecondition", ids[i], err)
					continue
				}
				mu.Lock()
				completed[ids[i]] = err == nil
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(completed) != n/2 {
		t.Fatalf("%d Complete calls ended, want %d", len(completed), n/2)
	}
	ok := 0
	for _, c := range completed {
		if c {
			ok++
		}
	}
	t.Logf("%d of %d Complete calls around the deadline succeeded", ok, n/2)

	want := n - ok
	waitEvents(t, s, nil, want, nil)
	barrier(t, s)
	logged := allEvents(t, s)
	count := map[string]int{}
	barriers := 0
	for _, ev := range logged {
		count[ev.OrderID]++
		if isBarrier(ev.OrderID) {
			barriers++
		}
	}
	if total := len(logged) - barriers; total != want {
		t.Errorf("the log has %d expirations, want %d (orders not completed)", total, want)
	}
	for _, id := range ids {
		done, tried := completed[id]
		got := get(t, s, id)
		switch {
		case tried && done:
			if count[id] != 0 || got.Status != order.StatusCompleted {
				t.Errorf("%s: Complete succeeded, but it has %d expiry events and status %v", id, count[id], got.Status)
			}
		default: // not tried, or Complete found it expired
			if count[id] != 1 || got.Status != order.StatusExpired {
				t.Errorf("%s: not completed, but it has %d expiry events (want 1) and status %v (want expired)", id, count[id], got.Status)
			}
		}
	}
}

// testPromptWithManyPending checks that orders expire on time in a store full
// of pending orders, where Redis on its own would be seconds late.
func testPromptWithManyPending(t *testing.T, su suite) {
	s := su.start(t, retention)
	const (
		pending = 20000
		due     = 200
		spread  = 500 * time.Millisecond
		maxLate = 250 * time.Millisecond
	)
	start := time.Now()
	parallel(t, 8, pending, func(i int) error {
		_, _, err := s.Checkout(t.Context(), "long-"+strconv.Itoa(i), time.Hour, map[string]string{"n": strconv.Itoa(i)})
		return err
	})
	t.Logf("%d checkouts took %v", pending, time.Since(start))

	after := tails(t, s)
	parallel(t, 4, due, func(i int) error {
		ttl := 200*time.Millisecond + spread*time.Duration(i)/due
		_, _, err := s.Checkout(t.Context(), "due-"+strconv.Itoa(i), ttl, nil)
		return err
	})
	evs := waitEvents(t, s, after, due, nil)
	var late []time.Duration
	seen := map[string]bool{}
	for _, ev := range evs {
		if seen[ev.OrderID] || len(ev.OrderID) < 4 || ev.OrderID[:4] != "due-" {
			t.Errorf("unexpected event for %q", ev.OrderID)
			continue
		}
		seen[ev.OrderID] = true
		d := ev.ExpiredAt.Sub(ev.Deadline)
		late = append(late, d)
		if d < 0 || d >= maxLate {
			t.Errorf("%s expired %v after its deadline, want within [0, %v)", ev.OrderID, d, maxLate)
		}
	}
	slices.Sort(late)
	if len(late) > 0 {
		t.Logf("lateness of %d expiries: p50 %v, p99 %v, max %v", len(late), late[len(late)/2], late[len(late)*99/100], late[len(late)-1])
	}
}

func testPing(t *testing.T, su suite) {
	s := su.start(t, retention)
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// checkout creates an order that must be new.
func checkout(t *testing.T, s order.Store, id string, ttl time.Duration, md map[string]string) order.Order {
	t.Helper()
	o, created, err := s.Checkout(t.Context(), id, ttl, md)
	if err != nil {
		t.Fatalf("Checkout(%s): %v", id, err)
	}
	if !created {
		t.Fatalf("Checkout(%s): created = false, want a new order", id)
	}
	return o
}

func get(t *testing.T, s order.Store, id string) order.Order {
	t.Helper()
	o, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return o
}

func complete(t *testing.T, s order.Store, id string) {
	t.Helper()
	if _, err := s.Complete(t.Context(), id); err != nil {
		t.Fatalf("Complete(%s): %v", id, err)
	}
}

func tail(t *testing.T, s order.Store, partition int) order.Offset {
	t.Helper()
	c, err := s.Tail(t.Context(), partition)
	if err != nil {
		t.Fatalf("Tail: %v", err)
	}
	return c
}

// tails returns the tail of every partition.
func tails(t *testing.T, s order.Store) order.Cursor {
	t.Helper()
	pos := make(order.Cursor, partitions(t, s))
	for p := range pos {
		pos[p] = tail(t, s, p)
	}
	return pos
}

func partitions(t *testing.T, s order.Store) int {
	t.Helper()
	n, err := s.Partitions(t.Context())
	if err != nil {
		t.Fatalf("Partitions: %v", err)
	}
	return n
}

func partitionOf(t *testing.T, s order.Store, id string) int {
	t.Helper()
	return order.PartitionOf(id, partitions(t, s))
}

// idsOf returns n order ids of the partition, made of prefix and a number.
func idsOf(t *testing.T, s order.Store, partition int, prefix string, n int) []string {
	t.Helper()
	parts := partitions(t, s)
	var ids []string
	for i := 0; len(ids) < n; i++ {
		if id := prefix + strconv.Itoa(i); order.PartitionOf(id, parts) == partition {
			ids = append(ids, id)
		}
	}
	return ids
}

// events returns up to limit events of a partition after an offset, without
// waiting.
func events(t *testing.T, s order.Store, partition int, after order.Offset, limit int) []order.Event {
	t.Helper()
	evs, err := s.Events(t.Context(), partition, after, limit, 0)
	if err != nil {
		t.Fatalf("Events(partition %d, after %v): %v", partition, after, err)
	}
	return evs
}

// allEvents returns the whole log, partition after partition.
func allEvents(t *testing.T, s order.Store) []order.Event {
	t.Helper()
	var all []order.Event
	for p := range partitions(t, s) {
		for c := (order.Offset{}); ; {
			page := events(t, s, p, c, 1000)
			if len(page) == 0 {
				break
			}
			all = append(all, page...)
			c = page[len(page)-1].Offset
		}
	}
	return all
}

// waitEvents waits until n events that match (all when match is nil) have
// been logged after a position (nil: from the start) and returns the
// matching ones, partition after partition as they come; it fails the test
// when they do not come within eventTimeout.
func waitEvents(t *testing.T, s order.Store, after order.Cursor, n int, match func(order.Event) bool) []order.Event {
	t.Helper()
	if after == nil {
		after = make(order.Cursor, partitions(t, s))
	}
	after = after.Clone()
	deadline := time.Now().Add(eventTimeout)
	var got []order.Event
	for len(got) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events came within %v: %v", len(got), n, eventTimeout, orderIDs(got))
		}
		// One partition may block for new events while the others are
		// read at once: a single-partition store answers as soon as its
		// event is appended.
		wait := time.Duration(0)
		if len(after) == 1 {
			wait = min(time.Until(deadline), time.Second)
		}
		found := 0
		for p := range after {
			evs, err := s.Events(t.Context(), p, after[p], 1000, wait)
			if err != nil {
				t.Fatalf("Events(partition %d, after %v): %v", p, after[p], err)
			}
			for _, ev := range evs {
				if match == nil || match(ev) {
					got = append(got, ev)
				}
				after[p] = ev.Offset
			}
			found += len(evs)
		}
		if found == 0 && wait == 0 {
			time.Sleep(5 * time.Millisecond) // polling many partitions
		}
	}
	return got
}

// barrier checks out, in every partition, an order due later than every
// order a test has made due, and waits for their expiry. The stores expire a
// partition's orders in deadline order, so afterwards every expiry that was
// ever going to happen before them has been logged, and its absence can be
// asserted.
func barrier(t *testing.T, s order.Store) {
	t.Helper()
	after := tails(t, s)
	var ids []string
	for p := range after {
		id := idsOf(t, s, p, "barrier-", 1)[0]
		checkout(t, s, id, 200*time.Millisecond, nil)
		ids = append(ids, id)
	}
	waitEvents(t, s, after, len(ids), func(ev order.Event) bool { return slices.Contains(ids, ev.OrderID) })
}

func isBarrier(id string) bool { return strings.HasPrefix(id, "barrier-") }

func countFor(evs []order.Event, id string) int {
	n := 0
	for _, ev := range evs {
		if ev.OrderID == id {
			n++
		}
	}
	return n
}

func cursors(evs []order.Event) []order.Offset {
	out := make([]order.Offset, len(evs))
	for i, ev := range evs {
		out[i] = ev.Offset
	}
	return out
}

func orderIDs(evs []order.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.OrderID
	}
	return out
}

// checkPending checks a pending order's fields against its checkout.
func checkPending(t *testing.T, op string, o order.Order, id string, ttl time.Duration, md map[string]string) {
	t.Helper()
	if o.ID != id || o.Status != order.StatusPending {
		t.Errorf("%s: order %q is %v, want %q pending", op, o.ID, o.Status, id)
	}
	if o.CreatedAt.IsZero() {
		t.Errorf("%s: created_at is zero", op)
	}
	if !o.Deadline.Equal(o.CreatedAt.Add(ttl)) {
		t.Errorf("%s: deadline %v, want created_at %v + ttl %v", op, o.Deadline, o.CreatedAt, ttl)
	}
	if o.TTLRemaining <= 0 || o.TTLRemaining > ttl {
		t.Errorf("%s: ttl_remaining %v, want in (0, %v]", op, o.TTLRemaining, ttl)
	}
	if !o.ClosedAt.IsZero() {
		t.Errorf("%s: closed_at %v on a pending order, want zero", op, o.ClosedAt)
	}
	if !maps.Equal(o.Metadata, md) {
		t.Errorf("%s: metadata %v, want %v", op, o.Metadata, md)
	}
}

// checkClosed checks that an order closed with the given status and kept what
// it had when pending.
func checkClosed(t *testing.T, op string, o, pending order.Order, want order.Status) {
	t.Helper()
	if o.ID != pending.ID || o.Status != want {
		t.Errorf("%s: order %q is %v, want %q %v", op, o.ID, o.Status, pending.ID, want)
	}
	if o.ClosedAt.IsZero() {
		t.Errorf("%s: closed_at is zero on a %v order", op, o.Status)
	}
	if o.TTLRemaining != 0 {
		t.Errorf("%s: ttl_remaining %v on a %v order, want zero", op, o.TTLRemaining, o.Status)
	}
	if !o.CreatedAt.Equal(pending.CreatedAt) || !o.Deadline.Equal(pending.Deadline) {
		t.Errorf("%s: created_at %v, deadline %v; want the pending order's %v, %v", op, o.CreatedAt, o.Deadline, pending.CreatedAt, pending.Deadline)
	}
	if !maps.Equal(o.Metadata, pending.Metadata) {
		t.Errorf("%s: metadata %v, want %v", op, o.Metadata, pending.Metadata)
	}
}

// checkWithin checks that a time the store read from its clock lies between
// two readings of the test's clock; the store counts whole milliseconds.
func checkWithin(t *testing.T, what string, got, before, after time.Time) {
	t.Helper()
	if got.Before(before.Truncate(time.Millisecond).Add(-clockSlack)) || got.After(after.Add(clockSlack)) {
		t.Errorf("%s %v is not between %v and %v", what, got, before, after)
	}
}

var kindNames = map[order.Kind]string{
	order.KindInternal:           "Internal",
	order.KindInvalid:            "Invalid",
	order.KindNotFound:           "NotFound",
	order.KindFailedPrecondition: "FailedPrecondition",
	order.KindOutOfRange:         "OutOfRange",
	order.KindUnavailable:        "Unavailable",
	order.KindResourceExhausted:  "ResourceExhausted",
	order.KindAborted:            "Aborted",
	order.KindAlreadyExists:      "AlreadyExists",
}

// wantKind checks that err is an error of the wanted kind.
func wantKind(t *testing.T, op string, err error, want order.Kind) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want %s", op, kindNames[want])
		return
	}
	if got := order.KindOf(err); got != want {
		t.Errorf("%s: %v (kind %s), want kind %s", op, err, kindNames[got], kindNames[want])
	}
}

// parallel calls f for 0..n-1 from the given number of goroutines and fails
// the test on the first error.
func parallel(t *testing.T, workers, n int, f func(i int) error) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("call %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}
