package redisstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/orderexpiry/orderexpiry/internal/backoff"
)

const (
	// sweepBatch is how many due orders one script call expires. A call
	// costs Redis about 6µs per order (a tombstone and an event each; the
	// rest is shared by the batch), so it holds Redis for about 1.5ms.
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
// per partition and the subscriber to Redis's expired-key events. It first
// waits for Redis to tell the number of partitions.
func (s *Store) Run(ctx context.Context) error {
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
// batch fails after others succeeded.
func (s *Store) expireDue(ctx context.Context, p *partition) (time.Duration, error) {
	var expired, caughtUp int64
	defer func() {
		if expired > 0 && s.onExpire != nil {
			s.onExpire(int(expired), int(caughtUp))
		}
	}()
	for {
		reply, err := s.run(ctx, p, expireDueScript, sweepBatch)
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

// subscribeNode listens to the expired-key events of one Redis node (the
// one Redis, or a master of the cluster) and to the wake channels of
// checkouts, and wakes the sweepers on each. Every (re)subscription makes
// sure keyspace events are enabled (the setting does not survive a Redis
// restart) and wakes every sweeper, which catches up every order that came
// due while the subscriber was away: pub/sub loses what is published while
// nobody listens, the deadline index does not.
func (s *Store) subscribeNode(ctx context.Context, node *redis.Client, parts []*partition) error {
	var bo backoff.Backoff
	for ctx.Err() == nil {
		if err := s.listen(ctx, node, parts, &bo); err != nil && ctx.Err() == nil {
			d := bo.Next()
			s.log.Warn("subscriber: lost the connection to Redis; reconnecting", "addr", node.Options().Addr, "err", err, "retry_in", d)
			backoff.Sleep(ctx, d)
		}
	}
	return nil
}

// listenIdle is how long the subscription may stay silent before it is
// pinged; a second silence means the connection is dead (a half-open TCP
// connection gives no error of its own).
const listenIdle = time.Second

// listen runs one subscription until its connection fails or ctx ends.
func (s *Store) listen(ctx context.Context, node *redis.Client, parts []*partition, bo *backoff.Backoff) error {
	expired := fmt.Sprintf("__keyevent@%d__:expired", s.db)
	channels := []string{expired}
	wakes := make(map[string]*partition, len(parts))
	for _, p := range parts {
		channels = append(channels, p.keys.wake)
		wakes[p.keys.wake] = p
	}
	ps := node.Subscribe(ctx, channels...)
	defer ps.Close()
	up := false
	defer func() {
		if up {
			s.subscribed.Add(-1)
		}
	}()
	// A blocked receive does not notice ctx; closing the subscription ends it.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()

	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, listenIdle)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if !isTimeout(err) {
				return err
			}
			if pinged {
				return fmt.Errorf("no answer to PING within %s", listenIdle)
			}
			if err := ps.Ping(ctx); err != nil {
				return err
			}
			pinged = true
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == expired && !up {
				up = true
				s.subscribed.Add(1)
				bo.Reset()
				s.ensureNotifications(ctx, node)
				for _, p := range parts {
					p.wakeUp()
				}
			}
		case *redis.Message:
			if p, ok := wakes[m.Channel]; ok {
				p.wakeUp()
			} else if i, ok := orderKeyPartition(m.Payload); ok && i < len(parts) {
				parts[i].wakeUp()
			}
		}
	}
}

// ensureNotifications makes sure Redis publishes expired-key events ("E" and
// "x" in notify-keyspace-events) without removing flags already set. The
// setting does not survive a Redis restart, hence a check on every
// reconnect. Where CONFIG is refused (managed Redis), orders still expire on
// time through the sweeper; the warning says so once.
func (s *Store) ensureNotifications(ctx context.Context, node *redis.Client) {
	err := func() error {
		cur, err := node.ConfigGet(ctx, "notify-keyspace-events").Result()
		if err != nil {
			return err
		}
		have := cur["notify-keyspace-events"]
		want := mergeNotifyFlags(have)
		if want == have {
			return nil
		}
		return node.ConfigSet(ctx, "notify-keyspace-events", want).Err()
	}()
	if err == nil || ctx.Err() != nil {
		return
	}
	s.configWarning.Do(func() {
		s.log.Warn("cannot enable Redis keyspace events (notify-keyspace-events Ex); orders still expire on time: sweepers wake for them through their own wake channel",
			"err", err)
	})
}

// mergeNotifyFlags adds what expired-key events need to the flags in force:
// "E" (keyevent channels) and "x" (expired events; "A" already includes it).
func mergeNotifyFlags(flags string) string {
	if !strings.Contains(flags, "E") {
		flags += "E"
	}
	if !strings.ContainsAny(flags, "xA") {
		flags += "x"
	}
	return flags
}

// Subscribed reports whether the subscriptions to Redis's expired-key
// events are up, on every master of a cluster: true from Redis's
// confirmation of each subscription until a connection fails or Run stops.
// Orders expire on time without them (the sweepers do not depend on
// pub/sub), but a sweeper whose wake-ups are lost while one is down may
// notice an order created by another replica up to maxSweepSleep late.
func (s *Store) Subscribed() bool {
	n := s.masters.Load()
	return n > 0 && s.subscribed.Load() == n
}

func isTimeout(err error) bool {
	type timeout interface{ Timeout() bool }
	t, ok := err.(timeout)
	return ok && t.Timeout()
}
