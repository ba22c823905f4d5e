package redisstore_test

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// BenchmarkCheckoutDurability measures what the strict mode costs a
// checkout against the fast mode, side by side on one machine: 64 callers
// at once (so that checkouts batch, as under load) on a master with one
// replica (as under Sentinel), and on one Redis that fsyncs its AOF at
// every write.
//
//	go test -run '^$' -bench CheckoutDurability -benchtime 20000x ./internal/redisstore
func BenchmarkCheckoutDurability(b *testing.B) {
	for _, bc := range []struct {
		name    string
		replica bool
		mode    redisstore.Durability
	}{
		{"replica/fast", true, redisstore.DurabilityFast},
		{"replica/strict", true, redisstore.DurabilityStrict},
		{"fsync-always/fast", false, redisstore.DurabilityFast},
		{"fsync-always/strict", false, redisstore.DurabilityStrict},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var srv *redistest.Server
			if bc.replica {
				srv = redistest.Start(b)
				host, port, _ := net.SplitHostPort(srv.Addr)
				redistest.Start(b, "--replicaof", host, port)
				admin := srv.Client(b)
				for deadline := time.Now().Add(10 * time.Second); !strings.Contains(admin.Info(b.Context(), "replication").Val(), "state=online"); {
					if time.Now().After(deadline) {
						b.Fatal("the replica did not come online")
					}
					time.Sleep(20 * time.Millisecond)
				}
			} else {
				srv = redistest.Start(b, "--appendonly", "yes", "--appendfsync", "always")
			}
			// With the replica, the store runs as under Sentinel: writes
			// wait for the replica rather than for the master's disk.
			s := redisstore.New(srv.Client(b), redisstore.Options{Retention: time.Hour, Durability: bc.mode, Sentinel: bc.replica,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err := s.Ping(b.Context()); err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			b.SetParallelism(32) // 64 callers on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := "b-" + strconv.FormatInt(n.Add(1), 10)
					if _, _, err := s.Checkout(b.Context(), id, time.Hour, nil); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
