package memstore

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/filter"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// bulkChunk is how many orders a bulk operation changes under one hold of
// the lock, so that other calls are not held up behind a large operation.
const bulkChunk = 500

// bulkOp is a bulk operation and what is left of it: the matched orders,
// each with the deadline it had when matched, not yet dealt with.
type bulkOp struct {
	op order.Operation
	// seq orders operations started in the same millisecond, newest
	// first, as their start order.
	seq     uint64
	match   *filter.Filter
	todo    []deadlineEntry
	scanned bool
	cancel  bool
}

// newOpID returns a random operation id.
func newOpID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// StartOperation records a bulk operation; Run works it.
func (s *Store) StartOperation(_ context.Context, op order.Operation) (order.Operation, error) {
	f, err := filter.Parse(op.Filter)
	if err != nil {
		return order.Operation{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowMs()
	op.ID, op.State, op.Created, op.Updated, op.Progress = newOpID(), order.OpRunning, now, now, order.Progress{}
	if s.ops == nil {
		s.ops = make(map[string]*bulkOp)
	}
	s.opSeq++
	s.ops[op.ID] = &bulkOp{op: op, match: f, seq: s.opSeq}
	select {
	case s.bulkWake <- struct{}{}:
	default:
	}
	return op, nil
}

// GetOperation returns a bulk operation.
func (s *Store) GetOperation(_ context.Context, id string) (order.Operation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.ops[id]
	if !ok {
		return order.Operation{}, order.OperationNotFound(id)
	}
	return b.op, nil
}

// ListOperations returns the operations, newest first.
func (s *Store) ListOperations(context.Context) ([]order.Operation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bs := make([]*bulkOp, 0, len(s.ops))
	for _, b := range s.ops {
		bs = append(bs, b)
	}
	slices.SortFunc(bs, func(a, b *bulkOp) int { return cmp.Compare(b.seq, a.seq) })
	out := make([]order.Operation, len(bs))
	for i, b := range bs {
		out[i] = b.op
	}
	return out, nil
}

// CancelOperation stops a running operation after the chunk in hand; an
// ended one is answered as it is.
func (s *Store) CancelOperation(_ context.Context, id string) (order.Operation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.ops[id]
	if !ok {
		return order.Operation{}, order.OperationNotFound(id)
	}
	if !b.op.Done() {
		b.cancel = true
		now := s.nowMs()
		b.op.State, b.op.Updated, b.op.Ended = order.OpCancelled, now, now
		b.todo = nil
	}
	return b.op, nil
}

// runOperations works the running operations until ctx ends.
func (s *Store) runOperations(ctx context.Context) {
	for {
		for s.bulkStep() {
			if ctx.Err() != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.bulkWake:
		case <-time.After(trimInterval):
		}
	}
}

// bulkStep does one chunk of a running operation, and reports whether
// there may be more to do.
func (s *Store) bulkStep() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowMs()
	for id, b := range s.ops {
		if b.op.Done() {
			if !b.op.Ended.Add(s.retention).After(now) {
				delete(s.ops, id)
			}
			continue
		}
		if !b.scanned {
			// The pending orders the filter matches now, each with its
			// deadline: one look at the memory, as Redis's scan is many.
			for oid, o := range s.pending {
				if o.Deadline.After(now) && b.match.Match(o) {
					b.todo = append(b.todo, deadlineEntry{at: o.Deadline, id: oid})
				}
			}
			b.scanned = true
			b.op.Progress.Matched = int64(len(b.todo))
			if b.op.DryRun {
				b.todo = nil
			}
		}
		n := min(len(b.todo), bulkChunk)
		for _, e := range b.todo[:n] {
			b.op.Progress.Add(s.bulkApply(b, e, now))
		}
		b.todo = b.todo[n:]
		b.op.Updated = now
		if len(b.todo) == 0 {
			b.op.State, b.op.Ended = order.OpSucceeded, now
		}
		return true
	}
	return false
}

// bulkApply changes one matched order, e, unless it closed, came due or no
// longer matches since; the caller holds mu.
func (s *Store) bulkApply(b *bulkOp, e deadlineEntry, now time.Time) order.Progress {
	o, ok := s.current(e.id, now)
	if !ok || o.Status != order.StatusPending {
		return order.Progress{Skipped: 1}
	}
	if !o.Deadline.Equal(e.at) && !b.match.Match(o) {
		return order.Progress{Skipped: 1}
	}
	c := b.op.Change
	if c.Cancel {
		s.close(o, order.StatusCancelled, now)
		return order.Progress{Changed: 1}
	}
	nd, allowed := c.NewDeadline(o.Deadline, now)
	if !allowed {
		return order.Progress{Failed: 1}
	}
	s.reschedule(o, nd)
	return order.Progress{Changed: 1}
}
