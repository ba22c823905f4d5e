package redisstore_test

import (
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// epochKey is where the store records its identity.
const epochKey = "oe:epoch{oe:partitions}"

// TestEmptiedStoreRenewed empties Redis under a running store, by FLUSHALL
// and by a restart without persistence: the next Ping fails and logs what
// was lost, the store is renewed with its number of partitions, Ping
// succeeds from the check after, a cursor of the lost history is refused as
// OutOfRange, and a new order expires on time.
func TestEmptiedStoreRenewed(t *testing.T) {
	tests := []struct {
		name  string
		empty func(t *testing.T, srv *redistest.Server)
	}{
		{"FLUSHALL", func(t *testing.T, srv *redistest.Server) { must(t, srv.Client(t).FlushAll(t.Context()).Err()) }},
		{"restart without persistence", func(t *testing.T, srv *redistest.Server) { srv.Restart(t) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			admin := srv.Client(t)
			logs := &redistest.LockedBuffer{}
			s := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil)), Partitions: 1})
			run(t, s)
			must(t, s.Ping(t.Context()))
			before := admin.Get(t.Context(), epochKey).Val()
			if before == "" {
				t.Fatalf("no %s after the store's first Ping", epochKey)
			}
			if _, _, err := s.Checkout(t.Context(), "lost", time.Hour, nil); err != nil {
				t.Fatal(err)
			}
			expireOnTime(t, s, s, "old")
			old, err := s.Tail(t.Context(), 0)
			if err != nil {
				t.Fatal(err)
			}

			tt.empty(t, srv)
			// Until a Ping renews the store, it has no history at all.
			err = retryUnavailable(t, func() error { return s.CheckCursor(t.Context(), old) })
			if order.KindOf(err) != order.KindOutOfRange {
				t.Errorf("CheckCursor(%v) of the emptied store: %v, want OutOfRange", old, err)
			}

			// The first Ping that reaches Redis finds the store emptied
			// (after a restart, the ones before may find no connection).
			var renewal error
			for deadline := time.Now().Add(5 * time.Second); ; {
				err := s.Ping(t.Context())
				if err != nil && strings.Contains(err.Error(), "renewed") {
					renewal = err
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no Ping reported the emptied store within 5s; the last said %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if k := order.KindOf(renewal); k != order.KindUnavailable {
				t.Errorf("Ping on the emptied store: %v (kind %d), want Unavailable", renewal, k)
			}
			if err := s.Ping(t.Context()); err != nil {
				t.Errorf("Ping after the renewal: %v, want nil", err)
			}
			if n := strings.Count(logs.String(), "level=ERROR"); n != 1 || !strings.Contains(logs.String(), "lost") {
				t.Errorf("%d errors logged, want one that says what was lost:\n%s", n, logs)
			}
			after := admin.Get(t.Context(), epochKey).Val()
			if after == "" || after == before {
				t.Errorf("%s is %q after the renewal, was %q: want a new epoch", epochKey, after, before)
			}
			if got := admin.Get(t.Context(), "oe:partitions").Val(); got != "1" {
				t.Errorf("oe:partitions = %q after the renewal, want the store's 1", got)
			}

			// What Redis lost is lost; what comes now works as before.
			if _, err := s.Get(t.Context(), "lost"); order.KindOf(err) != order.KindNotFound {
				t.Errorf("Get of an order pending before the store was emptied: %v, want NotFound", err)
			}
			expireOnTime(t, s, s, "new")
			// The partition has events again, newer than the old cursor:
			// the cursor is still refused, its events are gone.
			if err := s.CheckCursor(t.Context(), old); order.KindOf(err) != order.KindOutOfRange {
				t.Errorf("CheckCursor(%v) after the renewal: %v, want OutOfRange", old, err)
			}
			tail, err := s.Tail(t.Context(), 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.CheckCursor(t.Context(), tail); err != nil {
				t.Errorf("CheckCursor(%v) of the renewed store's last event: %v", tail, err)
			}

			// A replica started now asking for another number of
			// partitions takes the recorded one.
			later := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: 4})
			if n, err := later.Partitions(t.Context()); err != nil || n != 1 {
				t.Errorf("a store opened after the renewal asking for 4 partitions: %d, %v; want the recorded 1", n, err)
			}
			if err := later.Ping(t.Context()); err != nil {
				t.Errorf("Ping of the store opened after the renewal: %v", err)
			}
		})
	}
}

// TestEmptiedStoreOtherPartitions empties Redis under a running store with
// one partition, and starts another with four before the first one checks:
// the newcomer records its four. The first must then refuse every call and
// stop sweeping, not run with a number the store does not record, and
// serve again once the numbers agree.
func TestEmptiedStoreOtherPartitions(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	logs := &redistest.LockedBuffer{}
	s := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil)), Partitions: 1})
	run(t, s)
	must(t, s.Ping(t.Context()))

	must(t, admin.FlushAll(t.Context()).Err())
	newcomer := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: 4})
	if n, err := newcomer.Partitions(t.Context()); err != nil || n != 4 {
		t.Fatalf("newcomer on the emptied store: %d partitions, %v; want its 4", n, err)
	}

	for i := range 3 {
		err := s.Ping(t.Context())
		if k := order.KindOf(err); k != order.KindUnavailable || !strings.Contains(err.Error(), "records 4 partitions") || !strings.Contains(err.Error(), "runs with 1") {
			t.Fatalf("Ping %d of the store with 1 partition where 4 are recorded: %v (kind %d), want Unavailable naming both numbers", i, err, k)
		}
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d errors logged for three Pings that found the same mismatch, want one:\n%s", n, logs)
	}
	calls := map[string]func() error{
		"Checkout":    func() error { _, _, err := s.Checkout(t.Context(), "o", time.Minute, nil); return err },
		"Get":         func() error { _, err := s.Get(t.Context(), "o"); return err },
		"Complete":    func() error { _, err := s.Complete(t.Context(), "o"); return err },
		"Partitions":  func() error { _, err := s.Partitions(t.Context()); return err },
		"Events":      func() error { _, err := s.Events(t.Context(), 0, order.Offset{}, 10, 0); return err },
		"CheckCursor": func() error { return s.CheckCursor(t.Context(), order.Offset{}) },
	}
	for name, call := range calls {
		if err := call(); order.KindOf(err) != order.KindUnavailable {
			t.Errorf("%s on the refusing store: %v, want Unavailable", name, err)
		}
	}
	// The refusing store's sweeper leaves a due order of its partition 0
	// alone (the newcomer, which does not run, would sweep it).
	id := idOfPartition(t, 0, 4)
	if _, _, err := newcomer.Checkout(t.Context(), id, 10*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * redisstore.MaxSweepSleep)
	if n := admin.ZCard(t.Context(), "oe:{0}:deadlines").Val(); n != 1 {
		t.Errorf("the refusing store's sweeper expired a due order (%d left pending, want 1)", n)
	}

	// The numbers agree again: the store adopts the newcomer's epoch,
	// says so once, and serves.
	must(t, admin.Set(t.Context(), "oe:partitions", "1", 0).Err())
	if err := s.Ping(t.Context()); err == nil || !strings.Contains(err.Error(), "epoch changed") {
		t.Errorf("first Ping once the numbers agree: %v, want the change of epoch reported", err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping once the numbers agree: %v", err)
	}
	if _, _, err := s.Checkout(t.Context(), "o", time.Minute, nil); err != nil {
		t.Errorf("Checkout once the numbers agree: %v", err)
	}
}

// TestCheckCursorBeyondLastEvent checks that a cursor later than every event
// its partition logged, but not ahead of the clock, is refused: it cannot
// come from this log.
func TestCheckCursorBeyondLastEvent(t *testing.T) {
	srv := redistest.Start(t)
	s := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: 2})
	run(t, s)
	id := idOfPartition(t, 0, 2)
	if _, _, err := s.Checkout(t.Context(), id, 10*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	ev := collect(t, s, order.Offset{}, 1)[0]
	time.Sleep(5 * time.Millisecond) // so that ev.Ms+2 is not ahead of Redis's clock
	tests := []struct {
		name string
		pos  []order.Offset
		ok   bool
	}{
		{"the last event", []order.Offset{ev.Offset, {}}, true},
		{"next in its millisecond", []order.Offset{ev.Offset.Next(), {}}, false},
		{"after the last event", []order.Offset{{Ms: ev.Offset.Ms + 2}, {}}, false},
		{"in a partition with no event", []order.Offset{ev.Offset, {Ms: ev.Offset.Ms - 1}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.CheckCursor(t.Context(), tt.pos...)
			if tt.ok {
				if err != nil {
					t.Errorf("CheckCursor(%v): %v", tt.pos, err)
				}
				return
			}
			if order.KindOf(err) != order.KindOutOfRange || !strings.Contains(err.Error(), "beyond the last event") {
				t.Errorf("CheckCursor(%v): %v, want OutOfRange for a cursor beyond the last event", tt.pos, err)
			}
		})
	}
}

// idOfPartition returns an order id of partition p of n.
func idOfPartition(t *testing.T, p, n int) string {
	t.Helper()
	for i := 0; ; i++ {
		if id := "id-" + strconv.Itoa(i); order.PartitionOf(id, n) == p {
			return id
		}
	}
}

// retryUnavailable calls f until it fails with another kind than
// Unavailable or succeeds, for up to 5 s: after a restart of Redis, the
// client's pooled connections fail once each.
func retryUnavailable(t *testing.T, f func() error) error {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := f()
		if order.KindOf(err) != order.KindUnavailable || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
