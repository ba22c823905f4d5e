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
	for {
		reply, err := s.run(ctx, p, expireDueScript, sweepBatch, alarmGrace.Milliseconds())
		if err != nil {
			return 0, err
		}
		if len(reply) != 4 {
			return 0, fmt.Errorf("redis: sweep reply has %d elements, want 4", len(reply))
		}
		var res [4]int64
		for i := range res {
			res[i], _ = reply[i].(int64)
		}
		n, now, next := res[0], res[1], res[2]
		expired += n
		caughtUp += res[3]
		if n == sweepBatch {
			continue // more may be due
		}
		sleep := maxSweepSleep
		if next >= 0 {
			sleep = min(max(time.Duration(next-now)*time.Millisecond, time.Millisecond), maxSweepSleep)
		}
		p.nextSweep.Store(now + sleep.Milliseconds())
		return sleep, nil
	}
}
