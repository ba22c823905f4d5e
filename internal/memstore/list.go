package memstore

import (
	"context"
	"slices"

	"github.com/orderexpiry/orderexpiry/internal/filter"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// List returns a page of the orders that match q. The memory store keeps no
// index by deadline that it can walk in order (its heap only finds the
// earliest), so a page looks at every pending and retained order once,
// under the lock: its cost is in proportion to the store, not to the page,
// which is fine for the embedded store's sizes; the Redis store walks its
// indexes instead. Due orders are expired first, as the expiry loop would.
func (s *Store) List(_ context.Context, q filter.Query) (filter.Page, error) {
	f := q.Filter
	if f == nil {
		f = filter.All()
	}
	if f.Empty() {
		return filter.Page{}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowMs()
	s.expireDueLocked(now)
	var cands []*order.Order
	keep := func(o *order.Order) {
		k := filter.KeyOf(o)
		if (q.After == nil || q.Before(*q.After, k)) && f.Statuses.Has(o.Status) && f.Deadline.Contains(k.Deadline) {
			cands = append(cands, o)
		}
	}
	for _, o := range s.pending {
		keep(o)
	}
	horizon := now.Add(-s.retention)
	for _, o := range s.closed {
		if o.ClosedAt.After(horizon) {
			keep(o)
		}
	}
	slices.SortFunc(cands, func(a, b *order.Order) int {
		ka, kb := filter.KeyOf(a), filter.KeyOf(b)
		switch {
		case q.Before(ka, kb):
			return -1
		case q.Before(kb, ka):
			return 1
		}
		return 0
	})
	// Examined in order, at most the budget of them, as the Redis store
	// does: a page can end short of its size with a position to go on.
	var p filter.Page
	budget := q.Budgeted()
	for i, o := range cands {
		if len(p.Orders) == q.PageSize || i == budget {
			k := filter.KeyOf(cands[i-1])
			p.Next = &k
			break
		}
		if f.Match(o) {
			p.Orders = append(p.Orders, s.view(o, now))
		}
	}
	return p, nil
}
