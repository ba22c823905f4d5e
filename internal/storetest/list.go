package storetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/filter"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// lister returns the store's List: every store must have it.
func lister(t *testing.T, s order.Store) filter.Lister {
	t.Helper()
	l, ok := s.(filter.Lister)
	if !ok {
		t.Fatalf("%T does not list orders (filter.Lister)", s)
	}
	return l
}

// listAll pages through a listing, pageSize orders at a time, and returns
// every order and the number of pages.
func listAll(t *testing.T, s order.Store, filterText string, desc bool, pageSize, budget int) ([]order.Order, int) {
	t.Helper()
	f, err := filter.Parse(filterText)
	if err != nil {
		t.Fatalf("Parse(%q): %v", filterText, err)
	}
	var (
		out   []order.Order
		after *filter.Key
		pages int
	)
	for {
		p, err := lister(t, s).List(t.Context(), filter.Query{Filter: f, Desc: desc, PageSize: pageSize, After: after, Budget: budget})
		if err != nil {
			t.Fatalf("List(%q) page %d: %v", filterText, pages+1, err)
		}
		pages++
		if len(p.Orders) > pageSize {
			t.Fatalf("List(%q): %d orders in a page of %d", filterText, len(p.Orders), pageSize)
		}
		out = append(out, p.Orders...)
		if p.Next == nil {
			return out, pages
		}
		if after != nil && !(filter.Query{Desc: desc}).Before(*after, *p.Next) {
			t.Fatalf("List(%q): page %d ends at %v, not after the previous page's end %v", filterText, pages, *p.Next, *after)
		}
		after = p.Next
		if pages > 100000 {
			t.Fatalf("List(%q): no end after %d pages", filterText, pages)
		}
	}
}

func ids(os []order.Order) string {
	var b []string
	for _, o := range os {
		b = append(b, o.ID)
	}
	return strings.Join(b, " ")
}

// checkSorted fails unless os is in deadline order, then id order.
func checkSorted(t *testing.T, what string, os []order.Order, desc bool) {
	t.Helper()
	q := filter.Query{Desc: desc}
	for i := 1; i < len(os); i++ {
		if !q.Before(filter.KeyOf(&os[i-1]), filter.KeyOf(&os[i])) {
			t.Fatalf("%s: %s (%v) before %s (%v), out of order", what, os[i-1].ID, os[i-1].Deadline, os[i].ID, os[i].Deadline)
		}
	}
}

// testListFilters lists a store of orders in every status through each
// operator, page by page, and compares each listing with what Get says of
// every order.
func testListFilters(t *testing.T, su suite) {
	s := su.start(t, retention)
	ctx := t.Context()
	var items []order.CheckoutItem
	for i := range 60 {
		md := map[string]string{"merchant": fmt.Sprintf("m-%d", i%4)}
		if i%5 == 0 {
			md["customer-id"] = fmt.Sprintf("c%d", i%3)
		}
		prefix := []string{"abc", "abd", "xyz"}[i%3]
		items = append(items, order.CheckoutItem{ID: fmt.Sprintf("%s-%02d", prefix, i), TTL: time.Duration(10+i%7) * time.Minute, Metadata: md})
	}
	// Ten orders due at once, that expire; the rest stay pending a while.
	for i := range 10 {
		items = append(items, order.CheckoutItem{ID: fmt.Sprintf("due-%02d", i), TTL: 50 * time.Millisecond, Metadata: map[string]string{"merchant": "m-1"}})
	}
	for _, r := range s.BatchCheckout(ctx, items) {
		if r.Err != nil {
			t.Fatalf("BatchCheckout: %v", r.Err)
		}
	}
	for i := 0; i < 60; i += 6 {
		if _, err := s.Complete(ctx, items[i].ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Cancel(ctx, items[i+1].ID); err != nil {
			t.Fatal(err)
		}
	}
	reschedule(t, s, items[2].ID, order.Reschedule{TTL: 3 * time.Minute, MaxTTL: time.Hour})
	waitFor(t, "the due orders to expire", func() bool { return get(t, s, "due-09").Status == order.StatusExpired })

	var all []order.Order
	for _, it := range items {
		all = append(all, get(t, s, it.ID))
	}
	mid := all[30].Deadline.UTC().Format(time.RFC3339Nano)
	created := all[30].CreatedAt.UTC().Format(time.RFC3339Nano)
	filters := []string{
		"",
		"status = PENDING",
		"status = EXPIRED",
		"status = COMPLETED",
		"status = CANCELLED",
		"status != PENDING",
		"status = EXPIRED OR status = CANCELLED",
		`deadline < "` + mid + `"`,
		`deadline <= "` + mid + `"`,
		`deadline > "` + mid + `"`,
		`deadline >= "` + mid + `"`,
		`deadline = "` + mid + `"`,
		`deadline != "` + mid + `"`,
		`status = PENDING AND deadline >= "` + mid + `"`,
		`create_time >= "` + created + `"`,
		`created_at < "` + created + `"`,
		`closed_at > "2000-01-01T00:00:00Z"`,
		`metadata.merchant = "m-1"`,
		`metadata.merchant != "m-1"`,
		`metadata."customer-id" = "c1"`,
		`metadata:"customer-id"`,
		`status = PENDING AND metadata.merchant = "m-2"`,
		`order_id:"abc*"`,
		`order_id = "ab*"`,
		`order_id = "xyz-05"`,
		`order_id != "xyz*"`,
		`reschedules > 0`,
		`NOT status = PENDING AND order_id:"abd*"`,
		`(status = COMPLETED OR status = CANCELLED) AND metadata.merchant = "m-0"`,
		`metadata.merchant = "m-1" AND metadata.merchant = "m-2"`,
		`metadata.merchant = "nobody"`,
	}
	for _, text := range filters {
		for _, desc := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/desc=%v", text, desc), func(t *testing.T) {
				f, err := filter.Parse(text)
				if err != nil {
					t.Fatal(err)
				}
				var want []order.Order
				for _, o := range all {
					if f.Match(&o) {
						want = append(want, o)
					}
				}
				q := filter.Query{Desc: desc}
				slices.SortFunc(want, func(a, b order.Order) int {
					if q.Before(filter.KeyOf(&a), filter.KeyOf(&b)) {
						return -1
					}
					return 1
				})
				got, _ := listAll(t, s, text, desc, 7, 0)
				if ids(got) != ids(want) {
					t.Errorf("List(%q) by 7:\n got %s\nwant %s", text, ids(got), ids(want))
				}
				for i := range min(len(got), len(want)) {
					if got[i].Status != want[i].Status || !got[i].Deadline.Equal(want[i].Deadline) || !got[i].CreatedAt.Equal(want[i].CreatedAt) ||
						!got[i].ClosedAt.Equal(want[i].ClosedAt) || got[i].Reschedules != want[i].Reschedules || fmt.Sprint(got[i].Metadata) != fmt.Sprint(want[i].Metadata) {
						t.Errorf("List(%q) lists %+v; Get says %+v", text, got[i], want[i])
					}
				}
				// One page holding all gives the same.
				if one, pages := listAll(t, s, text, desc, 1000, 0); ids(one) != ids(got) || pages != 1 {
					t.Errorf("List(%q) in one page: %d pages, %s", text, pages, ids(one))
				}
			})
		}
	}
	// Some listings have known contents, so that the comparison above is
	// not of two empty lists.
	for text, n := range map[string]int{"": 70, "status = EXPIRED": 10, "status = COMPLETED": 10, `order_id:"abc*"`: 20, `metadata.merchant = "m-1"`: 25} {
		if got, _ := listAll(t, s, text, false, 1000, 0); len(got) != n {
			t.Errorf("List(%q) lists %d orders, want %d", text, len(got), n)
		}
	}
}

// testListSameDeadline pages through orders that share their deadline one
// at a time: the position within a deadline is the id.
func testListSameDeadline(t *testing.T, su suite) {
	s := su.start(t, retention)
	// An absolute deadline, so that the orders share it whatever the
	// store's clock reads between them.
	at := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	var items []order.CheckoutItem
	for i := range 50 {
		items = append(items, order.CheckoutItem{ID: fmt.Sprintf("same-%03d", (i*37)%50), At: at, MaxTTL: 2 * time.Hour})
	}
	for _, r := range s.BatchCheckout(t.Context(), items) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	for _, desc := range []bool{false, true} {
		for _, size := range []int{1, 3, 50} {
			got, _ := listAll(t, s, "", desc, size, 0)
			if len(got) != 50 {
				t.Fatalf("desc=%v by %d: %d orders listed, want 50: %s", desc, size, len(got), ids(got))
			}
			checkSorted(t, fmt.Sprintf("desc=%v by %d", desc, size), got, desc)
			for _, o := range got {
				if !o.Deadline.Equal(at) {
					t.Fatalf("%s is due %v, not at the deadline %v the orders share", o.ID, o.Deadline, at)
				}
			}
		}
	}
}

// testListBudget lists with a filter few orders match and a small budget:
// pages come back short, even empty, with a position to go on, and paging
// on finds every match.
func testListBudget(t *testing.T, su suite) {
	s := su.start(t, retention)
	var items []order.CheckoutItem
	for i := range 500 {
		md := map[string]string{"merchant": "common"}
		if i%100 == 7 {
			md["merchant"] = "rare"
		}
		items = append(items, order.CheckoutItem{ID: fmt.Sprintf("b-%03d", i), TTL: time.Hour + time.Duration(i)*time.Millisecond, Metadata: md})
	}
	for _, r := range s.BatchCheckout(t.Context(), items) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	got, pages := listAll(t, s, `metadata.merchant = "rare"`, false, 10, 50)
	if ids(got) != "b-007 b-107 b-207 b-307 b-407" {
		t.Errorf("listed %s", ids(got))
	}
	// A store may examine fewer orders than the budget per call, never
	// more: 500 orders need at least 10 calls of 50.
	if pages < 10 {
		t.Errorf("%d pages with a budget of 50 over 500 orders, want at least 10", pages)
	}
}

// testListDueOrder lists a pending order past its deadline that nothing
// expired yet: the listing expires it first, as Get does.
func testListDueOrder(t *testing.T, su suite) {
	s := su.idle(t, retention)
	checkout(t, s, "late", 20*time.Millisecond, nil)
	time.Sleep(50 * time.Millisecond)
	got, _ := listAll(t, s, "", false, 10, 0)
	if len(got) != 1 || got[0].Status != order.StatusExpired {
		t.Fatalf("listed %+v, want the order expired", got)
	}
	if got, _ := listAll(t, s, "status = PENDING", false, 10, 0); len(got) != 0 {
		t.Errorf("status = PENDING lists %+v after the deadline", got)
	}
	evs, err := s.Events(t.Context(), order.PartitionOf("late", mustPartitions(t, s)), order.Offset{}, 10, 0)
	if err != nil || len(evs) != 1 {
		t.Errorf("events after the listing: %v, %v; want the one expiration", evs, err)
	}
}

func mustPartitions(t *testing.T, s order.Store) int {
	t.Helper()
	n, err := s.Partitions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// testListRetention lists closed orders while their record is retained,
// and not after.
func testListRetention(t *testing.T, su suite) {
	const short = 500 * time.Millisecond
	s := su.start(t, short)
	checkout(t, s, "kept", time.Hour, nil)
	checkout(t, s, "done", time.Hour, nil)
	if _, err := s.Complete(t.Context(), "done"); err != nil {
		t.Fatal(err)
	}
	if got, _ := listAll(t, s, "", false, 10, 0); ids(got) != "done kept" && ids(got) != "kept done" {
		t.Fatalf("listed %s, want done and kept", ids(got))
	}
	if got, _ := listAll(t, s, "status = COMPLETED", false, 10, 0); ids(got) != "done" {
		t.Fatalf("status = COMPLETED lists %s, want done", ids(got))
	}
	time.Sleep(short + 100*time.Millisecond)
	if got, _ := listAll(t, s, "", false, 10, 0); ids(got) != "kept" {
		t.Errorf("after retention: listed %s, want kept only", ids(got))
	}
	// Checked out again, the id is listed once, pending.
	checkout(t, s, "done", time.Hour, nil)
	if got, _ := listAll(t, s, "", false, 10, 0); len(got) != 2 {
		t.Errorf("after a new checkout: listed %s", ids(got))
	}
}

// testListPagingUnderChurn pages through 10,000 orders 100 at a time while
// new orders are checked out and the listed ones expire underneath: every
// one of the 10,000 is listed exactly once (an order keeps its place when it
// closes), and no order is listed twice.
func testListPagingUnderChurn(t *testing.T, su suite) {
	s := su.start(t, retention)
	ctx := t.Context()
	const n = 10000
	start := time.Now()
	// Deadlines a millisecond apart from 50 ms on: the first pages have
	// expired when they are read (the listing starts after 200 ms), the
	// last have not (the listing moves 100 ms of deadlines a page, faster
	// than the clock), and those between expire while the pages are read.
	for b := 0; b < n; b += order.MaxBatchCheckout {
		var items []order.CheckoutItem
		for i := b; i < b+order.MaxBatchCheckout; i++ {
			items = append(items, order.CheckoutItem{ID: fmt.Sprintf("churn-%05d", i), TTL: 50*time.Millisecond + time.Duration(i)*time.Millisecond})
		}
		for _, r := range s.BatchCheckout(ctx, items) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		created atomic.Int64
	)
	wg.Go(func() {
		for i := 0; !stop.Load(); i++ {
			// New orders before, among and after the listed ones.
			ttl := time.Duration(i%6000) * time.Millisecond
			if _, _, err := s.Checkout(context.Background(), fmt.Sprintf("new-%05d", i), ttl+time.Millisecond, nil); err != nil {
				t.Error(err)
				return
			}
			created.Add(1)
			time.Sleep(time.Millisecond)
		}
	})
	time.Sleep(200*time.Millisecond - time.Since(start))
	f, _ := filter.Parse("")
	seen := make(map[string]int)
	var after *filter.Key
	pages := 0
	var expiredSeen, pendingSeen int
	for {
		p, err := lister(t, s).List(ctx, filter.Query{Filter: f, PageSize: 100, After: after})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range p.Orders {
			seen[o.ID]++
			if strings.HasPrefix(o.ID, "churn-") {
				switch o.Status {
				case order.StatusExpired:
					expiredSeen++
				case order.StatusPending:
					pendingSeen++
				}
			}
		}
		if p.Next == nil {
			break
		}
		after = p.Next
		// Orders close ahead of the listing and behind it too.
		for _, i := range []int{(pages * 7919) % n, (pages*104729 + 11) % n} {
			if _, err := s.Cancel(ctx, fmt.Sprintf("churn-%05d", i)); err != nil && order.KindOf(err) != order.KindFailedPrecondition {
				t.Fatal(err)
			}
		}
		time.Sleep(10 * time.Millisecond) // let the store change between pages
	}
	stop.Store(true)
	wg.Wait()
	CheckListedOnce(t, seen, "churn-%05d", n)
	t.Logf("%d pages in %v; of the 10,000: %d listed pending, %d expired; %d orders created meanwhile", pages, time.Since(start).Round(time.Millisecond), pendingSeen, expiredSeen, created.Load())
	if expiredSeen == 0 || pendingSeen == 0 {
		t.Errorf("the orders did not expire while being listed (%d pending, %d expired): the test proves nothing", pendingSeen, expiredSeen)
	}
}

// CheckListedOnce fails t for each order listed more than once in seen (a
// count by id of what a paging listed) and unless each of the n orders
// named by idFormat from 0 on was listed.
func CheckListedOnce(t *testing.T, seen map[string]int, idFormat string, n int) {
	t.Helper()
	for id, c := range seen {
		if c > 1 {
			t.Errorf("%s listed %d times", id, c)
		}
	}
	missed := 0
	for i := range n {
		if seen[fmt.Sprintf(idFormat, i)] != 1 {
			missed++
		}
	}
	if missed > 0 {
		t.Errorf("%d of the %d orders were not listed", missed, n)
	}
}

// waitFor waits up to eventTimeout for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(eventTimeout); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("waited %v for %s", eventTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
