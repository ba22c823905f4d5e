package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// NewClusterClient opens a client for a Redis Cluster named by its seed
// nodes: either "host:port,host:port,..." or a URL in go-redis's cluster
// form, "redis://[user:password@]host:port?addr=host:port&addr=host:port"
// (rediss:// for TLS). Any live seed is enough; the client learns the rest
// of the cluster from it. Like NewClient, its errors never repeat a URL.
func NewClusterClient(spec string, files TLSFiles) (*redis.ClusterClient, error) {
	var opts *redis.ClusterOptions
	if strings.Contains(spec, "://") {
		var err error
		if opts, err = redis.ParseClusterURL(spec); err != nil {
			return nil, fmt.Errorf("REDIS_CLUSTER_ADDRS is not a valid redis:// or rediss:// cluster URL: %w", withoutURL(err))
		}
	} else {
		opts = &redis.ClusterOptions{}
		for a := range strings.SplitSeq(spec, ",") {
			a = strings.TrimSpace(a)
			if _, _, err := net.SplitHostPort(a); err != nil || a == "" {
				return nil, fmt.Errorf("REDIS_CLUSTER_ADDRS: %q is not a host:port; give the seeds as host:port,host:port or as a redis:// URL", a)
			}
			opts.Addrs = append(opts.Addrs, a)
		}
	}
	if err := useTLSFiles(opts.TLSConfig, files, "REDIS_CLUSTER_ADDRS"); err != nil {
		return nil, err
	}
	// The same bounds as for one Redis (see NewClient). Redirections stay
	// on: following MOVED after a failover or a resharding is the point.
	opts.DialTimeout = dialTimeout
	opts.ReadTimeout = ioTimeout
	opts.WriteTimeout = ioTimeout
	opts.PoolTimeout = ioTimeout
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	// Every partition has a log reader blocked in XREAD on its node, on top
	// of the calls; connections open only when needed, so the bound costs
	// nothing until it is used.
	opts.PoolSize = 10*runtime.GOMAXPROCS(0) + order.MaxPartitions
	// Reads of the event log go to replicas: see Events.
	opts.ReadOnly = true
	// go-redis learns a new topology from MOVED replies, not from a dead
	// master's refused connections; it otherwise reloads once a minute.
	opts.ClusterStateReloadInterval = time.Second
	return redis.NewClusterClient(opts), nil
}

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
// Redis Cluster whose partition has a replica, waits (WAIT, on the same
// connection) until a replica has the change too. Redis replicates
// asynchronously: without the wait, a master that dies right after
// answering takes a checkout, a completion or a cancellation with it, and
// its promoted replica would not know the order, or would expire a paid one.
// When no replica confirms within replicaWait the change stands (it is on
// the master) and a warning says it is not yet safe from a failover.
func (s *Store) runDurable(ctx context.Context, p *partition, script *redis.Script, args ...any) ([]any, error) {
	if s.cluster == nil || p.replicas.Load() == 0 {
		return s.run(ctx, p, script, args...)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	node, err := s.cluster.MasterForKey(ctx, p.keys.deadlines)
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

// nodeError is storeError for a call made on one node of the cluster
// directly: a redirection or a broken connection means the cluster's
// topology changed, which the client is asked to learn again.
func (s *Store) nodeError(err error) error {
	var rerr redis.Error
	if !errors.As(err, &rerr) || redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "ASK") {
		s.cluster.ReloadState(context.Background())
	}
	return storeError(err)
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

// nodeOptions are the options of a client to one node of the cluster, for
// its subscription.
func (s *Store) nodeOptions(addr string) *redis.Options {
	o := s.cluster.Options()
	return &redis.Options{
		Addr:          addr,
		Username:      o.Username,
		Password:      o.Password,
		TLSConfig:     o.TLSConfig,
		DialTimeout:   o.DialTimeout,
		ReadTimeout:   o.ReadTimeout,
		WriteTimeout:  o.WriteTimeout,
		PoolTimeout:   o.PoolTimeout,
		MaxRetries:    -1,
		DialerRetries: 1,
		PoolSize:      2,
	}
}
