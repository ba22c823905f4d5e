package redisstore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Calls on orders are batched naturally: the checkouts of one partition that
// come while the partition's previous checkout script is in flight wait for
// it to return, and then go to Redis together, as one script call over all
// of them; so do the completions and cancellations, and the reads. A call
// that finds nothing in flight is sent at once, by its own goroutine, so an
// idle store adds no latency and no timer; under load, the calls that queued
// meanwhile are sent by a goroutine that lives while the queue is not empty.
// Redis then runs one script, reads its clock once and waits for a replica
// once (see runDurable) for many orders: most of the cost of a checkout script
// is the call, not the order.
//
// A batch is one partition's, so on a Redis Cluster its keys are in one slot,
// and it goes through run as one order's script would: the
// same retries while a slot moves, the same flags (a checkout batch is
// refused as a whole when Redis is out of memory, and each of its callers
// hears RESOURCE_EXHAUSTED), the same errors. Within a batch the calls run in
// the order they queued, each with the result it would have had alone.

// maxBatch is the most orders one batch script call takes. Redis runs
// nothing else while a script runs, and a checkout costs it some 30µs: a
// batch of 256 holds it for about 8 ms, as long as a sweeper's batch of
// expirations (sweepBatch), so that a large batch does not make the
// expirations of other orders late, and runs well within callTimeout on a
// busy machine.
const maxBatch = 256

// maxBatchBytes bounds the ids and metadata of one batch. Redis checks its
// memory limit before a script runs, not during it, so a checkout batch
// accepted just below maxmemory may take Redis past it by as much as the
// batch writes: a bound in bytes keeps that near what one large order
// would, whatever the number of orders.
const maxBatchBytes = 64 << 10

// batchLen returns how many of the calls, from the first, go in one batch:
// at least one, at most maxBatch and, past the first, at most maxBatchBytes.
func batchLen(calls []*call) int {
	n, size := 0, 0
	for n < len(calls) && n < maxBatch {
		size += calls[n].size
		if n > 0 && size > maxBatchBytes {
			break
		}
		n++
	}
	return n
}

// batchKind is one of the batch scripts and how it is run.
type batchKind struct {
	script *script
	// fixed are the script's arguments before those of the orders.
	fixed []any
}

var (
	checkoutBatch = batchKind{script: checkoutScript, fixed: []any{alarmGrace.Milliseconds()}}
	finishBatch   = batchKind{script: finishScript}
	getBatch      = batchKind{script: getScript}
)

// batcher queues the calls of one partition and one batch script while a
// call of that script is in flight.
type batcher struct {
	mu sync.Mutex
	// busy is true while a batch is in flight or about to be sent.
	busy  bool
	queue []*call
}

// call is one order's part of a batch: its arguments, and the script's
// answer for it once the batch returns.
type call struct {
	args []any
	// size is the length of its strings (id, metadata), for maxBatchBytes.
	size int
	w    *waiter

	code, rec string
	now       int64
	err       error
}

// waiter waits for the calls of one caller, which may be many (a
// BatchCheckout), to be answered.
type waiter struct {
	ctx  context.Context
	left atomic.Int32
	done chan struct{}
}

func (w *waiter) answered() {
	if w.left.Add(-1) == 0 {
		close(w.done)
	}
}

// batch runs calls, all of partition p, in batches of kind k, and fills in
// their answers. It returns the caller's context's error when the context
// ends before the calls are answered: they may still run.
func (s *Store) batch(ctx context.Context, p *partition, b *batcher, k *batchKind, calls []*call) error {
	w := &waiter{ctx: ctx, done: make(chan struct{})}
	w.left.Store(int32(len(calls)))
	for _, c := range calls {
		c.w = w
	}
	b.mu.Lock()
	if b.busy {
		b.queue = append(b.queue, calls...)
		b.mu.Unlock()
		select {
		case <-w.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	b.busy = true
	b.mu.Unlock()
	// Nothing in flight: the calls go at once, under the caller's context.
	for rest := calls; len(rest) > 0; {
		n := batchLen(rest)
		s.send(ctx, p, k, rest[:n])
		rest = rest[n:]
	}
	b.mu.Lock()
	if len(b.queue) == 0 {
		b.busy = false
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	// Calls queued meanwhile: another goroutine sends them, so that this
	// caller has its answer now.
	go s.drain(p, b, k)
	return nil
}

// drain sends what queues on b, a batch at a time, until the queue is empty.
// Its batches belong to no one caller: each runs under callTimeout only (see
// run), and a call whose caller is gone is answered with its context's
// error instead of being sent.
func (s *Store) drain(p *partition, b *batcher, k *batchKind) {
	for {
		b.mu.Lock()
		if len(b.queue) == 0 {
			b.busy = false
			b.mu.Unlock()
			return
		}
		var next []*call
		if n := batchLen(b.queue); n == len(b.queue) {
			next, b.queue = b.queue, nil
		} else {
			next = slices.Clone(b.queue[:n])
			b.queue = b.queue[n:]
		}
		b.mu.Unlock()
		live := next[:0]
		for _, c := range next {
			if err := c.w.ctx.Err(); err != nil {
				c.err = storeError(err)
				c.w.answered()
				continue
			}
			live = append(live, c)
		}
		if len(live) > 0 {
			s.send(context.Background(), p, k, live)
		}
	}
}

// send runs one batch script call over calls and answers each of them.
func (s *Store) send(ctx context.Context, p *partition, k *batchKind, calls []*call) {
	n := 0
	for _, c := range calls {
		n += len(c.args)
	}
	args := make([]any, 0, len(k.fixed)+n)
	args = append(args, k.fixed...)
	for _, c := range calls {
		args = append(args, c.args...)
	}
	res, err := s.run(ctx, p, k.script, args...)
	if err == nil && len(res) != 3+2*len(calls) {
		err = fmt.Errorf("redis: batch script reply has %d elements for %d orders, want %d", len(res), len(calls), 3+2*len(calls))
	}
	var now int64
	if err == nil {
		now, _ = res[0].(int64)
		s.expiredByCall(res[1], res[2])
	}
	for i, c := range calls {
		if err != nil {
			c.err = err
		} else {
			c.code, _ = res[3+2*i].(string)
			c.rec, _ = res[4+2*i].(string)
			c.now = now
		}
		c.w.answered()
	}
}
