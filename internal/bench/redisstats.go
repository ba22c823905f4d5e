package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisStats is what Redis says it spent its time on: per command, calls
// and microseconds (INFO commandstats, commands run by scripts included),
// and how many keys it expired itself.
type redisStats struct {
	calls, usec map[string]int64
	expiredKeys int64
}

func readRedisStats(ctx context.Context, rdb *redis.Client) redisStats {
	st := redisStats{calls: map[string]int64{}, usec: map[string]int64{}}
	info, err := rdb.Info(ctx, "commandstats", "stats").Result()
	if err != nil {
		return st
	}
	for _, l := range strings.Split(info, "\n") {
		l = strings.TrimSpace(l)
		if v, ok := strings.CutPrefix(l, "expired_keys:"); ok {
			st.expiredKeys, _ = strconv.ParseInt(v, 10, 64)
		}
		name, fields, ok := strings.Cut(l, ":")
		cmd, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		for _, f := range strings.Split(fields, ",") {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				st.calls[cmd] = n
			case "usec":
				st.usec[cmd] = n
			}
		}
	}
	return st
}

// since describes the busiest commands since an earlier reading.
func (st redisStats) since(old redisStats) string {
	type c struct {
		name        string
		calls, usec int64
	}
	var cs []c
	var total int64
	for name, u := range st.usec {
		d := c{name, st.calls[name] - old.calls[name], u - old.usec[name]}
		if d.calls > 0 {
			cs = append(cs, d)
			total += d.usec
		}
	}
	slices.SortFunc(cs, func(a, b c) int { return int(b.usec - a.usec) })
	parts := []string{}
	for _, x := range cs[:min(len(cs), 6)] {
		parts = append(parts, fmt.Sprintf("%s %d calls %.2fs (%.1fµs each)", x.name, x.calls,
			(time.Duration(x.usec)*time.Microsecond).Seconds(), float64(x.usec)/float64(x.calls)))
	}
	return fmt.Sprintf("Redis commands (script-called included; nested ones also count in EVALSHA's time): %s; keys expired by Redis itself: %d",
		strings.Join(parts, ", "), st.expiredKeys-old.expiredKeys)
}

// redisCPU is the CPU time (user + system) Redis says its process has used
// so far (INFO cpu), finer than /proc's 10 ms ticks; 0 when it cannot be
// read.
func redisCPU(ctx context.Context, rdb *redis.Client) time.Duration {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var sec float64
	for _, l := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(l), ":")
		if k == "used_cpu_user" || k == "used_cpu_sys" {
			f, _ := strconv.ParseFloat(v, 64)
			sec += f
		}
	}
	return time.Duration(sec * float64(time.Second))
}
