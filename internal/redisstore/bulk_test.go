package redisstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestBulkChangeRechecksChangedOrders: orders changed by someone else
// between a bulk operation's scan and its change are matched again with
// what they are then: one rescheduled out of the filter is skipped, one
// rescheduled within it is changed from its new deadline, one completed is
// skipped; none is changed from what the scan saw.
func TestBulkChangeRechecksChangedOrders(t *testing.T) {
	srv := redistest.Start(t)
	s := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: 3})
	ctx := t.Context()
	for _, id := range []string{"rc-out", "rc-in", "rc-done", "rc-same"} {
		if _, _, err := s.Checkout(ctx, id, time.Hour, map[string]string{"m": "a"}); err != nil {
			t.Fatal(err)
		}
	}
	same, _ := s.Get(ctx, "rc-same")
	limit := time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)
	op, err := s.StartOperation(ctx, order.Operation{Filter: `metadata.m = "a" AND deadline < "` + limit + `"`,
		Change: order.BulkChange{Shift: time.Minute, MaxTTL: 24 * time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	var in order.Order
	got, err := s.WorkOperationSplit(ctx, op.ID, func() {
		r := func(id string, ttl time.Duration) order.Order {
			o, err := s.Reschedule(ctx, id, order.Reschedule{TTL: ttl, MaxTTL: 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			return o
		}
		r("rc-out", 3*time.Hour)
		in = r("rc-in", 90*time.Minute)
		if _, err := s.Complete(ctx, "rc-done"); err != nil {
			t.Fatal(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != (order.Progress{Matched: 4, Changed: 2, Skipped: 2}) {
		t.Errorf("progress %+v, want 4 matched, 2 changed (rc-in, rc-same), 2 skipped (rc-out, rc-done)", got)
	}
	check := func(id string, deadline time.Time, reschedules int) {
		t.Helper()
		o, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if o.Status == order.StatusPending && (!o.Deadline.Equal(deadline) || o.Reschedules != reschedules) {
			t.Errorf("%s: due %v after %d reschedules, want %v after %d", id, o.Deadline, o.Reschedules, deadline, reschedules)
		}
	}
	check("rc-in", in.Deadline.Add(time.Minute), 2)
	check("rc-same", same.Deadline.Add(time.Minute), 1)
	if o, _ := s.Get(ctx, "rc-out"); o.Reschedules != 1 {
		t.Errorf("rc-out, rescheduled out of the filter, was changed by the operation: %d reschedules", o.Reschedules)
	}
	if o, _ := s.Get(ctx, "rc-done"); o.Status != order.StatusCompleted {
		t.Errorf("rc-done is %v, want completed", o.Status)
	}
}

// TestListOperationsStartOrder: operations started within the same
// millisecond are listed newest first all the same, not in the order of
// their random ids.
func TestListOperationsStartOrder(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv) // not run: the operations stay running
	ctx := t.Context()
	var started []string
	for range 30 {
		op, err := s.StartOperation(ctx, order.Operation{Filter: `metadata.m = "none"`, Change: order.BulkChange{Cancel: true}, DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		started = append(started, op.ID)
	}
	ops, err := s.ListOperations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != len(started) {
		t.Fatalf("ListOperations: %d operations, want %d", len(ops), len(started))
	}
	for i, op := range ops {
		if want := started[len(started)-1-i]; op.ID != want {
			t.Fatalf("ListOperations[%d] is %s (created %v), want %s: not newest first", i, op.ID, op.Created.Format(time.StampMilli), want)
		}
	}
}

// TestEndedOperationsDropped: an ended operation is kept for the retention
// period, then dropped with its place in the list.
func TestEndedOperationsDropped(t *testing.T) {
	srv := redistest.Start(t)
	s := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Second, Logger: testLogger(t), Partitions: 3})
	run(t, s)
	ctx := t.Context()
	for i := range 10 {
		if _, _, err := s.Checkout(ctx, fmt.Sprintf("ed-%d", i), time.Hour, map[string]string{"m": "a"}); err != nil {
			t.Fatal(err)
		}
	}
	op, err := s.StartOperation(ctx, order.Operation{Filter: `metadata.m = "a"`, Change: order.BulkChange{Cancel: true}})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the operation to end", func() bool {
		got, err := s.GetOperation(ctx, op.ID)
		return err == nil && got.Done()
	})
	// Its partitions' keys go with its end; its own hash stays.
	waitUntil(t, 5*time.Second, "the partitions' keys of the ended operation deleted", func() bool {
		keys, err := srv.Client(t).Keys(ctx, "oe:{*}:op:*").Result()
		return err == nil && len(keys) == 0
	})
	if ops, err := s.ListOperations(ctx); err != nil || len(ops) != 1 {
		t.Fatalf("ListOperations after the end: %d operations, %v; want it kept", len(ops), err)
	}
	waitUntil(t, 10*time.Second, "the operation dropped a retention after its end", func() bool {
		_, err := s.GetOperation(ctx, op.ID)
		return order.KindOf(err) == order.KindNotFound && srv.Client(t).ZCard(ctx, "oe:ops").Val() == 0
	})
}
