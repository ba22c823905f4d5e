package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Checkout creates a pending order, or returns the one already pending under
// this id with created false when this is the same request.
func (s *Store) Checkout(ctx context.Context, id string, ttl time.Duration, md map[string]string) (order.Order, bool, error) {
	r := s.BatchCheckout(ctx, []order.CheckoutItem{{ID: id, TTL: ttl, Metadata: md}})[0]
	return r.Order, r.Created, r.Err
}

// BatchCheckout checks out each item as Checkout does. The items of one
// partition go to Redis in the partition's batches (see batch.go), the
// partitions side by side.
func (s *Store) BatchCheckout(ctx context.Context, items []order.CheckoutItem) []order.CheckoutResult {
	out := make([]order.CheckoutResult, len(items))
	fail := func(err error) []order.CheckoutResult {
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	// A Redis that may evict would lose the order when it fills up.
	if err := s.evictionRefusal(); err != nil {
		return fail(err)
	}
	parts, err := s.layout(ctx)
	if err != nil {
		return fail(err)
	}
	calls := make([]call, len(items))
	byPart := make(map[*partition][]*call)
	for i, it := range items {
		meta, err := encodeMetadata(it.Metadata)
		if err != nil {
			out[i].Err = err
			continue
		}
		p := parts[order.PartitionOf(it.ID, len(parts))]
		asked := "t" + strconv.FormatInt(it.TTL.Milliseconds(), 10)
		if !it.At.IsZero() {
			asked = "a" + strconv.FormatInt(it.At.UnixMilli(), 10)
		}
		calls[i].args = []any{it.ID, asked, it.MaxTTL.Milliseconds(), meta}
		calls[i].size = len(it.ID) + len(meta)
		byPart[p] = append(byPart[p], &calls[i])
	}
	failed := s.eachPartition(ctx, byPart, func(p *partition) *batcher { return &p.checkouts }, &checkoutBatch)
	for i, it := range items {
		if out[i].Err != nil {
			continue
		}
		p := parts[order.PartitionOf(it.ID, len(parts))]
		if err := failed[p]; err != nil {
			out[i].Err = err
			continue
		}
		if calls[i].code == "bad" {
			out[i].Err = order.BadNewDeadline(it.At.Truncate(time.Millisecond), time.UnixMilli(calls[i].now), it.MaxTTL)
			continue
		}
		o, err := s.answer(p, it.ID, &calls[i])
		if err != nil {
			out[i].Err = err
			continue
		}
		created := calls[i].code == "created"
		if !created {
			if err := order.CheckoutConflict(o, it); err != nil {
				out[i].Err = err
				continue
			}
		}
		// A checkout that brings the earliest deadline forward publishes
		// on the wake channel for every replica's sweeper. This replica's
		// own sweeper is also woken here when the order is due before it
		// planned to look, so that it keeps time while its subscription
		// is down.
		if created && o.Deadline.UnixMilli() < p.nextSweep.Load() {
			p.wakeUp()
		}
		out[i] = order.CheckoutResult{Order: o, Created: created}
	}
	return out
}

// eachPartition runs the calls of each partition in that partition's
// batches of kind k, the partitions side by side. It returns the partitions
// whose calls were not all answered before the caller's context ended, with
// that error: their calls must not be read, a batch may still answer them.
func (s *Store) eachPartition(ctx context.Context, byPart map[*partition][]*call, batcherOf func(*partition) *batcher, k *batchKind) map[*partition]error {
	var (
		mu     sync.Mutex
		failed map[*partition]error
		wg     sync.WaitGroup
	)
	run := func(p *partition, calls []*call) {
		if err := s.batch(ctx, p, batcherOf(p), k, calls); err != nil {
			mu.Lock()
			if failed == nil {
				failed = make(map[*partition]error)
			}
			failed[p] = storeError(err)
			mu.Unlock()
		}
	}
	for p, calls := range byPart {
		if len(byPart) == 1 {
			run(p, calls)
			break
		}
		wg.Go(func() { run(p, calls) })
	}
	wg.Wait()
	return failed
}

// one runs one order's call of kind k.
func (s *Store) one(ctx context.Context, id string, batcherOf func(*partition) *batcher, k *batchKind, args ...any) (*partition, *call, error) {
	p, err := s.orderPartition(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	c := &call{args: args, size: len(id)}
	if err := s.batch(ctx, p, batcherOf(p), k, []*call{c}); err != nil {
		return nil, nil, storeError(err)
	}
	return p, c, nil
}

// alarmGrace is how long after a partition's earliest deadline its alarm
// key expires (see keys.go). Every sweep sets the alarm again after the
// earliest deadline left, normally within a few milliseconds of the last
// one; Redis expires the key itself, and publishes the expired event that
// wakes every sweeper, only when no sweeper has swept the partition within
// the grace: its wake-up was lost, or every sweeper is down or far behind.
// Were the alarm to go off at the deadline, it would go off before nearly
// every sweep. One key per partition, not one per order: an order costs
// Redis no key of its own while pending, and in a burst that the sweepers
// cannot keep up with, Redis expires and publishes one key per partition,
// not one per order. The order's truth is the deadline in the index, never
// the alarm.
const alarmGrace = 100 * time.Millisecond

// Get returns an order, pending or closed.
func (s *Store) Get(ctx context.Context, id string) (order.Order, error) {
	p, c, err := s.one(ctx, id, func(p *partition) *batcher { return &p.gets }, &getBatch, id)
	if err != nil {
		return order.Order{}, err
	}
	o, err := s.answer(p, id, c)
	if err != nil {
		return order.Order{}, err
	}
	if c.code == "missing" {
		return order.Order{}, order.NotFound(id)
	}
	return o, nil
}

// Complete marks a pending order as paid.
func (s *Store) Complete(ctx context.Context, id string) (order.Order, error) {
	return s.finish(ctx, id, order.StatusCompleted)
}

// Cancel withdraws a pending order.
func (s *Store) Cancel(ctx context.Context, id string) (order.Order, error) {
	return s.finish(ctx, id, order.StatusCancelled)
}

func (s *Store) finish(ctx context.Context, id string, to order.Status) (order.Order, error) {
	p, c, err := s.one(ctx, id, func(p *partition) *batcher { return &p.finishes }, &finishBatch, id, to.String())
	if err != nil {
		return order.Order{}, err
	}
	o, err := s.answer(p, id, c)
	if err != nil {
		return order.Order{}, err
	}
	switch c.code {
	case "ok":
		return o, nil
	case "missing":
		return order.Order{}, order.NotFound(id)
	default:
		return order.Order{}, order.NotPending(o, to)
	}
}

// Reschedule gives a pending order before its deadline a new one.
func (s *Store) Reschedule(ctx context.Context, id string, r order.Reschedule) (order.Order, error) {
	p, err := s.orderPartition(ctx, id)
	if err != nil {
		return order.Order{}, err
	}
	mode, value := "ttl", r.TTL.Milliseconds()
	if !r.At.IsZero() {
		mode, value = "at", r.At.UnixMilli()
	}
	expected := ""
	if !r.Expected.IsZero() {
		expected = strconv.FormatInt(r.Expected.UnixMilli(), 10)
	}
	res, err := s.run(ctx, p, rescheduleScript, id, mode, value, expected, r.MaxTTL.Milliseconds(), alarmGrace.Milliseconds())
	if err != nil {
		return order.Order{}, err
	}
	code, o, err := s.parseReply(p, id, res)
	if err != nil {
		return order.Order{}, err
	}
	switch code {
	case "ok":
		if o.Deadline.UnixMilli() < p.nextSweep.Load() {
			p.wakeUp()
		}
		return o, nil
	case "mismatch":
		return order.Order{}, order.DeadlineMismatch(o, r.Expected)
	case "bad":
		now, _ := res[2].(int64)
		at := r.At
		if at.IsZero() {
			at = time.UnixMilli(now).Add(r.TTL)
		}
		return order.Order{}, order.BadNewDeadline(at, time.UnixMilli(now), r.MaxTTL)
	case "missing":
		return order.Order{}, order.NotFound(id)
	default:
		return order.Order{}, order.NotPending(o, order.StatusPending)
	}
}

// parseReply reads the {code, record, now, expired here, caught up here}
// reply of rescheduleScript on partition p.
func (s *Store) parseReply(p *partition, id string, res []any) (string, order.Order, error) {
	if len(res) != 5 {
		return "", order.Order{}, fmt.Errorf("redis: script reply has %d elements, want 5", len(res))
	}
	s.expiredByCall(res[3], res[4])
	code, _ := res[0].(string)
	rec, _ := res[1].(string)
	now, _ := res[2].(int64)
	o, err := s.parseOrder(p, id, code, rec, now)
	return code, o, err
}

// expiredByCall counts the orders a call found due and expired itself
// (expired, of them caught up: a script's integer replies) as the
// sweeper's expirations are counted.
func (s *Store) expiredByCall(expired, caughtUp any) {
	if n, _ := expired.(int64); n > 0 && s.onExpire != nil {
		caught, _ := caughtUp.(int64)
		s.onExpire(int(n), int(caught))
	}
}

// answer reads a batch's answer to the call c on order id of partition p:
// the order as the call left it, the zero order when it is missing.
func (s *Store) answer(p *partition, id string, c *call) (order.Order, error) {
	if c.err != nil {
		return order.Order{}, c.err
	}
	if c.code == "error" {
		return order.Order{}, fmt.Errorf("redis: the script failed on order %q: %s", id, c.rec)
	}
	return s.parseOrder(p, id, c.code, c.rec, c.now)
}

// parseOrder reads the record a script answered with code about order id of
// partition p, at Redis's time now.
func (s *Store) parseOrder(p *partition, id, code, rec string, now int64) (order.Order, error) {
	if code == "missing" {
		return order.Order{}, nil
	}
	o, err := parseRecord(id, rec, now)
	if err != nil {
		// A pending order's record is assembled from its field of the
		// pending hash, a closed one's is its tombstone.
		if strings.HasPrefix(rec, "pending ") {
			return order.Order{}, s.corrupt(p.keys.pending, err, "field", id)
		}
		return order.Order{}, s.corrupt(p.keys.closed(id), err, "or", p.keys.expired+" field "+id)
	}
	return o, nil
}
