package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Checkout creates a pending order, or returns the one already pending under
// this id with created false.
func (s *Store) Checkout(ctx context.Context, id string, ttl time.Duration, md map[string]string) (order.Order, bool, error) {
	meta, err := encodeMetadata(md)
	if err != nil {
		return order.Order{}, false, err
	}
	// A Redis that may evict would lose the order when it fills up.
	if err := s.evictionRefusal(); err != nil {
		return order.Order{}, false, err
	}
	p, err := s.orderPartition(ctx, id)
	if err != nil {
		return order.Order{}, false, err
	}
	res, err := s.runDurable(ctx, p, checkoutScript, checkoutArgs(id, ttl, meta)...)
	if err != nil {
		return order.Order{}, false, err
	}
	code, o, err := s.parseReply(p, id, res)
	if err != nil {
		return order.Order{}, false, err
	}
	// A checkout that brings the earliest deadline forward publishes on the
	// wake channel for every replica's sweeper. This replica's own sweeper
	// is also woken here when the order is due before it planned to look,
	// so that it keeps time while its subscription is down.
	if code == "created" && o.Deadline.UnixMilli() < p.nextSweep.Load() {
		p.wakeUp()
	}
	return o, code == "created", nil
}

// ttlKeyGrace is how much longer an order's ttl key lives than the order.
// The sweeper deletes the key when it claims the order, normally within a
// few milliseconds of the deadline; Redis expires the key itself, and
// publishes the expired event that wakes every sweeper, only when no
// sweeper has claimed the order within the grace: its wake-up was lost, or
// every sweeper is down or far behind.
// Were the key to die at the deadline, every claim would find it already
// expired in Redis's eyes, and Redis would expire and publish it anyway:
// one more deletion and one more event per order, for nothing. The order's
// truth is the deadline in the index, never the ttl key.
const ttlKeyGrace = 100 * time.Millisecond

// checkoutArgs are checkoutScript's own arguments.
func checkoutArgs(id string, ttl time.Duration, meta string) []any {
	return []any{id, ttl.Milliseconds(), meta, (ttl + ttlKeyGrace).Milliseconds()}
}

// Get returns an order, pending or closed.
func (s *Store) Get(ctx context.Context, id string) (order.Order, error) {
	p, err := s.orderPartition(ctx, id)
	if err != nil {
		return order.Order{}, err
	}
	res, err := s.run(ctx, p, getScript, id)
	if err != nil {
		return order.Order{}, err
	}
	code, o, err := s.parseReply(p, id, res)
	if err != nil {
		return order.Order{}, err
	}
	if code == "missing" {
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
	p, err := s.orderPartition(ctx, id)
	if err != nil {
		return order.Order{}, err
	}
	res, err := s.runDurable(ctx, p, finishScript, id, to.String())
	if err != nil {
		return order.Order{}, err
	}
	code, o, err := s.parseReply(p, id, res)
	if err != nil {
		return order.Order{}, err
	}
	switch code {
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
	res, err := s.runDurable(ctx, p, rescheduleScript, id, mode, value, expected, r.MaxTTL.Milliseconds(), ttlKeyGrace.Milliseconds())
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
// reply of the order scripts on partition p.
func (s *Store) parseReply(p *partition, id string, res []any) (string, order.Order, error) {
	if len(res) != 5 {
		return "", order.Order{}, fmt.Errorf("redis: script reply has %d elements, want 5", len(res))
	}
	// The call found the order due and expired it: count it as the
	// sweeper's expirations are.
	if n, _ := res[3].(int64); n > 0 && s.onExpire != nil {
		caught, _ := res[4].(int64)
		s.onExpire(int(n), int(caught))
	}
	code, _ := res[0].(string)
	rec, _ := res[1].(string)
	now, _ := res[2].(int64)
	if code == "missing" {
		return code, order.Order{}, nil
	}
	o, err := parseRecord(id, rec, now)
	if err != nil {
		// A pending order's record is assembled from its field of the
		// pending hash, a closed one's is its tombstone.
		if strings.HasPrefix(rec, "pending ") {
			return "", order.Order{}, s.corrupt(p.keys.pending, err, "field", id)
		}
		return "", order.Order{}, s.corrupt(p.keys.closed(id), err)
	}
	return code, o, nil
}
