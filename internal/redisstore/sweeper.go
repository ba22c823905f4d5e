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

// Run expires orders at their deadline until ctx ends: it runs the sweeper
// and the subscriber to Redis's expired-key events.
func (s *Store) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.sweep(ctx) })
	g.Go(func() error { return s.subscribe(ctx) })
	return g.Wait()
}

// sweep expires due orders, then sleeps until the next deadline (by Redis's
// clock) or until it is woken by a checkout or an expired-key event. Redis
// alone is no timer: its expired events come when it gets round to deleting
// a key, seconds or minutes late in a store with many keys, so the sweeper is
// what makes an expiry happen on time. Several replicas may sweep at once;
// the claim in the script makes each expiry happen once.
func (s *Store) sweep(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	var bo backoff.Backoff
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-s.wake:
		}
		sleep, err := s.expireDue(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			sleep = bo.Next()
			s.log.Warn("sweeper: cannot expire due orders; retrying", "err", err, "retry_in", sleep)
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
func (s *Store) expireDue(ctx context.Context) (time.Duration, error) {
	var expired, caughtUp int64
	defer func() {
		if expired > 0 && s.onExpire != nil {
			s.onExpire(int(expired), int(caughtUp))
		}
	}()
	for {
		reply, err := s.run(ctx, expireDueScript, sweepBatch)
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
		s.nextSweep.Store(now + sleep.Milliseconds())
		return sleep, nil
	}
}

// subscribe listens to Redis's expired-key events of this database and to
// the wake channel of checkouts, and wakes the sweeper on each. Every
// (re)subscription makes sure keyspace events are enabled (the setting does
// not survive a Redis restart) and wakes the sweeper, which catches up every
// order that came due while the subscriber was away: pub/sub loses what is
// published while nobody listens, the deadline index does not.
func (s *Store) subscribe(ctx context.Context) error {
	var bo backoff.Backoff
	for ctx.Err() == nil {
		if err := s.listen(ctx, &bo); err != nil && ctx.Err() == nil {
			d := bo.Next()
			s.log.Warn("subscriber: lost the connection to Redis; reconnecting", "err", err, "retry_in", d)
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
	}
	return nil
}

// listenIdle is how long the subscription may stay silent before it is
// pinged; a second silence means the connection is dead (a half-open TCP
// connection gives no error of its own).
const listenIdle = time.Second

// listen runs one subscription until its connection fails or ctx ends.
func (s *Store) listen(ctx context.Context, bo *backoff.Backoff) error {
	expired := fmt.Sprintf("__keyevent@%d__:expired", s.db)
	ps := s.rdb.Subscribe(ctx, expired, s.keys.wake)
	defer ps.Close()
	defer s.subscribed.Store(false)
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
			if m.Kind == "subscribe" && m.Channel == expired {
				s.subscribed.Store(true)
				bo.Reset()
				s.ensureNotifications(ctx)
				s.Wake()
			}
		case *redis.Message:
			if m.Channel == s.keys.wake || s.keys.isOrderKey(m.Payload) {
				s.Wake()
			}
		}
	}
}

// ensureNotifications makes sure Redis publishes expired-key events ("E" and
// "x" in notify-keyspace-events) without removing flags already set. The
// setting does not survive a Redis restart, hence a check on every
// reconnect. Where CONFIG is refused (managed Redis), orders still expire on
// time through the sweeper; the warning says so once.
func (s *Store) ensureNotifications(ctx context.Context) {
	err := func() error {
		cur, err := s.rdb.ConfigGet(ctx, "notify-keyspace-events").Result()
		if err != nil {
			return err
		}
		have := cur["notify-keyspace-events"]
		want := mergeNotifyFlags(have)
		if want == have {
			return nil
		}
		return s.rdb.ConfigSet(ctx, "notify-keyspace-events", want).Err()
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

// Subscribed reports whether the subscription to Redis's expired-key events
// is up: true from Redis's confirmation of the subscription until the
// connection fails or Run stops. Orders expire on time without it (the
// sweeper does not depend on pub/sub), but a sweeper whose wake-ups are
// lost while it is down may notice an order created by another replica up
// to maxSweepSleep late.
func (s *Store) Subscribed() bool { return s.subscribed.Load() }

func isTimeout(err error) bool {
	type timeout interface{ Timeout() bool }
	t, ok := err.(timeout)
	return ok && t.Timeout()
}
