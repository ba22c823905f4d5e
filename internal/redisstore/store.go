// Package redisstore keeps orders and their expiration log in Redis. Each
// state change is one Lua script (see scripts.go); a sweeper expires orders at
// their deadline and a subscriber to Redis's expired-key events wakes it, so
// that orders expire on time although Redis itself emits those events late.
//
// In the strict durability mode every write a caller is answered for waits
// for the replicas (see durability.go): those on orders, on consumer groups
// (create, delete, ack, nack, release, redrive) and on bulk operations
// (start, changes, cancel) alike. Which scripts' writes are confirmed is declared where
// they are loaded (scripts.go), and run.go, the one way to run a script,
// confirms them; tests hold every script and every such call to it.
//
// The files follow the concerns:
//
//   - store.go: the Store and its options; client.go opens clients,
//     sentinel.go those of Redis Sentinel, tracing.go their spans;
//   - keys.go names the keys, partition.go the partitions, codec.go reads
//     what the scripts store;
//   - lua/ holds the Lua, one file a script; scripts.go loads it and
//     declares what each script's writes need, run.go runs the scripts;
//   - orders.go the calls on orders, batch.go how those of one partition
//     that come together go to Redis as one script call, list.go the
//     listing of orders, stats.go their counts;
//   - log.go the expiration log, groups.go the consumer groups on it
//     (delivery, acknowledgement, dead letters), bulk.go the bulk
//     operations;
//   - durability.go what an OK to a write promises and the replica wait
//     that keeps it, eviction.go and meminfo.go Redis's memory, epoch.go
//     the store's identity and what happens when Redis loses it;
//   - sweeper.go and subscriber.go the background work of Run, cluster.go
//     what a Redis Cluster adds, errors.go the translation of Redis's
//     errors into the domain's.
package redisstore

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Options configure a Store.
type Options struct {
	// Retention is how long closed orders and expiration events are kept.
	Retention time.Duration
	// Logger receives the store's warnings, and go-redis's messages while
	// Run runs; slog.Default() when nil.
	Logger *slog.Logger
	// OnExpire, when set, is called by the sweeper after each pass that
	// expired orders, with how many it expired and how many of those it
	// claimed more than a second after their deadline by Redis's clock
	// (orders caught up after an outage, a restart or a lost wake-up). It
	// is also called for an order that a call (Get, Complete, Cancel,
	// Checkout) finds due and expires itself. It must not block.
	OnExpire func(expired, caughtUp int)
	// Partitions is the number of partitions to record when the store is
	// new (see layout); 0 means 1. A store keeps the number it started
	// with: the partition of an order follows from it.
	Partitions int
	// Sentinel says that the client is one of NewSentinelClient, on a
	// master with replicas that Redis Sentinel fails over: a strict write
	// then needs a replica to confirm it, as on a cluster.
	Sentinel bool
	// MaxGroupConsumers bounds the consumers that hold deliveries of a
	// group on each partition (see order.GroupStore.Deliver); 0 means
	// order.DefaultMaxGroupConsumers.
	MaxGroupConsumers int
	// Durability is what an OK to a write promises (see Durability); the
	// zero value is DurabilityFast.
	Durability Durability
	// Tracing gives the clients the store opens by itself (one per master
	// of a cluster, for its subscription) spans as Trace does; the caller
	// traces the client it gives New.
	Tracing bool
}

// Store is the order store on one Redis database or on a Redis Cluster.
type Store struct {
	rdb redis.UniversalClient
	// cluster is rdb when it is a Redis Cluster, nil on one Redis.
	cluster *redis.ClusterClient
	// sentinel: rdb is on the master Redis Sentinel names.
	sentinel bool
	db       int
	want     int
	// asked is Options.Partitions as given: 0 when none was asked for.
	asked     int
	retention time.Duration
	log       *slog.Logger
	onExpire  func(expired, caughtUp int)
	// maxGroupConsumers is Options.MaxGroupConsumers.
	maxGroupConsumers int
	tracing           bool

	// parts is set by the first successful layout.
	parts atomic.Pointer[[]*partition]
	// epoch is the store's epoch as this replica knows it (see epoch.go):
	// set by the first successful layout, renewed by Ping.
	epoch atomic.Pointer[string]
	// fault, while set, is the error of every call: the store records
	// another number of partitions than this replica's (see epoch.go).
	fault atomic.Pointer[order.Error]
	// checking serialises Ping's checks of the epoch.
	checking sync.Mutex
	// groupIDs are the consumer groups the last Ping found, for the log
	// line of an emptied store to name those lost; guarded by checking.
	groupIDs []string

	// masters is how many masters the subscriber listens to, subscribed
	// how many of those subscriptions are up.
	masters, subscribed atomic.Int32

	// slotRetries counts the calls made again because their slot was
	// moving (see slotMove).
	slotRetries atomic.Uint64
	// claimQueues are the claim queues of the cluster's masters, by
	// address (see claims.go).
	claimQueues sync.Map

	// configWarning warns once that CONFIG is refused.
	configWarning sync.Once

	// groups holds the settings of the consumer groups this replica serves.
	groups groupCache
	// owner names this replica as the holder of a bulk operation's lease
	// (bulk.go); opWake wakes its worker for a new or cancelled one.
	owner  string
	opWake chan struct{}
	// deliverTurn turns the partition Deliver starts at.
	deliverTurn atomic.Uint32
	// ev is what the store knows of Redis's eviction policy: the reason
	// checkouts are refused, nil while it is safe (or cannot be read).
	ev settingsCheck

	// durability is what an OK to a write promises; dur what the store
	// knows of the settings of Redis that keep the promise (see
	// durability.go).
	durability Durability
	dur        settingsCheck
	// nodeReplicas is, by master address, the replicas the master had at
	// its last group write, where the next one's confirmation starts
	// (partitions keep their own count): one count for every master would
	// make a write to a master with fewer replicas than the last one's
	// wait out replicaWait for replicas it does not have.
	nodeReplicas sync.Map
	// unconfirmedWrites counts the strict writes that their replicas did
	// not confirm in time.
	unconfirmedWrites atomic.Uint64
	// fastWindow logs once what the fast mode can lose.
	fastWindow sync.Once
}

// New returns a Store on a client of one Redis (*redis.Client) or of a
// Redis Cluster (*redis.ClusterClient, see NewClusterClient). It does not
// take ownership of the client, and does not call Redis yet.
func New(rdb redis.UniversalClient, opts Options) *Store {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{
		rdb:       rdb,
		want:      max(opts.Partitions, 1),
		asked:     opts.Partitions,
		retention: opts.Retention,
		log:       opts.Logger,
		onExpire:  opts.OnExpire,
		sentinel:  opts.Sentinel,
		tracing:   opts.Tracing,
		owner:     randomID(),
		opWake:    make(chan struct{}, 1),

		durability:        opts.Durability,
		maxGroupConsumers: opts.MaxGroupConsumers,
	}
	if s.maxGroupConsumers <= 0 {
		s.maxGroupConsumers = order.DefaultMaxGroupConsumers
	}
	switch c := rdb.(type) {
	case *redis.Client:
		s.db = c.Options().DB
	case *redis.ClusterClient:
		s.cluster = c
	}
	return s
}
