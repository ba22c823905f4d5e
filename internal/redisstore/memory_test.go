package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// maxMemory is the limit of the Redis of TestMemoryLimit, in bytes.
const maxMemory = 3 << 20

// dueAfter is the ttl of the i-th of the 20 orders of TestMemoryLimit that
// come due in a full Redis.
func dueAfter(i int) time.Duration {
	if i < 10 {
		return 6 * time.Second
	}
	return 15 * time.Second
}

// TestMemoryLimit fills a Redis that has a maxmemory and no eviction with
// orders of about 1 KB: checkouts are refused with ResourceExhausted once it
// is full, each before writing anything, and Redis stays near its limit;
// completing, cancelling, reading and expiring go on, and pending orders
// still expire on time into the log.
func TestMemoryLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("Redis filled to its maxmemory: skipped with -short")
	}
	srv := redistest.Start(t, "--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
	admin := srv.Client(t)
	s := newStore(t, srv)
	run(t, s)
	ctx := t.Context()
	md := map[string]string{"cart": strings.Repeat("x", 1000)}

	// An order closed before Redis is full, whose id a refused checkout
	// will ask for again: its tombstone must survive the refusal.
	if _, _, err := s.Checkout(ctx, "paid", time.Hour, md); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Complete(ctx, "paid"); err != nil {
		t.Fatal(err)
	}
	// Orders that come due while Redis is full: 10 due in 6 s, 10 in
	// 15 s; the first ten due after the fill (which a busy machine makes
	// slower) are those that must expire on time.
	start := time.Now()
	var due []string
	for i := range 20 {
		id := fmt.Sprintf("due-%d", i)
		if _, _, err := s.Checkout(ctx, id, dueAfter(i), md); err != nil {
			t.Fatal(err)
		}
		due = append(due, id)
	}
	after, err := s.Tail(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}

	// Fill until a checkout is refused; without the memory check Redis
	// would take them all, so the loop stops at twice the limit.
	var accepted []string
	var refused error
	for i := 0; refused == nil; i++ {
		id := fmt.Sprintf("fill-%d", i)
		_, _, err := s.Checkout(ctx, id, time.Hour, md)
		switch {
		case err == nil:
			accepted = append(accepted, id)
		case order.KindOf(err) == order.KindResourceExhausted:
			refused = err
		default:
			t.Fatalf("checkout %s: %v; want success or ResourceExhausted", id, err)
		}
		if i%100 == 0 && usedMemory(t, admin) > 2*maxMemory {
			t.Fatalf("Redis holds %d bytes after %d checkouts, twice its maxmemory of %d, and still takes checkouts",
				usedMemory(t, admin), len(accepted), maxMemory)
		}
	}
	filled := time.Since(start)
	if filled > dueAfter(len(due)-1)-time.Second {
		t.Fatalf("filling Redis took %v, too long to see orders due after it expire in a full Redis", filled)
	}
	// The group due after the fill is watched; the events of those due
	// before it come first.
	chosen := dueAfter(len(due) - 1)
	if dueAfter(0) > filled+500*time.Millisecond {
		chosen = dueAfter(0)
	}
	var watched []string
	waitFor := 0
	for i, id := range due {
		if dueAfter(i) <= chosen {
			waitFor++
		}
		if dueAfter(i) == chosen {
			watched = append(watched, id)
		}
	}
	var oe *order.Error
	if !errors.As(refused, &oe) || !strings.Contains(oe.Msg, "maxmemory") {
		t.Errorf("refused checkout: %v; want a message naming Redis's maxmemory", refused)
	}
	full := usedMemory(t, admin)

	// Every later checkout is refused, before writing anything: a new id
	// leaves no trace, and a closed one keeps its tombstone.
	for i, id := range []string{"refused-new", "paid", "refused-other"} {
		_, _, err := s.Checkout(ctx, id, time.Hour, md)
		if order.KindOf(err) != order.KindResourceExhausted {
			t.Fatalf("checkout %d (%s) in a full Redis: %v; want ResourceExhausted", i, id, err)
		}
	}
	for _, id := range []string{"refused-new", "refused-other"} {
		if _, err := s.Get(ctx, id); order.KindOf(err) != order.KindNotFound {
			t.Errorf("Get(%s) after its refused checkout: %v; want NotFound", id, err)
		}
		if tr := traces(t, admin, id); len(tr) > 0 {
			t.Errorf("the refused checkout of %s left %v in Redis", id, tr)
		}
	}
	if o, err := s.Get(ctx, "paid"); err != nil || o.Status != order.StatusCompleted {
		t.Errorf("Get(paid) after a refused checkout of its id: %v, %v; want it still completed", o.Status, err)
	}

	// Completing and cancelling go on.
	for i, id := range accepted[:50] {
		var err error
		if i%2 == 0 {
			_, err = s.Complete(ctx, id)
		} else {
			_, err = s.Cancel(ctx, id)
		}
		if err != nil {
			t.Fatalf("closing %s in a full Redis: %v", id, err)
		}
	}
	// A replica of the service started now comes up and reads orders.
	later := newStore(t, srv)
	if o, err := later.Get(ctx, accepted[0]); err != nil || o.Status != order.StatusCompleted {
		t.Errorf("a store started on the full Redis: Get(%s) = %v, %v; want it completed", accepted[0], o.Status, err)
	}

	// The orders due after the fill expire on time, each once, into the
	// log, and so do those due during it.
	time.Sleep(time.Until(start.Add(chosen - time.Second)))
	evs := collect(t, s, after, waitFor)
	seen := map[string]int{}
	for _, ev := range evs {
		seen[ev.OrderID]++
		if late := ev.ExpiredAt.Sub(ev.Deadline); slices.Contains(watched, ev.OrderID) && (late < 0 || late > 250*time.Millisecond) {
			t.Errorf("%s expired %v after its deadline in a full Redis, want within 250ms", ev.OrderID, late)
		}
	}
	for _, id := range due[:waitFor] {
		if seen[id] != 1 {
			t.Errorf("%s has %d events in the log, want 1", id, seen[id])
		}
		if o, err := s.Get(ctx, id); err != nil || o.Status != order.StatusExpired {
			t.Errorf("Get(%s): %v, %v; want it expired", id, o.Status, err)
		}
	}
	end := usedMemory(t, admin)
	// Redis refuses a checkout once it is over the limit, so it holds at
	// most one checkout more (and its connections' buffers, which it counts
	// too). The closes that follow run whatever the memory, and each adds a
	// little: a tombstone and, for an expiry, an event with the order's
	// metadata, less the pending order's keys (about 0.5 KB a completion and
	// 1.2 KB an expiry with this metadata); 70 of them stay well within 10%.
	if full > maxMemory*51/50 {
		t.Errorf("Redis holds %d bytes when it first refuses a checkout, more than 2%% over its maxmemory of %d", full, maxMemory)
	}
	if end > maxMemory*11/10 {
		t.Errorf("Redis holds %d bytes after 70 closes in a full Redis, more than 10%% over its maxmemory of %d", end, maxMemory)
	}
	t.Logf("RESULT %s: maxmemory=%d used_memory_full=%d used_memory_end=%d accepted=%d refused_after_full=3 fill=%v",
		t.Name(), maxMemory, full, end, len(accepted)+len(due)+1, filled.Round(time.Millisecond))
}

// usedMemory is Redis's used_memory, the figure it compares with
// maxmemory.
func usedMemory(t *testing.T, admin *redis.Client) int64 {
	t.Helper()
	return infoInt(t, admin, "memory", "used_memory", "")
}

// traces lists what Redis holds of an order: keys named after it, and its
// entries in the sorted sets and hashes of the store.
func traces(t *testing.T, admin *redis.Client, id string) []string {
	t.Helper()
	ctx := context.Background()
	keys, err := admin.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		if strings.Contains(k, id) {
			out = append(out, k)
			continue
		}
		switch admin.Type(ctx, k).Val() {
		case "zset":
			if err := admin.ZScore(ctx, k, id).Err(); err == nil {
				out = append(out, k+" member "+id)
			}
		case "hash":
			if admin.HExists(ctx, k, id).Val() {
				out = append(out, k+" field "+id)
			}
		}
	}
	return out
}
