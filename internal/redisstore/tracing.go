package redisstore

import (
	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
)

// tracer starts the sweeper's spans. It is the global tracer provider's,
// a no-op one unless tracing is on.
var tracer = otel.Tracer("github.com/orderexpiry/orderexpiry/internal/redisstore")

// Trace gives every command rdb sends a span, through go-redis's OpenTelemetry
// hook, a child of the span in the command's context. rdb is a client of one
// Redis (also under Sentinel, *redis.Client) or of a cluster
// (*redis.ClusterClient); on a cluster, call it before the first call, so
// that every node's client gets the hook. The spans name the command,
// without its arguments: an order's metadata stays out of the traces.
func Trace(rdb redis.UniversalClient) {
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		// redisotel's own handling of a cluster appends to a slice that the
		// nodes' hooks share, from whichever goroutine makes a node; each
		// node traced by itself shares nothing.
		c.OnNewNode(func(node *redis.Client) { Trace(node) })
	case *redis.Client:
		// The caller it would name is always the same function of this
		// package, found at a cost on every command.
		_ = redisotel.InstrumentTracing(c, redisotel.WithDBStatement(false), redisotel.WithCallerEnabled(false))
	}
}
