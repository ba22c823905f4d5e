package redisstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestTrace: each kind of client the server opens (one Redis, a cluster,
// a master under Sentinel) sends each command, once traced, as a span that
// is the child of the span in the call's context, and without its
// arguments.
func TestTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	// The hooks take the global provider when they are made, in Trace and,
	// on a cluster, as each node is met.
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	tracer := otel.Tracer("test")

	open := map[string]func(t *testing.T) redis.UniversalClient{
		"redis": func(t *testing.T) redis.UniversalClient {
			return redistest.Start(t).Client(t)
		},
		"cluster": func(t *testing.T) redis.UniversalClient {
			if testing.Short() {
				t.Skip("a Redis Cluster: skipped with -short")
			}
			c := redistest.StartCluster(t, 3, 0)
			rdb, err := redisstore.NewClusterClient(strings.Join(c.Addrs(), ","), redisstore.TLSFiles{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rdb.Close() })
			return rdb
		},
		"sentinel": func(t *testing.T) redis.UniversalClient {
			if testing.Short() {
				t.Skip("Sentinel: skipped with -short")
			}
			sn := redistest.StartSentinel(t, 1, 1)
			rdb, err := redisstore.NewSentinelClient(redisstore.SentinelOptions{Addrs: sn.Addrs(), Master: redistest.SentinelMaster}, redisstore.TLSFiles{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rdb.Close() })
			return rdb
		},
	}
	for name, open := range open {
		t.Run(name, func(t *testing.T) {
			rdb := open(t)
			redisstore.Trace(rdb)
			// Keys in several slots, so that on a cluster several nodes
			// answer.
			keys := []string{"trace-a-" + name, "trace-b-" + name, "trace-c-" + name}
			ctx, parent := tracer.Start(context.Background(), name)
			for _, k := range keys {
				if err := rdb.Set(ctx, k, "secret-value", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			parent.End()
			n := 0
			for _, s := range rec.Ended() {
				if s.Parent().SpanID() != parent.SpanContext().SpanID() {
					continue
				}
				for _, kv := range s.Attributes() {
					if strings.Contains(kv.Value.String(), "secret-value") {
						t.Errorf("the span of a SET holds its argument: %s=%s", kv.Key, kv.Value.String())
					}
				}
				// A cluster's client also learns the slots first.
				if s.Name() == "set" {
					n++
				}
			}
			if n != len(keys) {
				t.Errorf("%d SET spans are children of the calls' span, want %d", n, len(keys))
			}
		})
	}
}
