package memstore

import (
	"context"
	"math"

	"github.com/orderexpiry/orderexpiry/internal/filter"
)

// List returns a page of the orders that match q. The store keeps its
// pending and retained closed orders in a B-tree by deadline, then id
// (byDeadline), as the Redis store keeps its indexes: a page walks it from
// the position, examining at most q's budget of orders, so that it costs
// in proportion to what it examines, not to the store. Due orders are
// expired first, as the expiry loop would.
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
	horizon := now.Add(-s.retention)

	var (
		p        filter.Page
		last     *filter.Key
		examined int
	)
	budget := q.Budgeted()
	visit := func(k filter.Key) bool {
		if q.After != nil && !q.Before(*q.After, k) {
			return true // the position itself
		}
		if !f.Deadline.Contains(k.Deadline) {
			return false // past the deadlines asked for: the walk is done
		}
		if len(p.Orders) == q.PageSize || examined == budget {
			p.Next = last
			return false
		}
		last = &k
		examined++
		o, ok := s.pending[k.ID]
		if !ok || o.Deadline.UnixMilli() != k.Deadline {
			o, ok = s.closed[k.ID]
			if !ok || !o.ClosedAt.After(horizon) {
				return true // dropped by retention, not yet trimmed
			}
		}
		if f.Statuses.Has(o.Status) && f.Match(o) {
			p.Orders = append(p.Orders, s.view(o, now))
		}
		return true
	}
	switch {
	case !q.Desc && q.After != nil:
		s.byDeadline.AscendGreaterOrEqual(*q.After, visit)
	case !q.Desc:
		s.byDeadline.AscendGreaterOrEqual(filter.Key{Deadline: f.Deadline.Min}, visit)
	case q.After != nil:
		s.byDeadline.DescendLessOrEqual(*q.After, visit)
	default:
		s.byDeadline.DescendLessOrEqual(filter.Key{Deadline: f.Deadline.Max, ID: maxID}, visit)
	}
	return p, nil
}

// maxID comes after every order id in byte order: ids are printable ASCII
// (order.ValidateID).
var maxID = string([]byte{math.MaxUint8})
