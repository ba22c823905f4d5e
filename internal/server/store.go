package server

import (
	"context"
	"log/slog"
	"net/url"
	"strings"

	"github.com/orderexpiry/orderexpiry/internal/filter"
	"github.com/orderexpiry/orderexpiry/internal/memstore"
	"github.com/orderexpiry/orderexpiry/internal/metrics"
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
)

// openedStore is the store the configuration names, with what the serving
// line says of it and how to release it.
type openedStore struct {
	store listingStore
	// attrs describe the store for the log, without secrets.
	attrs []any
	close func()
	// subscribed says whether the Redis store hears Redis's expired-key
	// events; nil for the memory store, which needs no subscription.
	subscribed func() bool
	// evictionUnsafe says whether Redis could evict the store's keys; nil
	// for the memory store.
	evictionUnsafe func() bool
	// durabilityUnsafe says whether Redis's settings break the strict
	// durability's promise, unconfirmed counts the writes refused because
	// their replicas did not confirm them; nil for the memory store.
	durabilityUnsafe func() bool
	unconfirmed      func() uint64
	// durability names the mode for the serving line, /healthz and the
	// metrics; empty for the memory store.
	durability string
	// slotRetries counts the calls the store made again while a Redis
	// Cluster moved their slot; nil for the other stores.
	slotRetries func() uint64
	// memory reads Redis's memory use and limit; nil for the memory store.
	memory func() []metrics.RedisMemory
}

// redisMemory reads st's Redis memory for the metrics; a Redis that cannot
// be read is left out of that scrape.
func redisMemory(st *redisstore.Store) func() []metrics.RedisMemory {
	return func() []metrics.RedisMemory {
		nodes, _ := st.Memory(context.Background())
		out := make([]metrics.RedisMemory, 0, len(nodes))
		for _, n := range nodes {
			out = append(out, metrics.RedisMemory{Addr: n.Addr, Used: n.Used, Max: n.Max})
		}
		return out
	}
}

// listingStore is an order store that lists orders too; both stores are.
type listingStore interface {
	order.Store
	filter.Lister
}

// openStore opens a Redis Cluster, a master under Sentinel or one Redis when
// one is named, and the memory store otherwise. onExpire hears of each expiration this replica
// claims.
func openStore(cfg Config, log *slog.Logger, onExpire func(n, caughtUp int)) (openedStore, error) {
	if cfg.RedisURL == "" && cfg.RedisCluster == "" && cfg.RedisSentinel == "" {
		log.Info("REDIS_URL is not set: using the embedded in-memory store; orders and events are lost when the process stops")
		st := memstore.New(memstore.Options{Retention: cfg.Retention, OnExpire: onExpire, MaxGroupConsumers: cfg.MaxGroupConsumers})
		return openedStore{store: st, attrs: []any{"store", "memory"}, close: func() {}}, nil
	}
	files := redisstore.TLSFiles{CA: cfg.RedisCA, Cert: cfg.RedisCert, Key: cfg.RedisKey}
	opts := redisstore.Options{Retention: cfg.Retention, Logger: log, OnExpire: onExpire, Partitions: cfg.Partitions, Tracing: cfg.Tracing, Durability: cfg.Durability, MaxGroupConsumers: cfg.MaxGroupConsumers}
	opened := func(st *redisstore.Store, rdb interface{ Close() error }, attrs []any) openedStore {
		return openedStore{store: st, attrs: append(attrs, "durability", st.Durability().String()), close: func() { _ = rdb.Close() },
			subscribed: st.Subscribed, evictionUnsafe: st.EvictionUnsafe, durabilityUnsafe: st.DurabilityUnsafe,
			unconfirmed: st.UnconfirmedWrites, durability: st.Durability().String(), memory: redisMemory(st)}
	}
	if cfg.RedisCluster != "" {
		rdb, err := redisstore.NewClusterClient(cfg.RedisCluster, files)
		if err != nil {
			return openedStore{}, err
		}
		if cfg.Tracing {
			redisstore.Trace(rdb)
		}
		if opts.Partitions == 0 {
			opts.Partitions = DefaultClusterPartitions
		}
		st := redisstore.New(rdb, opts)
		// The seeds only: a URL may hold a password.
		attrs := []any{"store", "redis-cluster", "redis_seeds", strings.Join(rdb.Options().Addrs, ","), "redis_tls", rdb.Options().TLSConfig != nil}
		o := opened(st, rdb, attrs)
		o.slotRetries = st.SlotRetries
		return o, nil
	}
	if cfg.RedisSentinel != "" {
		so := redisstore.SentinelOptions{Addrs: cfg.RedisSentinel, Master: cfg.RedisSentinelMaster, Password: cfg.RedisSentinelPassword}
		rdb, err := redisstore.NewSentinelClient(so, files)
		if err != nil {
			return openedStore{}, err
		}
		if cfg.Tracing {
			redisstore.Trace(rdb)
		}
		opts.Sentinel = true
		st := redisstore.New(rdb, opts)
		// A URL may hold Redis's password: it is redacted.
		sentinels := cfg.RedisSentinel
		if u, err := url.Parse(sentinels); err == nil && strings.Contains(sentinels, "://") {
			sentinels = u.Redacted()
		}
		attrs := []any{"store", "redis-sentinel", "redis_sentinels", sentinels, "redis_master", cfg.RedisSentinelMaster,
			"redis_db", rdb.Options().DB, "redis_tls", rdb.Options().TLSConfig != nil}
		return opened(st, rdb, attrs), nil
	}
	rdb, err := redisstore.NewClient(cfg.RedisURL, files)
	if err != nil {
		return openedStore{}, err
	}
	if cfg.Tracing {
		redisstore.Trace(rdb)
	}
	st := redisstore.New(rdb, opts)
	// The address and db only: the URL may hold a password.
	attrs := []any{"store", "redis", "redis_addr", rdb.Options().Addr, "redis_db", rdb.Options().DB, "redis_tls", rdb.Options().TLSConfig != nil}
	return opened(st, rdb, attrs), nil
}
