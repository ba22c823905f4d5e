// Package memstore is the embedded order store: the same contract as the
// Redis store, kept in memory, for runs without Redis. Nothing survives a
// restart of the process.
package memstore

import (
	"container/heap"
	"context"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/google/btree"

	"github.com/orderexpiry/orderexpiry/internal/filter"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Options configure a memory store.
type Options struct {
	// Retention is how long closed orders and events are kept.
	Retention time.Duration
	// OnExpire, when set, is told of each expiration (by the expiry loop
	// or by a call that found the order due), and whether it came more
	// than a second after the deadline. It runs under the store's lock and
	// must not block.
	OnExpire func(expired, caughtUp int)
	// MaxGroupConsumers bounds the consumers that hold deliveries of a
	// group (see order.GroupStore.Deliver); 0 means
	// order.DefaultMaxGroupConsumers.
	MaxGroupConsumers int
}

// Store is an in-memory order store. Its zero value is not usable; call New.
type Store struct {
	onExpire  func(expired, caughtUp int)
	retention time.Duration
	now       func() time.Time
	// maxGroupConsumers is Options.MaxGroupConsumers.
	maxGroupConsumers int

	// wake tells the expiry loop that the earliest deadline may have changed.
	wake chan struct{}

	mu        sync.Mutex
	pending   map[string]*order.Order
	closed    map[string]*order.Order
	deadlines deadlineHeap
	// byDeadline orders the pending and the retained closed orders by
	// deadline, then id, for List: an order keeps its place when it
	// closes, and leaves when it is dropped or replaced (list.go).
	byDeadline *btree.BTreeG[filter.Key]
	log        []order.Event
	last       order.Offset
	trimmed    time.Time // when trim last ran
	// groups are the consumer groups, by id (groups.go).
	groups map[string]*group
	// appended is closed and replaced each time events are appended, to
	// wake the readers that wait for them.
	appended chan struct{}
	// closedCount counts the orders closed since started, by status.
	closedCount map[order.Status]int64
	started     time.Time

	// ops are the bulk operations, by id (bulk.go); bulkWake wakes their
	// worker for a new one.
	ops      map[string]*bulkOp
	opSeq    uint64
	bulkWake chan struct{}
}

// New returns an empty store.
func New(opts Options) *Store {
	if opts.MaxGroupConsumers <= 0 {
		opts.MaxGroupConsumers = order.DefaultMaxGroupConsumers
	}
	return &Store{
		maxGroupConsumers: opts.MaxGroupConsumers,
		onExpire:          opts.OnExpire,
		retention:         opts.Retention,
		now:               time.Now,
		wake:              make(chan struct{}, 1),
		pending:           make(map[string]*order.Order),
		closed:            make(map[string]*order.Order),
		appended:          make(chan struct{}),
		groups:            make(map[string]*group),
		byDeadline:        btree.NewG(32, filter.Key.Less),
		bulkWake:          make(chan struct{}, 1),

		closedCount: make(map[order.Status]int64),
		started:     time.UnixMilli(time.Now().UnixMilli()),
	}
}

func (s *Store) nowMs() time.Time { return time.UnixMilli(s.now().UnixMilli()) }

// Checkout creates a pending order, or returns the one already pending under
// this id with created false when this is the same request.
func (s *Store) Checkout(_ context.Context, id string, ttl time.Duration, md map[string]string) (order.Order, bool, error) {
	return s.checkout(order.CheckoutItem{ID: id, TTL: ttl, Metadata: md})
}

func (s *Store) checkout(it order.CheckoutItem) (order.Order, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowMs()
	if o, ok := s.current(it.ID, now); ok && o.Status == order.StatusPending {
		if err := order.CheckoutConflict(*o, it); err != nil {
			return order.Order{}, false, err
		}
		return s.view(o, now), false, nil
	}
	if old, ok := s.closed[it.ID]; ok {
		s.dropClosed(old)
	}
	o := &order.Order{
		ID:        it.ID,
		Status:    order.StatusPending,
		CreatedAt: now,
		Deadline:  now.Add(it.TTL.Truncate(time.Millisecond)),
		Metadata:  maps.Clone(it.Metadata),
		AskedTTL:  it.TTL.Truncate(time.Millisecond),
	}
	if !it.At.IsZero() {
		at := it.At.Truncate(time.Millisecond)
		if !at.After(now) || at.After(now.Add(it.MaxTTL)) {
			return order.Order{}, false, order.BadNewDeadline(at, now, it.MaxTTL)
		}
		o.Deadline, o.AskedTTL, o.AskedAt = at, 0, at
	}
	s.pending[it.ID] = o
	s.byDeadline.ReplaceOrInsert(filter.KeyOf(o))
	s.schedule(it.ID, o.Deadline)
	return s.view(o, now), true, nil
}

// BatchCheckout checks out each item as Checkout does, in turn.
func (s *Store) BatchCheckout(_ context.Context, items []order.CheckoutItem) []order.CheckoutResult {
	out := make([]order.CheckoutResult, len(items))
	for i, it := range items {
		o, created, err := s.checkout(it)
		out[i] = order.CheckoutResult{Order: o, Created: created, Err: err}
	}
	return out
}

// Get returns an order, pending or closed.
func (s *Store) Get(_ context.Context, id string) (order.Order, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowMs()
	o, ok := s.current(id, now)
	if !ok {
		return order.Order{}, order.NotFound(id)
	}
	return s.view(o, now), nil
}

// Complete marks a pending order as paid.
func (s *Store) Complete(_ context.Context, id string) (order.Order, error) {
	return s.finish(id, order.StatusCompleted)
}

// Cancel withdraws a pending order.
func (s *Store) Cancel(_ context.Context, id string) (order.Order, error) {
	return s.finish(id, order.StatusCancelled)
}

func (s *Store) finish(id string, to order.Status) (order.Order, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowMs()
	o, ok := s.current(id, now)
	if !ok {
		return order.Order{}, order.NotFound(id)
	}
	if o.Status != order.StatusPending {
		return order.Order{}, order.NotPending(*o, to)
	}
	return s.view(s.close(o, to, now), now), nil
}

// Reschedule gives a pending order before its deadline a new one.
func (s *Store) Reschedule(_ context.Context, id string, r order.Reschedule) (order.Order, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowMs()
	o, ok := s.current(id, now)
	if !ok {
		return order.Order{}, order.NotFound(id)
	}
	if o.Status != order.StatusPending {
		return order.Order{}, order.NotPending(*o, order.StatusPending)
	}
	if !r.Expected.IsZero() && !r.Expected.Truncate(time.Millisecond).Equal(o.Deadline) {
		return order.Order{}, order.DeadlineMismatch(*o, r.Expected)
	}
	at := r.At.Truncate(time.Millisecond)
	if r.At.IsZero() {
		at = now.Add(r.TTL.Truncate(time.Millisecond))
	}
	if !at.After(now) || at.After(now.Add(r.MaxTTL)) {
		return order.Order{}, order.BadNewDeadline(at, now, r.MaxTTL)
	}
	s.reschedule(o, at)
	return s.view(o, now), nil
}

// reschedule moves pending order o to deadline at, in the listing's index
// and the expiry heap, and counts it; the caller holds mu. The old heap
// entry stays behind and is skipped, its time no longer the order's
// deadline.
func (s *Store) reschedule(o *order.Order, at time.Time) {
	s.byDeadline.Delete(filter.KeyOf(o))
	o.Deadline = at
	s.byDeadline.ReplaceOrInsert(filter.KeyOf(o))
	o.Reschedules++
	s.schedule(o.ID, at)
}

// schedule adds an order's deadline to the heap, and wakes the expiry loop
// when it comes first. The caller holds mu.
func (s *Store) schedule(id string, at time.Time) {
	heap.Push(&s.deadlines, deadlineEntry{at: at, id: id})
	if s.deadlines[0].id == id {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// current returns the order under id, expiring it first if it is due, so
// that nobody sees a pending order past its deadline. The caller holds mu.
func (s *Store) current(id string, now time.Time) (*order.Order, bool) {
	if o, ok := s.pending[id]; ok {
		if o.Deadline.After(now) {
			return o, true
		}
		return s.close(o, order.StatusExpired, now), true
	}
	o, ok := s.closed[id]
	if ok && !o.ClosedAt.Add(s.retention).After(now) {
		s.dropClosed(o)
		return nil, false
	}
	return o, ok
}

// close ends a pending order with the given status and, for an expiry,
// appends its event to the log. The caller holds mu; the order's heap entry
// is left behind and skipped when it comes up.
func (s *Store) close(o *order.Order, to order.Status, now time.Time) *order.Order {
	delete(s.pending, o.ID)
	o.Status = to
	o.ClosedAt = now
	o.AskedTTL, o.AskedAt = 0, time.Time{}
	s.closed[o.ID] = o
	s.closedCount[to]++
	if to == order.StatusExpired {
		c := order.Offset{Ms: uint64(now.UnixMilli())}
		if !s.last.Less(c) {
			c = s.last.Next()
		}
		s.last = c
		s.log = append(s.log, order.Event{
			Offset:    c,
			OrderID:   o.ID,
			CreatedAt: o.CreatedAt,
			Deadline:  o.Deadline,
			ExpiredAt: now,
			Metadata:  o.Metadata,
		})
		close(s.appended)
		s.appended = make(chan struct{})
		if s.onExpire != nil {
			caughtUp := 0
			if now.Sub(o.Deadline) > time.Second {
				caughtUp = 1
			}
			s.onExpire(1, caughtUp)
		}
	}
	return o
}

// view copies an order for a caller, with its remaining time.
func (s *Store) view(o *order.Order, now time.Time) order.Order {
	v := *o
	v.Metadata = maps.Clone(o.Metadata)
	if v.Status == order.StatusPending {
		v.TTLRemaining = v.Deadline.Sub(now)
	}
	return v
}

// Partitions returns 1: the memory store's log is one partition.
func (s *Store) Partitions(context.Context) (int, error) { return 1, nil }

// Events returns up to limit events after the offset, in log order. When
// there are none and wait is positive, it blocks until one arrives or wait
// passes. The log has one partition, 0.
func (s *Store) Events(ctx context.Context, _ int, after order.Offset, limit int, wait time.Duration) ([]order.Event, error) {
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		s.mu.Lock()
		i := s.after(after)
		n := min(len(s.log)-i, limit)
		out := make([]order.Event, n)
		copy(out, s.log[i:i+n])
		appended := s.appended
		s.mu.Unlock()
		if n > 0 || wait <= 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timeout:
			return nil, nil
		case <-appended:
		}
	}
}

// Tail returns the offset of the last event in the log.
func (s *Store) Tail(context.Context, int) (order.Offset, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, nil
}

// CheckCursor says whether a watch can resume after each offset without a
// gap.
func (s *Store) CheckCursor(_ context.Context, offsets ...order.Offset) error {
	now := uint64(s.now().UnixMilli())
	for _, c := range offsets {
		if err := order.CheckOffset(c, now, uint64(s.retention.Milliseconds())); err != nil {
			return err
		}
	}
	return nil
}

// Stats returns the counts of orders since the store was made, and its one
// partition's pending orders, next deadline and retained events.
func (s *Store) Stats(context.Context) (order.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := order.PartitionStats{Pending: int64(len(s.pending)), Events: int64(len(s.log))}
	// The heap keeps the entries of closed and rescheduled orders until
	// they come up, to be skipped then: those on top are dropped now, as
	// the expiry loop would, so that the top is the next deadline.
	for len(s.deadlines) > 0 {
		e := s.deadlines[0]
		if o, ok := s.pending[e.id]; ok && o.Deadline.Equal(e.at) {
			p.NextDeadline = e.at
			break
		}
		heap.Pop(&s.deadlines)
	}
	return order.Stats{
		Pending:    p.Pending,
		Expired:    s.closedCount[order.StatusExpired],
		Completed:  s.closedCount[order.StatusCompleted],
		Cancelled:  s.closedCount[order.StatusCancelled],
		Since:      s.started,
		Partitions: []order.PartitionStats{p},
	}, nil
}

// Ping always succeeds: memory is always there.
func (s *Store) Ping(context.Context) error { return nil }

// Run expires orders at their deadline and drops what retention no longer
// keeps, until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	ops := make(chan struct{})
	go func() {
		defer close(ops)
		s.runOperations(ctx)
	}()
	defer func() { <-ops }()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-s.wake:
		}
		next := s.expireDue()
		// Since Go 1.23 Reset leaves no stale tick behind, fired or not.
		timer.Reset(next)
	}
}

// trimInterval is how often the log and the closed orders are trimmed.
const trimInterval = time.Second

// expireDue expires every due order, trims the log and returns how long to
// sleep until the next deadline or trim.
func (s *Store) expireDue() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowMs()
	s.expireDueLocked(now)
	if now.Sub(s.trimmed) >= trimInterval {
		s.trim(now)
		s.trimmed = now
	}
	// Wake at least every trimInterval, so that the log is trimmed when no
	// order is pending too.
	if len(s.deadlines) == 0 {
		return trimInterval
	}
	return min(s.deadlines[0].at.Sub(now), trimInterval)
}

// dropClosed forgets a closed order. The caller holds mu.
func (s *Store) dropClosed(o *order.Order) {
	delete(s.closed, o.ID)
	s.byDeadline.Delete(filter.KeyOf(o))
}

// expireDueLocked expires every order due at now. The caller holds mu.
func (s *Store) expireDueLocked(now time.Time) {
	for len(s.deadlines) > 0 && !s.deadlines[0].at.After(now) {
		e := heap.Pop(&s.deadlines).(deadlineEntry)
		if o, ok := s.pending[e.id]; ok && o.Deadline.Equal(e.at) {
			s.close(o, order.StatusExpired, now)
		}
	}
}

// trim drops events and closed orders older than retention. The caller
// holds mu.
//
// An event older than retention that a consumer group still needs (in
// flight, a dead letter, or not yet delivered to it) is kept, not dropped,
// and so is every event after it: the log is trimmed only up to the oldest
// event any group needs. A group that nobody consumes therefore keeps the
// log, and the store's memory, growing until it is consumed or deleted.
func (s *Store) trim(now time.Time) {
	// Keep events of the horizon's own millisecond: an offset in it is
	// still accepted (order.CheckOffset).
	horizon := now.Add(-s.retention)
	i := sort.Search(len(s.log), func(i int) bool { return !s.log[i].ExpiredAt.Before(horizon) })
	if oldest, ok := s.oldestNeeded(); ok {
		i = min(i, sort.Search(len(s.log), func(i int) bool { return !s.log[i].Offset.Less(oldest) }))
	}
	if i > 0 {
		s.log = append([]order.Event(nil), s.log[i:]...)
	}
	for _, o := range s.closed {
		if !o.ClosedAt.After(horizon) {
			s.dropClosed(o)
		}
	}
}

type deadlineEntry struct {
	at time.Time
	id string
}

// deadlineHeap orders pending orders by deadline, for the expiry loop.
type deadlineHeap []deadlineEntry

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h deadlineHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *deadlineHeap) Push(x any)        { *h = append(*h, x.(deadlineEntry)) }
func (h *deadlineHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
