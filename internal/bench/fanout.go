package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// fanout runs stage 4: 1, 100 and 1,000 gRPC watchers on one service, each
// over its own connection, while fanRate orders expire per second for
// fanFor. Every watcher must get every event; p99 lateness at the most
// watchers is set beside that of one watcher.
func (r *runner) fanout(ctx context.Context) error {
	e, err := r.startEnv()
	if err != nil {
		return err
	}
	defer e.stop()
	n := int(float64(r.sz.fanRate) * r.sz.fanFor.Seconds())
	rdb := e.redis.Client()
	defer rdb.Close()
	var one lateResult
	for i, k := range r.sz.watchers {
		prefix := fmt.Sprintf("f%d-", k)
		r.logf("  %d watchers, %d orders due over %s", k, n, r.sz.fanFor)
		g, err := startWatchers(ctx, e.svc.GRPCAddr, k, prefix, n)
		if err != nil {
			return err
		}
		start := time.Now().Add(2 * time.Second)
		last := start.Add(r.sz.fanFor)
		if _, err := checkoutAll(ctx, e.clients, r.sz.callers, n, func(i int) string { return prefix + strconv.Itoa(i) }, until(start, r.sz.fanFor, n)); err != nil {
			g.stop()
			return err
		}
		var prof *profiling
		if i == len(r.sz.watchers)-1 {
			prof = r.profile(e.svc, fmt.Sprintf("fanout-%d", k), start.Add(-100*time.Millisecond))
		}
		time.Sleep(time.Until(start))
		cpu, stats := e.cpu(), readRedisStats(ctx, rdb)
		g.wait(last.Add(r.sz.svcWait))
		waited := time.Since(last)
		r.t.note("4: %d watchers: %s", k, readRedisStats(ctx, rdb).since(stats))
		cpuNote := e.cpuSince(cpu, 0)
		r.logf("    %s", cpuNote)
		r.t.note("4: %d watchers, from the first deadline until the last event: %s", k, cpuNote)
		g.stop()
		prof.wait()
		res := watchResult(g.ws)
		res.waited = waited
		complete := 0
		for _, w := range g.ws {
			if w.got == w.n {
				complete++
			}
		}
		if i == 0 {
			one = res
		}
		allIn := res.got == res.want && res.dups == 0
		stage := fmt.Sprintf("4 (%d)", k)
		r.t.add(row{stage, fmt.Sprintf("events delivered (%d watchers × %d)", k, n), count(res.got, res.want), "", "", "all", yesNo(allIn)})
		r.t.add(row{stage, "lateness p50", res.fmt(res.late.P50), one.fmt(one.late.P50) + " at 1", latRatio(res.late.P50, res.waited, one.late.P50, one.waited), "", ""})
		goal, met := "", ""
		if i == len(r.sz.watchers)-1 {
			goal, met = "≤ 2× of 1 watcher", yesNo(allIn && res.late.P99 <= 2*one.late.P99)
		}
		r.t.add(row{stage, "lateness p99", res.fmt(res.late.P99), one.fmt(one.late.P99) + " at 1", latRatio(res.late.P99, res.waited, one.late.P99, one.waited), goal, met})
		r.t.add(row{stage, "lateness max", res.fmt(res.late.Max), one.fmt(one.late.Max) + " at 1", latRatio(res.late.Max, res.waited, one.late.Max, one.waited), "", ""})
		r.t.note("4: %d watchers: %d of them got every event; %d duplicates; %d watch reconnects (last error: %v); claim lateness p99 %s",
			k, complete, res.dups, res.reconnects, res.lastErr, res.fmt(res.claim.P99))
		r.logf("    delivered %d/%d, p50 %s, p99 %s, max %s, %d reconnects", res.got, res.want, res.fmt(res.late.P50), res.fmt(res.late.P99), res.fmt(res.late.Max), res.reconnects)
	}
	return nil
}
