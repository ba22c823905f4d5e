package redisstore

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/backoff"
)

// A Redis Cluster spreads the partitions over its masters. What it adds to
// one Redis is here: where each partition lives and whether its master has
// a replica, and writes that wait for that replica (runDurable). The
// subscriptions that follow the masters are in subscriber.go.

// clusterLayout finds each partition's slot and its master's replicas.
func (s *Store) clusterLayout(ctx context.Context, parts []*partition) error {
	pipe := s.cluster.Pipeline()
	cmds := make([]*redis.IntCmd, len(parts))
	for i, p := range parts {
		cmds[i] = pipe.ClusterKeySlot(ctx, p.keys.deadlines)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return storeError(err)
	}
	for i, p := range parts {
		p.slot = int(cmds[i].Val())
	}
	_, err := s.topology(ctx, parts)
	return err
}

// topology asks the cluster for its shards: it sets each partition's master
// and how many replicas that master has, and returns the addresses of the
// masters.
func (s *Store) topology(ctx context.Context, parts []*partition) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	shards, err := s.cluster.ClusterShards(ctx).Result()
	if err != nil {
		return nil, storeError(err)
	}
	var masters []string
	replicas := make([]int32, len(parts))   // by partition; 0 for a slot no shard serves
	masterOf := make([]*string, len(parts)) // by partition; nil for a slot no shard serves
	for _, sh := range shards {
		var online int32
		var master *string
		for _, n := range sh.Nodes {
			switch {
			case n.Role == "master" && n.Health == "online" && len(sh.Slots) > 0:
				addr := nodeAddr(n)
				masters = append(masters, addr)
				master = &addr
			// Redis 7.0 calls a replica "loading" while its replication
			// offset is 0, as it is until the first write: such a replica
			// is there to acknowledge writes. Only a failed one is not.
			case n.Role == "replica" && n.Health != "fail" && n.Health != "failed":
				online++
			}
		}
		for _, r := range sh.Slots {
			for i, p := range parts {
				if int64(p.slot) >= r.Start && int64(p.slot) <= r.End {
					replicas[i], masterOf[i] = online, master
				}
			}
		}
	}
	for i, p := range parts {
		p.replicas.Store(replicas[i])
		p.master.Store(masterOf[i])
	}
	return masters, nil
}

func nodeAddr(n redis.Node) string {
	host := n.Endpoint
	if host == "" || host == "?" {
		host = n.IP
	}
	port := n.Port
	if port == 0 {
		port = n.TLSPort
	}
	return net.JoinHostPort(host, strconv.FormatInt(port, 10))
}

// While `redis-cli --cluster reshard` moves a partition's slot from one
// master to another, a call of that partition can meet three answers, none
// of which means that its script ran:
//
//   - MOVED: the slot is on another master now;
//   - ASK: the slot is on its way to another master, which has its keys
//     and takes the call after ASKING;
//   - TRYAGAIN: the slot's keys are split between the two masters. Every
//     script of an order names the partition's wake channel among its
//     keys, which Redis counts as a missing key, so a script of a moving
//     slot hears TRYAGAIN from both masters until the last key has moved.
//
// go-redis follows MOVED and ASK for a call made through the cluster
// client, and retries TRYAGAIN a few times, but a partition's keys take
// longer to move than those few tries; runDurable's pipelined script and
// WAIT, made on one node, it does not redirect at all. So run and
// runDurable retry these answers themselves, within the call's
// callTimeout, pausing from 5ms up to 100ms (slotRetries): a slot with
// a few thousand keys moves in tens of milliseconds.
var slotRetries = backoff.Policy{First: 5 * time.Millisecond, Max: 100 * time.Millisecond}

// slotMove is a master's answer to a call of a slot that moves: MOVED or
// ASK (ask) to addr, or TRYAGAIN (again).
type slotMove struct {
	addr       string
	ask, again bool
}

// parseSlotMove reads err as MOVED, ASK or TRYAGAIN; ok is false for
// anything else.
func parseSlotMove(err error) (m slotMove, ok bool) {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return slotMove{}, false
	}
	f := strings.Fields(rerr.Error())
	switch {
	case len(f) > 0 && f[0] == "TRYAGAIN":
		return slotMove{again: true}, true
	case len(f) == 3 && (f[0] == "MOVED" || f[0] == "ASK"):
		return slotMove{addr: f[2], ask: f[0] == "ASK"}, true
	}
	return slotMove{}, false
}

// slotRetry paces the retries of one call whose slot moves.
type slotRetry struct{ n int }

// wait pauses before the next try; it returns false, at once, when the
// pause would outlast ctx's deadline: the call is over.
func (r *slotRetry) wait(ctx context.Context) bool {
	pause := slotRetries.Delay(r.n)
	r.n++
	if d, ok := ctx.Deadline(); ok && time.Until(d) < pause {
		return false
	}
	return backoff.Sleep(ctx, pause)
}

// masterAt returns the cluster client's client of the master at addr, or
// nil when the client does not know such a master (yet).
func (s *Store) masterAt(ctx context.Context, addr string) *redis.Client {
	var (
		mu    sync.Mutex
		found *redis.Client
	)
	_ = s.cluster.ForEachMaster(ctx, func(_ context.Context, c *redis.Client) error {
		if c.Options().Addr == addr {
			mu.Lock()
			found = c
			mu.Unlock()
		}
		return nil
	})
	return found
}

// SlotRetries counts the calls to Redis that this store made again because
// a Redis Cluster was moving their slot (see slotMove): none on one Redis.
func (s *Store) SlotRetries() uint64 { return s.slotRetries.Load() }
