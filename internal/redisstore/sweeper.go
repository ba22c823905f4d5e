package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"golang.org/x/sync/errgroup"

	"github.com/orderexpiry/orderexpiry/internal/backoff"
)

const (
	// sweepBatch is how many due orders one script call expires. A call
	// costs Redis about 6 to 7µs per order (an event each, and a field of
	// the tombstones' hash; the rest is shared by the batch:
	// BenchmarkExpireDue), so it holds Redis for about 1.5 to 2ms.
	// In benchmark 1b, batches of 128, 256 and 512 gave about the same
	// p99 lateness, 1,024 a worse one although its claims were as early:
	// the watchers get bigger bursts. The ids go through Lua's unpack,
	// which takes a few thousand at most.
	sweepBatch = 256
	// claimsAhead is how many calls of the script a sweeper has sent at
	// most while orders are left due (see expireDue). In benchmark 1b, 2
	// against 1 in six alternating pairs: p99 71-568 ms (median 143)
	// against 113-369 (median 191), lower in five of the six.
	claimsAhead = 2
	// maxSweepSleep bounds the sweeper's sleep, as a safety net for wake-ups
	// that were lost while the subscriber was disconnected.
	maxSweepSleep = time.Second
)

// Run expires orders at their deadline until ctx ends: it runs a sweeper
// per partition and the subscriber to Redis's expired-key events (and under
// Sentinel, the count of the master's replicas). It first waits for Redis to
// tell the number of partitions. While it runs, go-redis's own messages go
// to the store's logger at debug level.
func (s *Store) Run(ctx context.Context) error {
	defer shareGoRedisLog(s.log)()
	var parts []*partition
	var bo backoff.Backoff
	for {
		var err error
		if parts, err = s.layout(ctx); err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		d := bo.Next()
		s.log.Warn("cannot read the store's layout from Redis; retrying", "err", err, "retry_in", d)
		if !backoff.Sleep(ctx, d) {
			return nil
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, p := range parts {
		g.Go(func() error { return s.sweep(ctx, p) })
	}
	if s.sentinel && s.durability == DurabilityStrict {
		// The count is only where a strict write's wait starts.
		g.Go(func() error { return s.followReplicas(ctx, parts) })
	}
	g.Go(func() error { return s.runOperations(ctx, parts) })
	g.Go(func() error {
		if s.cluster != nil {
			return s.subscribeCluster(ctx, parts)
		}
		s.masters.Store(1)
		return s.subscribeNode(ctx, s.rdb.(*redis.Client), parts)
	})
	return g.Wait()
}

// sweep expires the due orders of a partition, then sleeps until its next
// deadline (by Redis's clock) or until it is woken by a checkout or an
// expired-key event. Redis alone is no timer: its expired events come when
// it gets round to deleting a key, seconds or minutes late in a store with
// many keys, so the sweeper is what makes an expiry happen on time. Several
// replicas may sweep at once; the claim in the script makes each expiry
// happen once.
func (s *Store) sweep(ctx context.Context, p *partition) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	var bo backoff.Backoff
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-p.wake:
		}
		// A replica that refuses calls, its number of partitions not being
		// the store's, leaves the expiries to those whose number it is.
		if s.fault.Load() != nil {
			timer.Reset(maxSweepSleep)
			continue
		}
		sleep, err := s.expireDue(ctx, p)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			sleep = bo.Next()
			s.log.Warn("sweeper: cannot expire due orders; retrying", "partition", p.index, "err", err, "retry_in", sleep)
		} else {
			bo.Reset()
		}
		// Since Go 1.23 Reset leaves no stale tick behind, fired or not.
		timer.Reset(sleep)
	}
}

// sweepCall is what one call of the sweeper's script did: n orders expired,
// caught of them more than a second late, Redis's clock now and the next
// deadline (-1: none pending), all in ms.
type sweepCall struct {
	n, now, next, caught int64
	err                  error
}

// sweepOnce runs the sweeper's script once on partition p.
func (s *Store) sweepOnce(ctx context.Context, p *partition) sweepCall {
	reply, err := s.run(ctx, p, expireDueScript, sweepBatch, alarmGrace.Milliseconds())
	if err != nil {
		return sweepCall{err: err}
	}
	if len(reply) != 4 {
		return sweepCall{err: fmt.Errorf("redis: sweep reply has %d elements, want 4", len(reply))}
	}
	return sweepCallOf(reply)
}

// sweepCallOf reads a partition's four numbers of the sweeper's scripts.
func sweepCallOf(reply []any) sweepCall {
	var res [4]int64
	for i := range res {
		res[i], _ = reply[i].(int64)
	}
	return sweepCall{n: res[0], now: res[1], next: res[2], caught: res[3]}
}

// expireDue expires the due orders and returns how long to sleep before the
// next one is due. It reports what it expired to OnExpire, also when a
// batch fails after others succeeded. Each pass is a span, the parent of its
// scripts' spans, that tells how many orders it claimed.
func (s *Store) expireDue(ctx context.Context, p *partition) (_ time.Duration, err error) {
	ctx, span := tracer.Start(ctx, "orderexpiry.sweep")
	var expired, caughtUp int64
	defer func() {
		// With tracing off, the span is a no-op: its attributes are not
		// even made.
		if span.IsRecording() {
			span.SetAttributes(attribute.Int("orderexpiry.partition", p.index),
				attribute.Int64("orderexpiry.expired", expired), attribute.Int64("orderexpiry.caught_up", caughtUp))
		}
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
		if expired > 0 && s.onExpire != nil {
			s.onExpire(int(expired), int(caughtUp))
		}
	}()
	// While a full batch says more are due, the next call is sent before
	// the last one's answer is back, so that Redis finds it waiting when it
	// ends one: in a burst the way to Redis and back, with the service's
	// scheduling, was a third of each call's time (benchmark 1b). The claim
	// is atomic, so two calls claim different orders, as two replicas'
	// sweepers do. Every call sent is waited for: what it expired is
	// counted and no goroutine outlives the pass. The first call runs in
	// this goroutine: a pass that finds less than a batch due, the usual
	// one, starts none.
	var inFlight []chan sweepCall
	send := func() {
		c := make(chan sweepCall, 1)
		go func() { c <- s.claimDue(ctx, p) }()
		inFlight = append(inFlight, c)
	}
	var last sweepCall
	for c := s.claimDue(ctx, p); ; {
		if c.err != nil {
			if err == nil {
				err = c.err
			}
		} else {
			expired += c.n
			caughtUp += c.caught
			last = c
			if c.n == sweepBatch && err == nil {
				for len(inFlight) < claimsAhead {
					send()
				}
			}
		}
		if len(inFlight) == 0 {
			break
		}
		c = <-inFlight[0]
		inFlight = inFlight[1:]
	}
	if err != nil {
		return 0, err
	}
	// The last answer is the newest, and left fewer than a batch due.
	sleep := maxSweepSleep
	if last.next >= 0 {
		sleep = min(max(time.Duration(last.next-last.now)*time.Millisecond, time.Millisecond), maxSweepSleep)
	}
	p.nextSweep.Store(last.now + sleep.Milliseconds())
	return sleep, nil
}
