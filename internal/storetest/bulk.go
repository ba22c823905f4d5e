package storetest

import (
	"strconv"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// waitOp polls an operation until it ends.
func waitOp(t *testing.T, s order.Store, id string) order.Operation {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		op, err := s.GetOperation(t.Context(), id)
		if err != nil {
			t.Fatalf("GetOperation(%s): %v", id, err)
		}
		if op.Done() {
			return op
		}
		if time.Now().After(deadline) {
			t.Fatalf("operation %s still %v after 15s: %+v", id, op.State, op.Progress)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startOp(t *testing.T, s order.Store, op order.Operation) order.Operation {
	t.Helper()
	op.Change.MaxTTL = 24 * time.Hour
	got, err := s.StartOperation(t.Context(), op)
	if err != nil {
		t.Fatalf("StartOperation(%q, %v): %v", op.Filter, op.Change, err)
	}
	if got.ID == "" || got.State != order.OpRunning {
		t.Fatalf("StartOperation: %+v, want a running operation with an id", got)
	}
	return got
}

// testBulkChange checks bulk operations: a dry run counts and changes
// nothing; a shift moves each matching pending order once, and no other;
// a cancel cancels the matching pending ones and leaves the closed; a
// change not allowed for an order counts it failed; the counts add up.
func testBulkChange(t *testing.T, su suite) {
	s := su.start(t, retention)
	const na, nb = 40, 12
	before := map[string]order.Order{}
	for i := range na {
		id := "ba-" + strconv.Itoa(i)
		before[id] = checkout(t, s, id, time.Hour+time.Duration(i)*time.Second, map[string]string{"m": "a"})
	}
	for i := range nb {
		id := "bb-" + strconv.Itoa(i)
		before[id] = checkout(t, s, id, time.Hour, map[string]string{"m": "b"})
	}
	complete(t, s, "bb-0")
	complete(t, s, "bb-1")

	dry := waitOp(t, s, startOp(t, s, order.Operation{Filter: `metadata.m = "a"`, Change: order.BulkChange{Shift: time.Hour}, DryRun: true}).ID)
	if dry.State != order.OpSucceeded || dry.Progress != (order.Progress{Matched: na}) {
		t.Errorf("dry run: %v %+v, want succeeded, %d matched and nothing else", dry.State, dry.Progress, na)
	}
	if o := get(t, s, "ba-0"); !o.Deadline.Equal(before["ba-0"].Deadline) {
		t.Errorf("after a dry run: ba-0 due %v, want unchanged %v", o.Deadline, before["ba-0"].Deadline)
	}

	shift := waitOp(t, s, startOp(t, s, order.Operation{Filter: `metadata.m = "a"`, Change: order.BulkChange{Shift: 30 * time.Minute}}).ID)
	if shift.State != order.OpSucceeded || shift.Progress != (order.Progress{Matched: na, Changed: na}) {
		t.Errorf("shift: %v %+v, want succeeded, %d matched and changed", shift.State, shift.Progress, na)
	}
	for id, b := range before {
		o := get(t, s, id)
		want := b.Deadline
		if o.Metadata["m"] == "a" {
			want = want.Add(30 * time.Minute)
		}
		if o.Status == order.StatusPending && !o.Deadline.Equal(want) {
			t.Errorf("after the shift: %s due %v, want %v (moved once, if it matched)", id, o.Deadline, want)
		}
	}

	cancel := waitOp(t, s, startOp(t, s, order.Operation{Filter: `metadata.m = "b"`, Change: order.BulkChange{Cancel: true}}).ID)
	if cancel.Progress != (order.Progress{Matched: nb - 2, Changed: nb - 2}) {
		t.Errorf("cancel: %+v, want %d matched and changed (the completed ones are not pending)", cancel.Progress, nb-2)
	}
	if o := get(t, s, "bb-5"); o.Status != order.StatusCancelled {
		t.Errorf("after the cancel: bb-5 is %v, want cancelled", o.Status)
	}
	if o := get(t, s, "bb-0"); o.Status != order.StatusCompleted {
		t.Errorf("after the cancel: bb-0 is %v, want still completed", o.Status)
	}

	// Moving deadlines earlier than now is not allowed: each counts failed.
	back := waitOp(t, s, startOp(t, s, order.Operation{Filter: `order_id = "ba-1*" AND metadata.m = "a"`, Change: order.BulkChange{Shift: -3 * time.Hour}}).ID)
	if back.Progress.Matched == 0 || back.Progress.Failed != back.Progress.Matched || back.Progress.Changed != 0 {
		t.Errorf("shift into the past: %+v, want every matched one failed", back.Progress)
	}

	ops, err := s.ListOperations(t.Context())
	if err != nil || len(ops) != 4 || ops[0].ID != back.ID || ops[3].ID != dry.ID {
		t.Errorf("ListOperations: %d operations, %v; want the 4, newest first", len(ops), err)
	}
	_, err = s.GetOperation(t.Context(), "nope")
	wantKind(t, "GetOperation(unknown)", err, order.KindNotFound)
	_, err = s.StartOperation(t.Context(), order.Operation{Filter: `metadata.m = `, Change: order.BulkChange{Cancel: true, MaxTTL: time.Hour}})
	wantKind(t, "StartOperation(bad filter)", err, order.KindInvalid)
}

// testBulkCancelOperation checks that a cancelled operation stops, ends
// cancelled, and that what it counted adds up to what it did.
func testBulkCancelOperation(t *testing.T, su suite) {
	s := su.start(t, retention)
	const n = 3000
	items := make([]order.CheckoutItem, 0, order.MaxBatchCheckout)
	for i := range n {
		items = append(items, order.CheckoutItem{ID: "bc-" + strconv.Itoa(i), TTL: time.Hour})
		if len(items) == cap(items) || i == n-1 {
			for _, r := range s.BatchCheckout(t.Context(), items) {
				if r.Err != nil {
					t.Fatal(r.Err)
				}
			}
			items = items[:0]
		}
	}
	op := startOp(t, s, order.Operation{Filter: `order_id = "bc-*"`, Change: order.BulkChange{TTL: 2 * time.Hour}})
	if _, err := s.CancelOperation(t.Context(), op.ID); err != nil {
		t.Fatal(err)
	}
	got := waitOp(t, s, op.ID)
	if got.State != order.OpCancelled {
		t.Errorf("after CancelOperation: %v, want cancelled", got.State)
	}
	changed := 0
	for i := range n {
		if o := get(t, s, "bc-"+strconv.Itoa(i)); o.Reschedules > 0 {
			changed++
		}
	}
	if int64(changed) != got.Progress.Changed {
		t.Errorf("cancelled operation counted %d changed; %d orders were rescheduled", got.Progress.Changed, changed)
	}
	again, err := s.CancelOperation(t.Context(), op.ID)
	if err != nil || again.State != order.OpCancelled {
		t.Errorf("CancelOperation of an ended one: %v, %v", again.State, err)
	}
}
