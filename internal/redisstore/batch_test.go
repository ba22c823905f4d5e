package redisstore_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestCallsBatched checks that checkouts, completions and reads made at once
// go to Redis as fewer script calls than there are orders, and that one call
// on an idle store is one script call.
func TestCallsBatched(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	s := newStore(t, srv) // not run: no sweeper's calls are counted
	ctx := t.Context()
	if _, _, err := s.Checkout(ctx, "first", time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	before := evalshaCalls(t, admin)
	if _, err := s.Get(ctx, "first"); err != nil {
		t.Fatal(err)
	}
	if n := evalshaCalls(t, admin) - before; n != 1 {
		t.Errorf("one Get on an idle store made %d script calls, want 1", n)
	}

	const n = 300
	for _, op := range []struct {
		name string
		call func(i int) error
	}{
		{"Checkout", func(i int) error {
			_, _, err := s.Checkout(ctx, fmt.Sprintf("o-%d", i), time.Hour, nil)
			return err
		}},
		{"Get", func(i int) error { _, err := s.Get(ctx, fmt.Sprintf("o-%d", i)); return err }},
		{"Complete", func(i int) error { _, err := s.Complete(ctx, fmt.Sprintf("o-%d", i)); return err }},
	} {
		before := evalshaCalls(t, admin)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				if err := op.call(i); err != nil {
					t.Errorf("%s %d: %v", op.name, i, err)
				}
			})
		}
		close(start)
		wg.Wait()
		calls := evalshaCalls(t, admin) - before
		t.Logf("%d concurrent %s calls: %d script calls", n, op.name, calls)
		if calls >= n/2 {
			t.Errorf("%d concurrent %s calls made %d script calls; want them batched into fewer than %d", n, op.name, calls, n/2)
		}
	}
}

// TestBatchRefusedWhenFull checks that in a Redis at its maxmemory a batch of
// checkouts is refused as a whole, each caller hearing ResourceExhausted,
// with nothing written, while completions are still batched and run.
func TestBatchRefusedWhenFull(t *testing.T) {
	srv := redistest.Start(t, "--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
	admin := srv.Client(t)
	s := newStore(t, srv)
	ctx := t.Context()
	md := map[string]string{"cart": strings.Repeat("x", 1000)}
	full := false
	var accepted []string
	for round := 0; !full; round++ {
		items := make([]order.CheckoutItem, 50)
		for i := range items {
			items[i] = order.CheckoutItem{ID: fmt.Sprintf("fill-%d-%d", round, i), TTL: time.Hour, Metadata: md}
		}
		// 50 orders of 1 KB are one batch (see maxBatchBytes): taken or
		// refused together.
		res := s.BatchCheckout(ctx, items)
		for i, r := range res {
			switch {
			case r.Err == nil:
				accepted = append(accepted, items[i].ID)
			case order.KindOf(r.Err) == order.KindResourceExhausted:
				full = true
			default:
				t.Fatalf("BatchCheckout item %s: %v; want success or ResourceExhausted", items[i].ID, r.Err)
			}
			if (r.Err == nil) != (res[0].Err == nil) {
				t.Fatalf("BatchCheckout round %d: item 0 answered %v, item %d %v; want one batch taken or refused as a whole", round, res[0].Err, i, r.Err)
			}
		}
		if round > 200 {
			t.Fatalf("%d orders of 1 KB taken by a Redis of 3 MB", len(accepted))
		}
	}

	// Redis frees a little once the refused batch is read; a lower limit
	// keeps it full whatever it frees.
	if err := admin.ConfigSet(ctx, "maxmemory", "1mb").Err(); err != nil {
		t.Fatal(err)
	}
	// Refused together: one batch, and concurrent single checkouts.
	items := make([]order.CheckoutItem, 40)
	for i := range items {
		items[i] = order.CheckoutItem{ID: fmt.Sprintf("refused-%d", i), TTL: time.Hour}
	}
	for i, r := range s.BatchCheckout(ctx, items) {
		if order.KindOf(r.Err) != order.KindResourceExhausted {
			t.Errorf("BatchCheckout item %d in a full Redis: %v; want ResourceExhausted", i, r.Err)
		}
	}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			_, _, err := s.Checkout(ctx, fmt.Sprintf("single-%d", i), time.Hour, nil)
			if order.KindOf(err) != order.KindResourceExhausted {
				t.Errorf("Checkout %d in a full Redis: %v; want ResourceExhausted", i, err)
			}
		})
	}
	wg.Wait()
	for _, id := range []string{"refused-0", "refused-39", "single-0", "single-39"} {
		if _, err := s.Get(ctx, id); order.KindOf(err) != order.KindNotFound {
			t.Errorf("Get(%s) after its refused checkout: %v; want NotFound", id, err)
		}
	}
	for _, id := range accepted[:20] {
		wg.Go(func() {
			if o, err := s.Complete(ctx, id); err != nil || o.Status != order.StatusCompleted {
				t.Errorf("Complete(%s) in a full Redis: %v, %v; want it completed", id, o.Status, err)
			}
		})
	}
	wg.Wait()
}

// BenchmarkCheckoutParallel measures concurrent checkouts of new orders on
// one Redis, and reports how many orders each script call took.
func BenchmarkCheckoutParallel(b *testing.B) {
	srv := redistest.Start(b)
	admin := srv.Client(b)
	s := redisstore.New(srv.Client(b), redisstore.Options{Retention: time.Hour})
	if _, _, err := s.Checkout(b.Context(), "warm", time.Hour, nil); err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	before := evalshaCalls(b, admin)
	b.SetParallelism(8) // 8 callers per CPU
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := s.Checkout(b.Context(), fmt.Sprintf("b-%d", seq.Add(1)), time.Hour, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if calls := evalshaCalls(b, admin) - before; calls > 0 {
		b.ReportMetric(float64(b.N)/float64(calls), "orders/script")
	}
}
