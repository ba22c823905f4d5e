package redisstore

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/orderexpiry/orderexpiry/internal/filter"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// maxListChunk is the most index entries one listScript call reads, so
// that no call holds Redis for long.
const maxListChunk = 1000

// List returns a page of the orders that match q. Each partition has two
// indexes ordered by deadline, then id: the pending orders' and the
// retained closed orders', read together (listScript). The page merges the
// partitions in q's order: each is read in chunks after the position, and
// an entry is taken only when every partition that may still hold an
// earlier one has been read past it. A page of pending orders by deadline
// therefore costs Redis in proportion to the page (and the number of
// partitions), not to the number of orders; what the indexes cannot narrow
// (metadata, an id prefix, created_at) is checked order by order, at most
// q.Budget of them per call, and the page ends early with a position to go
// on from.
func (s *Store) List(ctx context.Context, q filter.Query) (filter.Page, error) {
	f := q.Filter
	if f == nil {
		f = filter.All()
	}
	if f.Empty() {
		return filter.Page{}, nil
	}
	parts, err := s.layout(ctx)
	if err != nil {
		return filter.Page{}, err
	}
	index := "both"
	switch {
	case !f.Statuses.HasClosed():
		index = "pending"
	case !f.Statuses.Has(order.StatusPending):
		index = "closed"
	}
	srcs := make([]*listSource, len(parts))
	for i, p := range parts {
		srcs[i] = &listSource{p: p, index: index}
	}
	// Each partition is read in chunks of about its share of the page,
	// doubled at each further read of it, so that a dense partition catches
	// up in few calls and a page does not read a full page from every one.
	first := min(maxListChunk, max(4, 2*q.PageSize/len(srcs)+1))
	for _, src := range srcs {
		src.chunk = first
	}
	lo, hi := "-inf", "+inf"
	if f.Deadline.Min != math.MinInt64 {
		lo = strconv.FormatInt(f.Deadline.Min, 10)
	}
	if f.Deadline.Max != math.MaxInt64 {
		hi = strconv.FormatInt(f.Deadline.Max, 10)
	}
	budget := q.Budgeted()
	var (
		page     filter.Page
		last     *filter.Key // the last entry examined
		examined int
		expired  int // due orders this call expired itself (see listed)
	)
	for {
		if err := s.fill(ctx, srcs, q, lo, hi); err != nil {
			return filter.Page{}, err
		}
		// The next entry: the earliest head of a partition's entries.
		// Every partition that is not done has a head after fill.
		var next *listSource
		for _, src := range srcs {
			if len(src.rows) > 0 && (next == nil || q.Before(src.rows[0].key, next.rows[0].key)) {
				next = src
			}
		}
		if next == nil {
			return page, nil // every partition is done
		}
		row := next.rows[0]
		next.rows = next.rows[1:]
		if len(page.Orders) == q.PageSize || examined == budget || expired == maxListExpiries {
			page.Next = last
			return page, nil
		}
		k := row.key
		last = &k
		examined++
		if due(row, next.now) {
			expired++
		}
		o, ok, err := s.listed(ctx, next.p, row, next.now)
		if err != nil {
			return filter.Page{}, err
		}
		if ok && f.Statuses.Has(o.Status) && f.Match(&o) {
			page.Orders = append(page.Orders, o)
		}
	}
}

// maxListExpiries bounds the due orders one List expires itself, each with
// a call of its own: the sweepers expire orders within milliseconds of their
// deadline, so that many are met only while they cannot (Redis was out of
// reach), and then the page ends early rather than wait on each.
const maxListExpiries = 100

// due reports whether an index entry is a pending order past its deadline
// at now.
func due(row listRow, now int64) bool {
	return strings.HasPrefix(row.rec, "pending ") && row.key.Deadline <= now
}

// listed reads an index entry as an order; false for a closed order whose
// tombstone is gone, and for a pending one rescheduled since it was read (it
// is listed at its new deadline). A pending order past its deadline is
// expired first, by Get, as every read does.
func (s *Store) listed(ctx context.Context, p *partition, row listRow, now int64) (order.Order, bool, error) {
	if row.rec == "" {
		return order.Order{}, false, nil
	}
	o, err := s.parseOrder(p, row.key.ID, "listed", row.rec, now)
	if err != nil {
		return order.Order{}, false, err
	}
	if !due(row, now) {
		return o, true, nil
	}
	o, err = s.Get(ctx, row.key.ID)
	switch {
	case order.KindOf(err) == order.KindNotFound:
		return order.Order{}, false, nil
	case err != nil:
		return order.Order{}, false, err
	}
	return o, filter.KeyOf(&o) == row.key, nil
}

// listSource is the indexes of one partition being read for a List.
type listSource struct {
	p     *partition
	index string // "pending", "closed" or "both"
	chunk int
	// rows are the entries read and not yet taken; after is the position
	// of the last one read, done whether the index has no more.
	rows  []listRow
	after *filter.Key
	done  bool
	now   int64 // Redis's clock at the last read, ms
}

type listRow struct {
	key filter.Key
	rec string
}

// fill reads the next chunk of every index that has no entry left and is
// not done, side by side.
func (s *Store) fill(ctx context.Context, srcs []*listSource, q filter.Query, lo, hi string) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		fail error
	)
	for _, src := range srcs {
		if len(src.rows) > 0 || src.done {
			continue
		}
		wg.Go(func() {
			if err := s.read(ctx, src, q, lo, hi); err != nil {
				mu.Lock()
				fail = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return fail
}

func (s *Store) read(ctx context.Context, src *listSource, q filter.Query, lo, hi string) error {
	after := src.after
	if after == nil {
		after = q.After
	}
	ad, aid := "", ""
	if after != nil {
		ad, aid = strconv.FormatInt(after.Deadline, 10), after.ID
	}
	dir := "asc"
	if q.Desc {
		dir = "desc"
	}
	res, err := s.run(ctx, src.p, listScript, src.index, dir, ad, aid, lo, hi, src.chunk)
	if err != nil {
		return err
	}
	src.chunk = min(maxListChunk, 2*src.chunk)
	if len(res) < 2 || (len(res)-2)%3 != 0 {
		return s.corrupt(src.p.keys.deadlines, fmt.Errorf("list script reply has %d elements", len(res)))
	}
	src.now, _ = res[0].(int64)
	done, _ := res[1].(int64)
	src.done = done == 1
	for i := 2; i < len(res); i += 3 {
		id, _ := res[i].(string)
		ds, _ := res[i+1].(string)
		rec, _ := res[i+2].(string)
		d, err := strconv.ParseInt(ds, 10, 64)
		if err != nil {
			return s.corrupt(src.p.keys.deadlines, fmt.Errorf("deadline %q of order %q in an index", ds, id))
		}
		row := listRow{key: filter.Key{Deadline: d, ID: id}, rec: rec}
		src.rows = append(src.rows, row)
		src.after = &row.key
	}
	return nil
}
