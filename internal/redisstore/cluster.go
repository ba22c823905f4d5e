package redisstore

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Redis Cluster spreads the partitions over its masters. What it adds to
// one Redis is here: where each partition lives and whether its master has
// a replica, and writes that wait for that replica (runDurable). The
// subscriptions that follow the masters are in subscriber.go.

// replicaWait bounds how long a write waits for a replica to have it.
const replicaWait = 250 * time.Millisecond

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

// topology asks the cluster for its shards: it sets how many replicas each
// partition's master has, and returns the addresses of the masters.
func (s *Store) topology(ctx context.Context, parts []*partition) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	shards, err := s.cluster.ClusterShards(ctx).Result()
	if err != nil {
		return nil, storeError(err)
	}
	var masters []string
	replicas := make([]int32, len(parts)) // by partition; 0 for a slot no shard serves
	for _, sh := range shards {
		var online int32
		for _, n := range sh.Nodes {
			switch {
			case n.Role == "master" && n.Health == "online" && len(sh.Slots) > 0:
				masters = append(masters, nodeAddr(n))
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
					replicas[i] = online
				}
			}
		}
	}
	for i, p := range parts {
		p.replicas.Store(replicas[i])
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

// runDurable runs a script that changes an order as run does and, in a
// Redis Cluster whose partition has a replica, or on a master under Sentinel
// that has one, waits (WAIT, on the same connection) until a replica has the
// change too. Redis replicates
// asynchronously: without the wait, a master that dies right after
// answering takes a checkout, a completion or a cancellation with it, and
// its promoted replica would not know the order, or would expire a paid one.
// When no replica confirms within replicaWait the change stands (it is on
// the master) and a warning says it is not yet safe from a failover.
func (s *Store) runDurable(ctx context.Context, p *partition, script *redis.Script, args ...any) ([]any, error) {
	if p.replicas.Load() == 0 {
		return s.run(ctx, p, script, args...)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	node, err := s.master(ctx, p)
	if err != nil {
		return nil, storeError(err)
	}
	for loaded := false; ; loaded = true {
		pipe := node.Pipeline()
		res := script.EvalSha(ctx, pipe, p.keys.scriptKeys(), s.args(p, args...)...)
		acked := pipe.Do(ctx, "WAIT", 1, replicaWait.Milliseconds())
		_, err := pipe.Exec(ctx)
		if err != nil && !loaded && redis.HasErrorPrefix(res.Err(), "NOSCRIPT") {
			if err := script.Load(ctx, node).Err(); err != nil {
				return nil, s.nodeError(err)
			}
			continue
		}
		if err := res.Err(); err != nil {
			return nil, s.nodeError(err)
		}
		if err := acked.Err(); err != nil {
			return nil, s.nodeError(err)
		}
		if n, _ := acked.Int64(); n < 1 {
			s.log.Warn("no replica confirmed a write in time: a failover of this master could still lose it",
				"partition", p.index, "waited", replicaWait)
		}
		return res.Slice()
	}
}

// master is the client of partition p's master: under Sentinel the store's
// own client, which is always on the master.
func (s *Store) master(ctx context.Context, p *partition) (*redis.Client, error) {
	if s.cluster == nil {
		return s.rdb.(*redis.Client), nil
	}
	return s.cluster.MasterForKey(ctx, p.keys.deadlines)
}
