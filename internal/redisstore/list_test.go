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
