package server

import (
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/push"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// Config is what the server is built from. ParseFlags fills it from flags
// and environment variables and checks it; the zero value of a field is not
// its flag's default, so set every field.
type Config struct {
	// RedisURL names one Redis (redis:// or rediss://); RedisCluster names
	// a Redis Cluster by its seeds; RedisSentinel names the sentinels of a
	// master called RedisSentinelMaster (see redisstore.SentinelOptions),
	// RedisSentinelPassword being the sentinels' own. At most one of the
	// three is set; with none, the embedded memory store serves.
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

	// Limits bound what a checkout may ask for.
	Limits order.Limits
	// Retention is how long closed orders and expiration events are kept.
	Retention time.Duration
	// WatchBuffer is how many events a watcher may fall behind before it
	// is closed with a cursor to resume from.
	WatchBuffer int
	// MaxWatchers bounds the watch streams one replica serves at once.
	MaxWatchers int
	// MaxReplays bounds the watches with a cursor that replay at once.
	MaxReplays int
	// WatchWriteTimeout bounds each write of a REST watch.
	WatchWriteTimeout time.Duration
	// MaxBodyBytes bounds a request: a gRPC message or a REST body.
	MaxBodyBytes int
	// ShutdownTimeout bounds the graceful stop.
	ShutdownTimeout time.Duration

	// MaxConnections caps the connections open on each port; past it an
	// idle HTTP connection is closed to make room, or the new one is.
	MaxConnections int
	// IdleTimeout closes an HTTP keep-alive connection, or a gRPC
	// connection with no call, idle this long.
	IdleTimeout time.Duration
	// ReadTimeout bounds reading a REST request's headers and its body,
	// and a new gRPC connection's handshake.
	ReadTimeout time.Duration
	// MaxHeaderBytes bounds a gRPC call's metadata (its header list).
	MaxHeaderBytes int
	// MaxStreams bounds the calls open at once on one gRPC connection.
	MaxStreams int

	// MaxGroups bounds the consumer groups in the store, MaxConsumers the
	// streams of one group open at once on a replica, MaxInFlight a
	// stream's or a pull's unacknowledged deliveries.
	MaxGroups, MaxConsumers, MaxInFlight int
	// MaxGroupConsumers bounds the consumer names that hold deliveries of
	// one group in the store.
	MaxGroupConsumers int

	// Push says which endpoints push groups may name (see push.Policy):
	// with no allowed host, push delivery is off and this replica runs no
	// deliverer.
	Push push.Policy
	// GroupsFile names the groups file, and Groups are its groups: every
	// replica creates those missing at its start and whenever the store
	// can serve again (see groupsfile.go).
	GroupsFile string
	Groups     []*pb.CreateConsumerGroupRequest

	// TLS for the gRPC and HTTP ports; with TLSClientCA, clients must show
	// a certificate it signed.
	TLSCert, TLSKey, TLSClientCA string

	// Tokens are the accepted bearer tokens; none means authentication is
	// off.
	Tokens []string
	// AuthOpen names what needs no token: "health", "reflection",
	// "metrics", "openapi".
	AuthOpen map[string]bool
	// AllowOrigins and AllowHosts widen what the HTTP port takes from web
	// pages when no token is set (see gateway.CrossSite): the origins of
	// pages that may call, and the Host names answered besides IP
	// addresses and localhost.
	AllowOrigins, AllowHosts []string

	// Tracing installs the OpenTelemetry instrumentation of gRPC, REST and
	// Redis calls, whose spans go to the global tracer provider; the
	// command sets it when tracing.Setup turned tracing on.
	Tracing bool
}

// DefaultClusterPartitions spreads a new store over a cluster: with 64 the
// partitions' hash tags fall 21, 22 and 21 on the slot ranges redis-cli
// gives 3 masters (with 16 they fall 6, 6 and 4). Each partition costs every
// replica one sweeper and one blocked log reader.
const DefaultClusterPartitions = 64
