package redisstore_test

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// BenchmarkExpireDue measures what the sweeper costs per order: batches of
// orders that are all due are expired by sweeper passes. It reports the
// wall time, the time Redis spent in the sweeper's scripts (INFO
// commandstats, EVALSHA) and the CPU time of the redis-server process
// (INFO cpu), per order. EVALSHA's time is wall time, so on a busy machine
// it counts the time Redis was scheduled out too; the CPU time does not.
// With -v it logs the commands the scripts ran, per order.
//
//	go test -run '^$' -bench 'ExpireDue/.*metadata' -benchtime 5x ./internal/redisstore
//	go test -run '^$' -bench 'ExpireDue/one_a_call' -benchtime 3000x ./internal/redisstore
func BenchmarkExpireDue(b *testing.B) {
	for _, bc := range []struct {
		name    string
		meta    string
		perPass int
	}{
		{"no metadata", "", 20000},
		{"metadata", `{"customer":"c-42","sku":"tee-L"}`, 20000},
		// One order a call, as on a cluster's 64 partitions at a few
		// thousand expiries a second: what a call costs whatever it
		// carries. Redis waits between the calls (each pass checks an
		// order out first), so its caches are colder than in a burst:
		// 42 µs a call here, 17.5 µs with the calls back to back
		// (redis-cli --pipe).
		{"one a call", "", 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := redistest.Start(b)
			admin := srv.Client(b)
			s := redisstore.New(srv.Client(b), redisstore.Options{
				Retention: time.Hour,
				Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			perPass := bc.perPass
			ids := make([]string, perPass)
			var usec, orders int64
			var wall time.Duration
			var cpu float64
			var cmds map[string][2]int64
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
				cpuBefore, cmdsBefore := redisCPU(b, admin), commandStats(b, admin)
				start := time.Now()
				b.StartTimer()
				if err := s.ExpireDue(b.Context()); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				wall += time.Since(start)
				usec += infoInt(b, admin, "commandstats", "cmdstat_evalsha", "usec") - before
				cpu += redisCPU(b, admin) - cpuBefore
				cmds = addStats(cmds, commandStats(b, admin), cmdsBefore)
				orders += int64(perPass)
			}
			if n := streamLength(b, srv); n != orders {
				b.Fatalf("the log has %d events, want %d", n, orders)
			}
			b.ReportMetric(float64(wall.Nanoseconds())/float64(orders), "ns/order")
			b.ReportMetric(float64(usec)/float64(orders), "redis-µs/order")
			b.ReportMetric(cpu*1e6/float64(orders), "redis-cpu-µs/order")
			b.Log(perOrder(cmds, orders))
			b.ReportMetric(0, "ns/op")
		})
	}
}

// redisCPU reads the CPU time the redis-server process used, in seconds.
func redisCPU(b *testing.B, admin *redis.Client) float64 {
	b.Helper()
	info, err := admin.Info(b.Context(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for line := range strings.SplitSeq(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_user" || k == "used_cpu_sys" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu: %q", line)
			}
			sum += f
		}
	}
	return sum
}

// commandStats reads INFO commandstats: per command, its calls and
// microseconds.
func commandStats(b *testing.B, admin *redis.Client) map[string][2]int64 {
	b.Helper()
	info, err := admin.Info(b.Context(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	st := map[string][2]int64{}
	for line := range strings.SplitSeq(info, "\n") {
		name, fields, ok := strings.Cut(strings.TrimSpace(line), ":")
		cmd, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		var c [2]int64
		for f := range strings.SplitSeq(fields, ",") {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				c[0] = n
			case "usec":
				c[1] = n
			}
		}
		st[cmd] = c
	}
	return st
}

// addStats adds the difference between two readings of commandStats to sum.
func addStats(sum, after, before map[string][2]int64) map[string][2]int64 {
	if sum == nil {
		sum = map[string][2]int64{}
	}
	for cmd, a := range after {
		d := sum[cmd]
		d[0] += a[0] - before[cmd][0]
		d[1] += a[1] - before[cmd][1]
		sum[cmd] = d
	}
	return sum
}

// perOrder describes the commands of the measured passes per order: calls
// and microseconds (nested commands also count in EVALSHA's).
func perOrder(cmds map[string][2]int64, orders int64) string {
	names := make([]string, 0, len(cmds))
	for cmd, c := range cmds {
		if c[0] > 0 && cmd != "info" {
			names = append(names, cmd)
		}
	}
	slices.SortFunc(names, func(a, b string) int { return int(cmds[b][1] - cmds[a][1]) })
	var parts []string
	for _, cmd := range names {
		c := cmds[cmd]
		parts = append(parts, fmt.Sprintf("%s %.3g calls %.2fµs", cmd, float64(c[0])/float64(orders), float64(c[1])/float64(orders)))
	}
	return "per order: " + strings.Join(parts, ", ")
}
