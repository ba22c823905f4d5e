package redisstore_test

import (
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// BenchmarkExpireDue measures what the sweeper costs per order: batches of
// orders that are all due are expired by sweeper passes. It reports the
// wall time and the time Redis spent in the sweeper's scripts (INFO
// commandstats, EVALSHA), per order.
//
//	go test -run '^$' -bench ExpireDue -benchtime 5x ./internal/redisstore
func BenchmarkExpireDue(b *testing.B) {
	for _, bc := range []struct {
		name string
		meta string
	}{
		{"no metadata", ""},
		{"metadata", `{"customer":"c-42","sku":"tee-L"}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := redistest.Start(b)
			admin := srv.Client(b)
			s := redisstore.New(srv.Client(b), redisstore.Options{
				Retention: time.Hour,
				Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			const perPass = 20000
			ids := make([]string, perPass)
			var usec, orders int64
			var wall time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for j := range ids {
					ids[j] = "o-" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
				}
				if err := s.CheckoutMany(b.Context(), ids, time.Hour, bc.meta); err != nil {
					b.Fatal(err)
				}
				if err := s.MakeDue(b.Context()); err != nil {
					b.Fatal(err)
				}
				before := infoInt(b, admin, "commandstats", "cmdstat_evalsha", "usec")
				start := time.Now()
				b.StartTimer()
				if err := s.ExpireDue(b.Context()); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				wall += time.Since(start)
				usec += infoInt(b, admin, "commandstats", "cmdstat_evalsha", "usec") - before
				orders += perPass
			}
			if n := streamLength(b, srv); n != orders {
				b.Fatalf("the log has %d events, want %d", n, orders)
			}
			b.ReportMetric(float64(wall.Nanoseconds())/float64(orders), "ns/order")
			b.ReportMetric(float64(usec)/float64(orders), "redis-µs/order")
			b.ReportMetric(0, "ns/op")
		})
	}
}
