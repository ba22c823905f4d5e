package redisstore_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestMemoryInfo: Memory reads used_memory and maxmemory from Redis, and from
// each master of a cluster, for the metrics that warn before a full Redis
// refuses checkouts.
func TestMemoryInfo(t *testing.T) {
	t.Run("one redis", func(t *testing.T) {
		r := redistest.Start(t, "--maxmemory", "32mb")
		rdb, err := redisstore.NewClient(r.URL(), redisstore.TLSFiles{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rdb.Close() })
		s := redisstore.New(rdb, redisstore.Options{Retention: time.Hour, Logger: testLogger(t)})
		got, err := s.Memory(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Addr != r.Addr || got[0].Max != 32<<20 || got[0].Used < 100_000 {
			t.Fatalf("Memory = %+v, want %s using some memory of 32 MiB", got, r.Addr)
		}
		r.Kill()
		if got, err := s.Memory(t.Context()); err == nil {
			t.Fatalf("Memory with Redis gone = %+v, want an error", got)
		}
	})
	t.Run("cluster", func(t *testing.T) {
		if testing.Short() {
			t.Skip("starts a Redis Cluster (skipped with -short)")
		}
		c := redistest.StartCluster(t, 3, 0, "--maxmemory", "16mb")
		rdb, err := redisstore.NewClusterClient(fmt.Sprintf("%s,%s", c.Addrs()[0], c.Addrs()[1]), redisstore.TLSFiles{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rdb.Close() })
		s := redisstore.New(rdb, redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: 8})
		got, err := s.Memory(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var addrs []string
		for _, n := range got {
			if n.Max != 16<<20 || n.Used <= 0 {
				t.Errorf("master %s: %+v", n.Addr, n)
			}
			addrs = append(addrs, n.Addr)
		}
		var masters []string
		for _, m := range c.Masters(t) {
			masters = append(masters, m.Addr)
		}
		slices.Sort(addrs)
		slices.Sort(masters)
		if !slices.Equal(addrs, masters) {
			t.Fatalf("Memory read %v, want every master %v", addrs, masters)
		}
	})
}
