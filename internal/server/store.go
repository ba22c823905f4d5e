package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

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
	if !cfg.Store.OnRedis() {
		log.Info("REDIS_URL is not set: using the embedded in-memory store; orders and events are lost when the process stops")
		st := memstore.New(memstore.Options{Retention: cfg.Store.Retention, OnExpire: onExpire, MaxGroupConsumers: cfg.Groups.MaxGroupConsumers})
		return openedStore{store: st, attrs: []any{"store", "memory"}, close: func() {}}, nil
	}
	files := redisstore.TLSFiles{CA: cfg.Store.RedisCA, Cert: cfg.Store.RedisCert, Key: cfg.Store.RedisKey}
	opts := redisstore.Options{Retention: cfg.Store.Retention, Logger: log, OnExpire: onExpire, Partitions: cfg.Store.Partitions, Tracing: cfg.Tracing, Durability: cfg.Store.Durability, MaxGroupConsumers: cfg.Groups.MaxGroupConsumers}
	opened := func(st *redisstore.Store, rdb interface{ Close() error }, attrs []any) openedStore {
		return openedStore{store: st, attrs: append(attrs, "durability", st.Durability().String()), close: func() { _ = rdb.Close() },
			subscribed: st.Subscribed, evictionUnsafe: st.EvictionUnsafe, durabilityUnsafe: st.DurabilityUnsafe,
			unconfirmed: st.UnconfirmedWrites, durability: st.Durability().String(), memory: redisMemory(st)}
	}
	if cfg.Store.RedisCluster != "" {
		rdb, err := redisstore.NewClusterClient(cfg.Store.RedisCluster, files)
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
	if cfg.Store.RedisSentinel != "" {
		so := redisstore.SentinelOptions{Addrs: cfg.Store.RedisSentinel, Master: cfg.Store.RedisSentinelMaster, Password: cfg.Store.RedisSentinelPassword}
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
		sentinels := cfg.Store.RedisSentinel
		if u, err := url.Parse(sentinels); err == nil && strings.Contains(sentinels, "://") {
			sentinels = u.Redacted()
		}
		attrs := []any{"store", "redis-sentinel", "redis_sentinels", sentinels, "redis_master", cfg.Store.RedisSentinelMaster,
			"redis_db", rdb.Options().DB, "redis_tls", rdb.Options().TLSConfig != nil}
		return opened(st, rdb, attrs), nil
	}
	rdb, err := redisstore.NewClient(cfg.Store.RedisURL, files)
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

// StoreConfig says which store serves and how: one Redis (RedisURL), a
// Redis Cluster (RedisCluster) or Redis Sentinel (RedisSentinel); with none
// of them, the embedded memory store.
type StoreConfig struct {
	// RedisURL names one Redis (redis:// or rediss://); RedisCluster names
	// a Redis Cluster by its seeds; RedisSentinel names the sentinels of a
	// master called RedisSentinelMaster (see redisstore.SentinelOptions),
	// RedisSentinelPassword being the sentinels' own. At most one of the
	// three is set.
	RedisURL              string
	RedisCluster          string
	RedisSentinel         string
	RedisSentinelMaster   string
	RedisSentinelPassword string
	// Durability is what an OK to a write promises on Redis (see
	// redisstore.Durability); the memory store keeps nothing across a
	// restart whatever it says.
	Durability redisstore.Durability
	// Partitions is asked for when the store is new; 0: 1 on one Redis
	// (with or without Sentinel), DefaultClusterPartitions on a cluster.
	Partitions int
	// TLS towards Redis (rediss:// URLs): a private CA, a client pair.
	RedisCA, RedisCert, RedisKey string
	// Retention is how long closed orders and expiration events are kept.
	Retention time.Duration
}

// OnRedis says whether the store is Redis (one, a cluster or a master under
// Sentinel) rather than the embedded memory store.
func (c StoreConfig) OnRedis() bool {
	return c.RedisURL != "" || c.RedisCluster != "" || c.RedisSentinel != ""
}

// DefaultClusterPartitions spreads a new store over a cluster: with 64 the
// partitions' hash tags fall 21, 22 and 21 on the slot ranges redis-cli
// gives 3 masters (with 16 they fall 6, 6 and 4). Each partition costs every
// replica one sweeper and one blocked log reader.
const DefaultClusterPartitions = 64

func (c *StoreConfig) register(o *options) {
	o.String(&c.RedisURL, "redis-url", "REDIS_URL", "", "redis://[:password@]host:port/db or rediss://...; empty: the embedded in-memory store, of which nothing survives a restart")
	o.String(&c.RedisCluster, "redis-cluster-addrs", "REDIS_CLUSTER_ADDRS", "", "Redis Cluster seeds, host:port,host:port,... or redis://[user:password@]host:port?addr=host:port&addr=... (rediss:// for TLS); instead of REDIS_URL")
	o.String(&c.RedisSentinel, "redis-sentinel-addrs", "REDIS_SENTINEL_ADDRS", "", "Redis Sentinel instead of REDIS_URL: the sentinels, host:port,host:port,... or redis://[user:password@]host:port[/db]?addr=host:port&addr=... (Redis's user and password; rediss:// for TLS)")
	o.String(&c.RedisSentinelMaster, "redis-sentinel-master", "REDIS_SENTINEL_MASTER", "", "name of the master the sentinels watch (sentinel monitor <name> ...)")
	o.Secret(&c.RedisSentinelPassword, "REDIS_SENTINEL_PASSWORD", "the sentinels' own password (requirepass in sentinel.conf); no flag, so that it stays off the command line")
	o.Text("durability", "DURABILITY", redisstore.DurabilityFast.String(), "what an OK to a write promises on Redis: strict (it survives one Redis failure: on every replica, or fsynced where there is none; otherwise UNAVAILABLE, safe to repeat) or fast (the Redis master has it)")
	o.Int(&c.Partitions, "redis-partitions", "REDIS_PARTITIONS", 0, fmt.Sprintf("partitions of a new store (recorded in Redis at the first start, never changed after); 0: 1 on one Redis, %d on a cluster", DefaultClusterPartitions))
	o.String(&c.RedisCA, "redis-ca", "REDIS_CA_FILE", "", "PEM file of the CA that signed Redis's certificate (rediss://), instead of the system's")
	o.String(&c.RedisCert, "redis-cert", "REDIS_CERT_FILE", "", "PEM client certificate for Redis over TLS, when Redis asks for one")
	o.String(&c.RedisKey, "redis-key", "REDIS_KEY_FILE", "", "PEM key of -redis-cert")
	o.Duration(&c.Retention, "retention", "RETENTION", 24*time.Hour, "how long closed orders stay readable and expiration events replayable")
}

func (c *StoreConfig) parse(o *options) error {
	d, err := redisstore.ParseDurability(o.text("durability"))
	if err != nil {
		return &badOption{flag: "durability", err: err}
	}
	c.Durability = d
	return c.validate()
}

// validate checks the store's settings.
func (c *StoreConfig) validate() error {
	switch {
	case countSet(c.RedisURL, c.RedisCluster, c.RedisSentinel) > 1:
		return fmt.Errorf("REDIS_URL, REDIS_CLUSTER_ADDRS and REDIS_SENTINEL_ADDRS each name a store; give one of them")
	case c.RedisSentinel == "" && (c.RedisSentinelMaster != "" || c.RedisSentinelPassword != ""):
		return fmt.Errorf("REDIS_SENTINEL_MASTER and REDIS_SENTINEL_PASSWORD are for Redis Sentinel: set REDIS_SENTINEL_ADDRS too")
	case c.Partitions < 0 || c.Partitions > order.MaxPartitions:
		return optionErrorf("redis-partitions", "%d partitions: want 1 to %d, or 0 for the default", c.Partitions, order.MaxPartitions)
	case (c.RedisCert == "") != (c.RedisKey == ""):
		return fmt.Errorf("-redis-cert and -redis-key go together: give both, or neither")
	case c.Retention < time.Second:
		return optionErrorf("retention", "retention %s is too short; it must be at least 1s", order.FormatDuration(c.Retention))
	}
	return nil
}

// countSet counts the values that are not empty.
func countSet(values ...string) int {
	n := 0
	for _, v := range values {
		if v != "" {
			n++
		}
	}
	return n
}
