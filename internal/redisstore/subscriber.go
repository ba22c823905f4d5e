package redisstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/backoff"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

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
				// Not up until this Redis publishes expired events.
				if err := s.ensureNotifications(ctx, node); err != nil {
					return err
				}
				up = true
				s.subscribed.Add(1)
				bo.Reset()
				// This may be another Redis than before (a restart, a
				// failover): the next Ping reads its eviction policy
				// and its durability settings.
				s.ev.readAt.Store(0)
				s.dur.readAt.Store(0)
				for _, p := range parts {
					p.wakeUp()
				}
			}
		case *redis.Message:
			if p, ok := wakes[m.Channel]; ok {
				p.wakeUp()
			} else if i, ok := alarmPartition(m.Payload); ok && i < len(parts) {
				parts[i].wakeUp()
			}
		}
	}
}

// ensureNotifications makes sure Redis publishes expired-key events ("E" and
// "x" in notify-keyspace-events) without removing flags already set. The
// setting does not survive a Redis restart, and a replica promoted by a
// failover may not have it, hence a check on every reconnect. Where CONFIG
// is refused (managed Redis), orders still expire on time through the
// sweeper; the warning says so once. A call that fails for a while (Redis or
// the client's pool not ready yet: after a failover, go-redis's pool may
// answer with its last dial error, to the old master, for a second after the
// subscription reached the new one) is an error: the subscription is made
// again, and the check with it.
func (s *Store) ensureNotifications(ctx context.Context, node *redis.Client) error {
	err := func() error {
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
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
		return nil
	}
	if order.KindOf(storeError(err)) == order.KindUnavailable {
		return fmt.Errorf("enabling keyspace events: %w", err)
	}
	s.configWarning.Do(func() {
		s.log.Warn("cannot enable Redis keyspace events (notify-keyspace-events Ex); orders still expire on time: sweepers wake for them through their own wake channel",
			"err", err)
	})
	return nil
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

// topologyEvery is how often the subscriber asks the cluster for its
// masters.
const topologyEvery = time.Second

// subscribeCluster keeps one subscription per master of the cluster:
// Redis publishes an expired-key event only on the master that holds the
// key. It follows the topology: a master that appears (a failover, a
// resharding) gets a subscription, and its confirmation wakes the sweepers,
// which claim every order that came due meanwhile; a node that is no longer
// a master loses its subscription.
func (s *Store) subscribeCluster(ctx context.Context, parts []*partition) error {
	type listener struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	listeners := map[string]listener{}
	var wg sync.WaitGroup
	defer func() {
		for _, l := range listeners {
			l.cancel()
		}
		wg.Wait()
	}()
	tick := time.NewTicker(topologyEvery)
	defer tick.Stop()
	for {
		masters, err := s.topology(ctx, parts)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("subscriber: cannot read the cluster's topology; retrying", "err", err, "retry_in", topologyEvery)
		}
		if err == nil {
			seen := map[string]bool{}
			for _, addr := range masters {
				seen[addr] = true
				if _, ok := listeners[addr]; ok {
					continue
				}
				lctx, cancel := context.WithCancel(ctx)
				l := listener{cancel, make(chan struct{})}
				listeners[addr] = l
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer close(l.done)
					node := redis.NewClient(s.nodeOptions(addr))
					if s.tracing {
						Trace(node)
					}
					defer node.Close()
					s.subscribeNode(lctx, node, parts)
				}()
			}
			for addr, l := range listeners {
				if !seen[addr] {
					l.cancel()
					<-l.done
					delete(listeners, addr)
				}
			}
			s.masters.Store(int32(len(listeners)))
			// The client learns of a failover from a failed call or every
			// 10 s by itself; asking each tick makes the next call go to
			// the new master at once.
			s.cluster.ReloadState(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
