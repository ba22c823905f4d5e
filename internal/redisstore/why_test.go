package redisstore_test

import (
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestWhyHashBounded: the hash that keeps why deliveries failed holds an
// entry only while the event is in flight or a dead letter: an
// acknowledgement or a redrive deletes it, and deleting the group deletes
// the hash.
func TestWhyHashBounded(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	s := newStore(t, srv)
	run(t, s)
	ctx := t.Context()
	after, err := s.Tail(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateGroup(ctx, order.Group{ID: "g", AckDeadline: time.Minute, MaxDeliveries: 1}, nil, 10); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"w-0", "w-1"} {
		if _, _, err := s.Checkout(ctx, id, 10*time.Millisecond, nil); err != nil {
			t.Fatal(err)
		}
	}
	for got := 0; got < 2; {
		evs, err := s.Events(ctx, 0, after, 2, 5*time.Second)
		if err != nil || len(evs) == 0 {
			t.Fatalf("events %v, %v; want the two expiries", evs, err)
		}
		got += len(evs)
		after = evs[len(evs)-1].Offset
	}
	why := func(want int64, when string) {
		t.Helper()
		keys, err := admin.Keys(ctx, "*:why:g").Result()
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, k := range keys {
			n += admin.HLen(ctx, k).Val()
		}
		if n != want {
			t.Errorf("%s: the why hashes %v hold %d entries, want %d", when, keys, n, want)
		}
	}
	ds, err := s.Deliver(ctx, "g", "c", 2)
	if err != nil || len(ds) != 2 {
		t.Fatalf("Deliver = %v, %v; want 2", ds, err)
	}
	why(2, "delivered")
	if _, err := s.Ack(ctx, "g", []order.AckID{ds[0].AckID}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Nack(ctx, "g", []order.AckID{ds[1].AckID}, 0, "no"); err != nil {
		t.Fatal(err)
	}
	why(1, "one acknowledged, one a dead letter")
	if n, err := s.Redrive(ctx, "g", nil); err != nil || n != 1 {
		t.Fatalf("Redrive = %d, %v; want 1", n, err)
	}
	why(0, "redriven")
	if ds, err = s.Deliver(ctx, "g", "c", 2); err != nil || len(ds) != 1 {
		t.Fatalf("Deliver = %v, %v; want 1", ds, err)
	}
	why(1, "delivered again")
	if err := s.DeleteGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	if n, err := admin.Keys(ctx, "*:why:*").Result(); err != nil || len(n) != 0 {
		t.Errorf("after DeleteGroup, keys %v (%v); want none", n, err)
	}
}
