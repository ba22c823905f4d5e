package memstore_test

import (
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/memstore"
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/storetest"
)

var _ order.Store = (*memstore.Store)(nil)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, retention time.Duration) order.Store {
		return memstore.New(memstore.Options{Retention: retention})
	})
}

// TestTrimUpToWhatGroupsNeed checks that the log is trimmed up to the oldest
// event a group needs, not further and not less far: an event before it
// that no group needs goes at retention. The conformance suite asks only
// that needed events stay, since a Redis stream is trimmed in whole nodes.
func TestTrimUpToWhatGroupsNeed(t *testing.T) {
	const keep = time.Second
	s := memstore.New(memstore.Options{Retention: keep})
	storetest.RunStore(t, s)
	ctx := t.Context()
	if _, _, err := s.CreateGroup(ctx, order.Group{ID: "g", AckDeadline: time.Minute, MaxDeliveries: 5}, nil, 10); err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	for i, id := range []string{"x", "y"} {
		if _, _, err := s.Checkout(ctx, id, time.Duration(20+20*i)*time.Millisecond, nil); err != nil {
			t.Fatalf("Checkout(%s): %v", id, err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		_, st, err := s.Group(ctx, "g")
		if err != nil {
			t.Fatalf("Group: %v", err)
		}
		if st.Backlog == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the orders did not expire within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ds, err := s.Deliver(ctx, "g", "c", 1)
	if err != nil || len(ds) != 1 || ds[0].Event.OrderID != "x" {
		t.Fatalf("Deliver = %+v, %v; want the event of x", ds, err)
	}
	if st, err := s.Ack(ctx, "g", []order.AckID{ds[0].AckID}); err != nil || st[0] != order.AckDone {
		t.Fatalf("Ack = %v, %v; want done", st, err)
	}
	// y, in the backlog, is kept; x, acknowledged before it, is not.
	for deadline := time.Now().Add(keep + 3*time.Second); ; {
		evs, err := s.Events(ctx, 0, order.Offset{}, 10, 0)
		if err != nil {
			t.Fatalf("Events: %v", err)
		}
		if len(evs) == 0 || evs[len(evs)-1].OrderID != "y" {
			t.Fatalf("the log has %d events, the last not y's: a group needs y", len(evs))
		}
		if len(evs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("x's event is still in the log %v after it was logged; retention is %v and no group needs it", time.Since(ds[0].Event.ExpiredAt), keep)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
