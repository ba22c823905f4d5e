package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// memory runs stage 3: Redis's used_memory growth and the service's heap
// growth over N pending orders without metadata, beside the naive recipe's
// used_memory growth over N keys SET with PX, each on a fresh redis-server.
func (r *runner) memory(ctx context.Context) error {
	n := r.sz.memOrders
	e, err := r.startEnv()
	if err != nil {
		return err
	}
	defer e.stop()
	rdb := e.redis.Client()
	defer rdb.Close()

	// A warm-up past the sizes at which Redis changes a small sorted set's or
	// hash's encoding, and past the first load of the scripts.
	if _, err := checkoutAll(ctx, e.clients, r.sz.callers, 500, func(i int) string { return "warm-" + strconv.Itoa(i) }, fixed(time.Hour)); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	redisBefore, err := usedMemory(ctx, rdb)
	if err != nil {
		return err
	}
	heapBefore, err := heapInuse(e.svc)
	if err != nil {
		return err
	}
	took, err := checkoutAll(ctx, e.clients, r.sz.callers, n, func(i int) string { return "m-" + strconv.Itoa(i) }, fixed(time.Hour))
	if err != nil {
		return err
	}
	r.logf("  %d checkouts (ttl 1h, no metadata, ids m-0…m-%d) in %s", n, n-1, took.Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	redisAfter, err := usedMemory(ctx, rdb)
	if err != nil {
		return err
	}
	heapAfter, err := heapInuse(e.svc)
	if err != nil {
		return err
	}
	keys, _ := rdb.DBSize(ctx).Result()

	// The naive recipe: one key per order, SET order:<id> 1 PX <ttl>.
	rd, err := startRedis(r.dir)
	if err != nil {
		return err
	}
	defer rd.Stop()
	nrdb := rd.Client()
	defer nrdb.Close()
	naiveBefore, err := usedMemory(ctx, nrdb)
	if err != nil {
		return err
	}
	for lo := 0; lo < n; lo += 1000 {
		pipe := nrdb.Pipeline()
		for i := lo; i < min(lo+1000, n); i++ {
			pipe.Do(ctx, "SET", "order:m-"+strconv.Itoa(i), "1", "PX", time.Hour.Milliseconds())
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	naiveAfter, err := usedMemory(ctx, nrdb)
	if err != nil {
		return err
	}

	perRedis := float64(redisAfter-redisBefore) / float64(n)
	perNaive := float64(naiveAfter-naiveBefore) / float64(n)
	perHeap := float64(heapAfter-heapBefore) / float64(n)
	r.t.add(row{"3", fmt.Sprintf("Redis used_memory per pending order (%d)", n), bytesPer(perRedis), bytesPer(perNaive) + " naive SET PX",
		ratio(perRedis, perNaive), "≤ 400 B", yesNo(perRedis <= 400)})
	r.t.add(row{"3", "service HeapInuse per pending order", bytesPer(perHeap), "-", "-", "≤ 200 B", yesNo(perHeap <= 200)})
	r.t.note("3: Redis used_memory %d → %d B (%d keys after); naive %d → %d B; service HeapInuse (after GC) %d → %d B. The service keeps no per-order state in its heap with Redis, so its figure is the noise of a GC'd heap, not a per-order cost.",
		redisBefore, redisAfter, keys, naiveBefore, naiveAfter, heapBefore, heapAfter)
	return nil
}

func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("INFO memory has no used_memory")
}

// heapInuse reads "# HeapInuse = N" from the service's heap profile, taken
// after a garbage collection (gc=1).
func heapInuse(s *Service) (int64, error) {
	resp, err := http.Get("http://" + s.DebugAddr + "/debug/pprof/heap?debug=1&gc=1")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapInuse = "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("the heap profile has no HeapInuse line (%v)", sc.Err())
}
