package storetest

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// testBatchCheckout checks that BatchCheckout answers each item as Checkout
// would, in the order of the items: new orders, an id given twice, an order
// already pending (unchanged) and a closed one (checked out anew), over every
// partition.
func testBatchCheckout(t *testing.T, su suite) {
	s := su.start(t, retention)
	before := checkout(t, s, "b-pending", time.Minute, map[string]string{"cart": "A"})
	checkout(t, s, "b-closed", time.Minute, nil)
	complete(t, s, "b-closed")

	var items []order.CheckoutItem
	for i := range 40 {
		items = append(items, order.CheckoutItem{ID: "b-" + strconv.Itoa(i), TTL: time.Duration(i+1) * time.Minute, Metadata: map[string]string{"i": strconv.Itoa(i)}})
	}
	items = append(items,
		order.CheckoutItem{ID: "b-pending", TTL: time.Minute, Metadata: map[string]string{"cart": "A"}},
		order.CheckoutItem{ID: "b-closed", TTL: 2 * time.Minute},
		order.CheckoutItem{ID: "b-pending", TTL: time.Hour, Metadata: map[string]string{"cart": "B"}}, // another request: refused
		order.CheckoutItem{ID: "b-3", TTL: time.Hour},                                                 // given twice, another request: refused
		order.CheckoutItem{ID: "b-3", TTL: items[3].TTL, Metadata: items[3].Metadata},                 // given twice, the same: the first stands
	)
	res := s.BatchCheckout(t.Context(), items)
	if len(res) != len(items) {
		t.Fatalf("BatchCheckout of %d items answered %d", len(items), len(res))
	}
	for i, r := range res {
		it := items[i]
		op := fmt.Sprintf("BatchCheckout item %d (%s)", i, it.ID)
		if i == len(items)-3 || i == len(items)-2 {
			wantKind(t, op, r.Err, order.KindAlreadyExists)
			continue
		}
		if r.Err != nil {
			t.Errorf("%s: %v", op, r.Err)
			continue
		}
		switch {
		case it.ID == "b-pending":
			if r.Created {
				t.Errorf("%s: created = true for an order already pending", op)
			}
			checkPending(t, op, r.Order, it.ID, time.Minute, map[string]string{"cart": "A"})
			if !r.Order.Deadline.Equal(before.Deadline) {
				t.Errorf("%s: deadline %v, want the pending order's %v", op, r.Order.Deadline, before.Deadline)
			}
		case i == len(items)-1:
			if r.Created {
				t.Errorf("%s: created = true for an id given earlier in the batch", op)
			}
			checkPending(t, op, r.Order, it.ID, items[3].TTL, items[3].Metadata)
		default:
			if !r.Created {
				t.Errorf("%s: created = false, want a new order", op)
			}
			checkPending(t, op, r.Order, it.ID, it.TTL, it.Metadata)
		}
	}
	for _, it := range items[:40] {
		checkPending(t, "Get after BatchCheckout", get(t, s, it.ID), it.ID, it.TTL, it.Metadata)
	}
	checkPending(t, "Get after BatchCheckout", get(t, s, "b-closed"), "b-closed", 2*time.Minute, nil)
}

// testBatchCheckoutExpires checks that orders of a BatchCheckout expire at
// their deadlines, each logged exactly once.
func testBatchCheckoutExpires(t *testing.T, su suite) {
	s := su.start(t, retention)
	after := tails(t, s)
	const n = 30
	items := make([]order.CheckoutItem, n)
	for i := range items {
		items[i] = order.CheckoutItem{ID: "be-" + strconv.Itoa(i), TTL: 100*time.Millisecond + time.Duration(i)*5*time.Millisecond}
	}
	for i, r := range s.BatchCheckout(t.Context(), items) {
		if r.Err != nil || !r.Created {
			t.Fatalf("BatchCheckout item %d: created %v, %v", i, r.Created, r.Err)
		}
	}
	waitEvents(t, s, after, n, nil)
	barrier(t, s)
	logged := allEvents(t, s)
	for _, it := range items {
		if c := countFor(logged, it.ID); c != 1 {
			t.Errorf("%s: %d expiry events, want 1", it.ID, c)
		}
		if o := get(t, s, it.ID); o.Status != order.StatusExpired {
			t.Errorf("%s: %v after its deadline, want expired", it.ID, o.Status)
		}
	}
}

// testConcurrentCallsOwnResults checks that calls made at once, which a
// store may send together, each get their own answer: checkouts, reads,
// completions and cancellations of many orders from many goroutines.
func testConcurrentCallsOwnResults(t *testing.T, su suite) {
	s := su.start(t, retention)
	const n = 400
	id := func(i int) string { return "cc-" + strconv.Itoa(i) }
	md := func(i int) map[string]string { return map[string]string{"i": strconv.Itoa(i)} }
	ttlOf := func(i int) time.Duration { return time.Minute + time.Duration(i)*time.Millisecond }
	parallel(t, 50, n, func(i int) error {
		o, created, err := s.Checkout(t.Context(), id(i), ttlOf(i), md(i))
		if err != nil {
			return err
		}
		if !created || o.ID != id(i) || o.Metadata["i"] != strconv.Itoa(i) || !o.Deadline.Equal(o.CreatedAt.Add(ttlOf(i))) {
			return fmt.Errorf("Checkout(%s) answered created %v, %+v", id(i), created, o)
		}
		return nil
	})
	parallel(t, 50, n, func(i int) error {
		o, err := s.Get(t.Context(), id(i))
		if err != nil {
			return err
		}
		if o.ID != id(i) || o.Metadata["i"] != strconv.Itoa(i) || o.Status != order.StatusPending {
			return fmt.Errorf("Get(%s) answered %+v", id(i), o)
		}
		return nil
	})
	parallel(t, 50, n, func(i int) error {
		op, want := s.Complete, order.StatusCompleted
		if i%2 == 1 {
			op, want = s.Cancel, order.StatusCancelled
		}
		o, err := op(t.Context(), id(i))
		if err != nil {
			return err
		}
		if o.ID != id(i) || o.Metadata["i"] != strconv.Itoa(i) || o.Status != want {
			return fmt.Errorf("closing %s answered %+v, want it %v", id(i), o, want)
		}
		return nil
	})
	parallel(t, 50, n, func(i int) error {
		_, err := s.Complete(t.Context(), id(i))
		if order.KindOf(err) != order.KindFailedPrecondition {
			return fmt.Errorf("Complete(%s) of a closed order: %v, want FailedPrecondition", id(i), err)
		}
		if _, err := s.Get(t.Context(), id(i)+"-none"); order.KindOf(err) != order.KindNotFound {
			return fmt.Errorf("Get of an unknown order: %v, want NotFound", err)
		}
		return nil
	})
}
