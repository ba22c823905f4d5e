package redisstore_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/filter"
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestClusterListSpansPartitions lists the orders of a Redis Cluster of
// three masters and 16 partitions: each page takes orders from many
// partitions, on every master, in one deadline order, and paging lists each
// order once, pending and closed alike.
func TestClusterListSpansPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	c := redistest.StartCluster(t, 3, 0)
	rdb, err := redisstore.NewClusterClient(c.Addrs()[0], redisstore.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	const partitions = 16
	s := redisstore.New(rdb, redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: partitions})
	run(t, s)

	const n = 2000
	var items []order.CheckoutItem
	for i := range n {
		// Deadlines interleave over the partitions: id i gets the i-th.
		items = append(items, order.CheckoutItem{ID: fmt.Sprintf("o-%04d", i), TTL: time.Hour + time.Duration(i)*time.Millisecond})
	}
	keys := make([]filter.Key, n)
	for b := 0; b < n; b += order.MaxBatchCheckout {
		for i, r := range s.BatchCheckout(t.Context(), items[b:b+order.MaxBatchCheckout]) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			keys[b+i] = filter.KeyOf(&r.Order)
		}
	}
	// Every tenth order is closed: listed in its place among the pending.
	for i := 0; i < n; i += 10 {
		if _, err := s.Complete(t.Context(), items[i].ID); err != nil {
			t.Fatal(err)
		}
	}
	masterOf := func(id string) string {
		return c.MasterOf(t, fmt.Sprintf("oe:{%d}:pending", order.PartitionOf(id, partitions))).Addr
	}
	for _, tc := range []struct {
		filter string
		desc   bool
		want   func(i int) bool
	}{
		{"", false, func(int) bool { return true }},
		{"", true, func(int) bool { return true }},
		{"status = PENDING", false, func(i int) bool { return i%10 != 0 }},
		{"status = COMPLETED", true, func(i int) bool { return i%10 == 0 }},
	} {
		t.Run(fmt.Sprintf("%q desc=%v", tc.filter, tc.desc), func(t *testing.T) {
			f, err := filter.Parse(tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			// Each partition's script reads its own master's clock, so the
			// deadlines are not quite in id order: the order is theirs.
			var wantKeys []filter.Key
			for i := range n {
				if tc.want(i) {
					wantKeys = append(wantKeys, keys[i])
				}
			}
			q := filter.Query{Desc: tc.desc}
			slices.SortFunc(wantKeys, func(a, b filter.Key) int {
				if q.Before(a, b) {
					return -1
				}
				return 1
			})
			var want []string
			for _, k := range wantKeys {
				want = append(want, k.ID)
			}
			var (
				got   []string
				after *filter.Key
			)
			for page := 0; ; page++ {
				p, err := s.List(t.Context(), filter.Query{Filter: f, Desc: tc.desc, PageSize: 50, After: after})
				if err != nil {
					t.Fatal(err)
				}
				parts, masters := map[int]bool{}, map[string]bool{}
				for _, o := range p.Orders {
					got = append(got, o.ID)
					parts[order.PartitionOf(o.ID, partitions)] = true
					masters[masterOf(o.ID)] = true
				}
				if page == 0 && (len(parts) < 8 || len(masters) != 3) {
					t.Errorf("the first page spans %d partitions on %d masters, want most of the 16 on all 3", len(parts), len(masters))
				}
				if p.Next == nil {
					break
				}
				after = p.Next
			}
			if len(got) != len(want) {
				t.Fatalf("listed %d orders, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("order %d listed is %s, want %s (deadline order)", i, got[i], want[i])
				}
			}
		})
	}
}

// TestRetainedIndexTrimmed checks the index of closed orders that List
// reads: a closed order enters it, a new checkout of its id takes it out,
// and the sweep drops it a retention after its deadline.
func TestRetainedIndexTrimmed(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	const retention = 300 * time.Millisecond
	s := redisstore.New(rdb, redisstore.Options{Retention: retention, Logger: testLogger(t)})
	run(t, s)
	ctx := t.Context()
	card := func() int64 {
		t.Helper()
		n, err := rdb.ZCard(ctx, "oe:{0}:retained").Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, id := range []string{"a", "b", "c"} {
		if _, _, err := s.Checkout(ctx, id, 100*time.Millisecond, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Complete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cancel(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if n := card(); n != 2 {
		t.Fatalf("%d entries after a completion and a cancellation, want 2", n)
	}
	if _, _, err := s.Checkout(ctx, "b", time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	if n := card(); n != 1 {
		t.Fatalf("%d entries after b was checked out again, want 1", n)
	}
	// c expires (an entry of its own); then, a retention after their
	// deadlines, the sweep drops both.
	for end := time.Now().Add(5 * time.Second); card() != 2; {
		if time.Now().After(end) {
			t.Fatalf("c's expiry did not enter the index: %d entries", card())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for end := time.Now().Add(5 * time.Second); card() != 0; {
		if time.Now().After(end) {
			t.Fatalf("%d entries 5s after their deadlines, with a retention of %s", card(), retention)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestListExpiriesBounded lists 150 due orders that no sweeper expired (the
// store does not run): a page expires at most 100 of them itself and ends
// there, with a position to go on; the next page expires the rest.
func TestListExpiriesBounded(t *testing.T) {
	srv := redistest.Start(t)
	s := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: testLogger(t)})
	ctx := t.Context()
	var items []order.CheckoutItem
	for i := range 150 {
		items = append(items, order.CheckoutItem{ID: fmt.Sprintf("due-%03d", i), TTL: 20 * time.Millisecond})
	}
	for _, r := range s.BatchCheckout(ctx, items) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	first, err := s.List(ctx, filter.Query{Filter: filter.All(), PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Orders) != 100 || first.Next == nil {
		t.Fatalf("the first page has %d orders (next %v), want the 100 it expired and a position", len(first.Orders), first.Next)
	}
	second, err := s.List(ctx, filter.Query{Filter: filter.All(), PageSize: 1000, After: first.Next})
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Orders) != 50 || second.Next != nil {
		t.Fatalf("the second page has %d orders (next %v), want 50 and no more", len(second.Orders), second.Next)
	}
	for _, o := range append(first.Orders, second.Orders...) {
		if o.Status != order.StatusExpired {
			t.Fatalf("%s listed %v, want expired", o.ID, o.Status)
		}
	}
}
