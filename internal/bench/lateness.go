package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// lateResult is what one lateness workload measured.
type lateResult struct {
	want, got, dups, reconnects int
	late                        dist // receive time - deadline
	claim                       dist // expired_at - deadline (service only)
	waited                      time.Duration
	lastErr                     error
	perKey                      float64       // naive: Redis used_memory growth per background key
	redisCPU                    time.Duration // Redis's CPU from the first deadline until the last event
}

// never stands for the lateness of an event that did not arrive.
const never = time.Duration(math.MaxInt64)

// fmt formats a lateness of this result: one that did not arrive was later
// than the wait after the last deadline.
func (l lateResult) fmt(d time.Duration) string {
	if d == never {
		return "> " + ms(l.waited)
	}
	return ms(d)
}

// latRatio is a/b for latenesses, where either may be a lower bound.
func latRatio(a, aw, b, bw time.Duration) string {
	switch {
	case a == never && b == never:
		return "-"
	case a == never:
		return "> " + ratio(float64(aw), float64(b))
	case b == never:
		return "< " + ratio(float64(a), float64(bw))
	}
	return ratio(float64(a), float64(b))
}

// lateness runs stage 1: a number of orders due within `spread` while
// Redis holds `background` pending orders that are not due, through the
// service and through the naive recipe, each on a fresh redis-server.
func (r *runner) lateness(ctx context.Context, name string, background, due int, goalP99 time.Duration) error {
	const spread = time.Second
	label := fmt.Sprintf("1%s lateness: %d due over 1s, %d pending not due", name, due, background)
	r.logf("%s: the service", label)
	svc, err := r.serviceLateness(ctx, lateWorkload{tag: "1" + name, profile: "lateness-" + name, background: background, due: due, spread: spread})
	if err != nil {
		return fmt.Errorf("%s, service: %w", label, err)
	}
	var naive lateResult
	if r.cfg.Naive {
		r.logf("%s: the naive recipe (waits up to %s after the last deadline)", label, r.sz.naiveWait)
		naive, err = r.naiveLateness(ctx, background, due, spread, false)
		if err != nil {
			return fmt.Errorf("%s, naive: %w", label, err)
		}
	}
	stage := "1" + name
	base := func(d time.Duration) string {
		if !r.cfg.Naive {
			return "-"
		}
		return naive.fmt(d)
	}
	rat := func(a, b time.Duration) string {
		if !r.cfg.Naive {
			return "-"
		}
		return latRatio(a, svc.waited, b, naive.waited)
	}
	allIn := svc.got == svc.want && svc.dups == 0
	naiveGot, naiveRatio := "-", "-"
	if r.cfg.Naive {
		naiveGot, naiveRatio = count(naive.got, naive.want), ratio(float64(svc.got), float64(naive.got))
	}
	r.t.add(row{stage, fmt.Sprintf("delivered (%d due, %d not due)", due, background), count(svc.got, svc.want),
		naiveGot, naiveRatio, "all", yesNo(allIn)})
	r.t.add(row{stage, "lateness p50", svc.fmt(svc.late.P50), base(naive.late.P50), rat(svc.late.P50, naive.late.P50), "", ""})
	r.t.add(row{stage, "lateness p99", svc.fmt(svc.late.P99), base(naive.late.P99), rat(svc.late.P99, naive.late.P99),
		"≤ " + ms(goalP99), yesNo(allIn && svc.late.P99 <= goalP99)})
	r.t.add(row{stage, "lateness max", svc.fmt(svc.late.Max), base(naive.late.Max), rat(svc.late.Max, naive.late.Max), "", ""})
	r.t.note("1%s: service claim lateness (expired_at - deadline) p50 %s, p99 %s, max %s; %d duplicate events, %d watch reconnects (last error: %v)",
		name, svc.fmt(svc.claim.P50), svc.fmt(svc.claim.P99), svc.fmt(svc.claim.Max), svc.dups, svc.reconnects, svc.lastErr)
	if r.cfg.Naive {
		r.t.note("1%s: naive baseline waited %s after the last deadline; %d of %d expired events arrived (an event that did not arrive counts as later than that wait: \"> …\")",
			name, naive.waited.Round(100*time.Millisecond), naive.got, naive.want)
	}
	return nil
}

// burst runs stage 1b: a burst of orders due within one second on one
// Redis, through the service to a REST watcher, beside the floor: a bare
// Redis with the same keys and a client that reads each due key within a
// millisecond of its deadline, which makes Redis expire it and publish its
// event at once. The naive recipe (the bare keyspace event, nobody
// touching) is a further baseline. The burst runs twice, as issue 20 asks:
// with nothing else pending, and beside r.sz.burstPending pending orders not
// due (the floor's Redis holding as many keys not due), unless that is 0.
// The goal: p99 within 10× the floor's (aiming at 3×).
func (r *runner) burst(ctx context.Context) error {
	parts := []int{0}
	if r.sz.burstPending > 0 {
		parts = append(parts, r.sz.burstPending)
	}
	var errs []error
	for _, pending := range parts {
		if err := r.burstBeside(ctx, pending); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// The other part still runs: each stands on its own.
			r.logf("  %v", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// burstBeside runs one part of stage 1b, the burst beside `pending` orders
// not due, and adds its rows and notes.
func (r *runner) burstBeside(ctx context.Context, pending int) error {
	const spread = time.Second
	due := r.sz.heavyDue
	// The second part's rows end, and its notes begin, with what is
	// pending beside it; the first part's keep their names.
	beside, tag, profile := "", "1b", "lateness-b"
	if pending > 0 {
		beside = fmt.Sprintf(", beside %d pending", pending)
		tag, profile = fmt.Sprintf("1b beside %d pending", pending), fmt.Sprintf("lateness-b-beside-%d", pending)
	}
	const stage = "1b"
	label := fmt.Sprintf("1b burst: %d due within 1s%s", due, beside)
	r.logf("%s: the service, watched over REST", label)
	svc, err := r.serviceLateness(ctx, lateWorkload{tag: tag, profile: profile, background: pending, due: due, spread: spread, rest: true, batch: true})
	if err != nil {
		return fmt.Errorf("%s, service: %w", label, err)
	}
	r.logf("%s: the floor (a bare Redis, a client touching each due key)", label)
	floor, err := r.naiveLateness(ctx, pending, due, spread, true)
	if err != nil {
		return fmt.Errorf("%s, floor: %w", label, err)
	}
	var naive lateResult
	if r.cfg.Naive {
		r.logf("%s: the naive recipe (waits up to %s after the last deadline)", label, r.sz.naiveWait)
		if naive, err = r.naiveLateness(ctx, pending, due, spread, false); err != nil {
			return fmt.Errorf("%s, naive: %w", label, err)
		}
	}
	const base = " floor"
	allIn := svc.got == svc.want && svc.dups == 0
	r.t.add(row{stage, fmt.Sprintf("delivered once (%d due within 1s, REST watcher)", due) + beside, count(svc.got, svc.want),
		count(floor.got, floor.want) + base, ratio(float64(svc.got), float64(floor.got)), "all, once", yesNo(allIn)})
	lat := func(what string, a, b time.Duration, goal string, met bool) {
		r.t.add(row{stage, what + beside, svc.fmt(a), floor.fmt(b) + base, latRatio(a, svc.waited, b, floor.waited), goal, ""})
		if goal != "" {
			r.t.rows[len(r.t.rows)-1].Met = yesNo(met)
		}
	}
	lat("lateness p50", svc.late.P50, floor.late.P50, "", false)
	within := func(k time.Duration) bool {
		return allIn && floor.late.P99 != never && svc.late.P99 != never && svc.late.P99 <= k*floor.late.P99
	}
	lat("lateness p99", svc.late.P99, floor.late.P99, "≤ 10× floor", within(10))
	lat("lateness p99, the aim", svc.late.P99, floor.late.P99, "≤ 3× floor", within(3))
	lat("lateness max", svc.late.Max, floor.late.Max, "", false)
	perOrder := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(due) }
	r.t.add(row{stage, "Redis CPU per expired order" + beside, fmt.Sprintf("%.1f µs", perOrder(svc.redisCPU)),
		fmt.Sprintf("%.1f µs", perOrder(floor.redisCPU)) + base, ratio(perOrder(svc.redisCPU), perOrder(floor.redisCPU)), "report", ""})
	if r.cfg.Naive {
		r.t.add(row{stage, "lateness p99, against the bare keyspace event" + beside, svc.fmt(svc.late.P99), naive.fmt(naive.late.P99) + " naive",
			latRatio(svc.late.P99, svc.waited, naive.late.P99, naive.waited), "", ""})
	}
	r.t.note("%s: service claim lateness (expired_at - deadline) p50 %s, p99 %s, max %s; %d duplicate events, %d watch reconnects (last error: %v)",
		tag, svc.fmt(svc.claim.P50), svc.fmt(svc.claim.P99), svc.fmt(svc.claim.Max), svc.dups, svc.reconnects, svc.lastErr)
	r.t.note("%s: floor: %d of %d events, the last %s after the last deadline, %d duplicates; Redis CPU %s from the first deadline until the last event (service's Redis: %s)",
		tag, floor.got, floor.want, ms(floor.waited), floor.dups, ms(floor.redisCPU), ms(svc.redisCPU))
	if r.cfg.Naive {
		r.t.note("%s: naive baseline waited %s after the last deadline; %d of %d expired events arrived", tag, naive.waited.Round(100*time.Millisecond), naive.got, naive.want)
	}
	return nil
}

// lateWorkload is one lateness workload through the service.
type lateWorkload struct {
	tag        string // begins its notes: "1a", "1b", "1b beside 20000 pending"
	profile    string // names the service's CPU profile, when profiles are asked for
	background int    // orders pending throughout, not due (ttl 1 h), checked out first
	due        int    // orders due within spread
	spread     time.Duration
	rest       bool // the watcher follows over REST rather than gRPC
	// batch checks the background out through BatchCheckout, as the
	// capacity stage loads its pending orders, rather than one Checkout
	// each, so that a million pending orders take a fraction of the time.
	// The due orders' lead is then planned from a calibration of single
	// checkouts, as they go in one Checkout each.
	batch bool
}

// serviceLateness measures one lateness workload through the service: the
// background orders and then the due ones are checked out over gRPC by
// concurrent callers, while one watcher follows WatchExpirations, over
// gRPC or, with rest, over REST.
func (r *runner) serviceLateness(ctx context.Context, lw lateWorkload) (lateResult, error) {
	background, due, spread := lw.background, lw.due, lw.spread
	env, err := r.startEnv()
	if err != nil {
		return lateResult{}, err
	}
	defer env.stop()
	bgID := func(i int) string { return "bg-" + strconv.Itoa(i) }
	var rate float64
	switch {
	case background > 0 && lw.batch:
		var retried atomic.Int64
		cpu := env.cpu()
		took, err := batchLoad(ctx, env.clients, loadConns, background, bgID, fixed(time.Hour), &retried, nil)
		if err != nil {
			return lateResult{}, err
		}
		r.logf("  loaded %d pending orders (ttl 1h) through gRPC BatchCheckout in %s (%.0f/s)", background, took.Round(time.Millisecond), float64(background)/took.Seconds())
		r.t.note("%s: %d pending orders loaded through gRPC BatchCheckout (%d a call, %d callers) in %s, %.0f/s, %d items retried after UNAVAILABLE; %s",
			lw.tag, background, loadBatch, loadConns, took.Round(time.Millisecond), float64(background)/took.Seconds(), retried.Load(), env.cpuSince(cpu, 0))
	case background > 0:
		took, err := checkoutAll(ctx, env.clients, r.sz.callers, background, bgID, fixed(time.Hour))
		if err != nil {
			return lateResult{}, err
		}
		rate = float64(background) / took.Seconds()
		r.logf("  loaded %d pending orders (ttl 1h) through gRPC Checkout in %s (%.0f/s)", background, took.Round(time.Millisecond), rate)
	}
	if rate == 0 {
		if rate, err = r.calibrate(ctx, env, due); err != nil {
			return lateResult{}, err
		}
	}
	lead := checkoutLead(due, rate)

	const prefix = "due-"
	var w *watchGroup
	if lw.rest {
		w, err = startRESTWatcher(ctx, env.svc.HTTPAddr, prefix, due)
	} else {
		w, err = startWatchers(ctx, env.svc.GRPCAddr, 1, prefix, due)
	}
	if err != nil {
		return lateResult{}, err
	}
	start := time.Now().Add(lead)
	last := start.Add(spread)
	r.logf("  checking out %d orders due from %s to %s", due, lead.Round(time.Millisecond), (lead + spread).Round(time.Millisecond))
	took, err := checkoutAll(ctx, env.clients, r.sz.callers, due, func(i int) string { return prefix + strconv.Itoa(i) }, until(start, spread, due))
	if err != nil {
		w.stop()
		return lateResult{}, err
	}
	r.logf("  checked out in %s; waiting for the events", took.Round(time.Millisecond))
	prof := r.profile(env.svc, lw.profile, start.Add(-100*time.Millisecond))
	rdb := env.redis.Client()
	defer rdb.Close()
	time.Sleep(time.Until(start))
	cpu, stats, rcpu := env.cpu(), readRedisStats(ctx, rdb), redisCPU(ctx, rdb)
	w.wait(last.Add(r.sz.svcWait))
	waited := time.Since(last)
	rcpu = redisCPU(ctx, rdb) - rcpu
	r.logf("  %s", env.cpuSince(cpu, 0))
	r.t.note("%s: %s", lw.tag, readRedisStats(ctx, rdb).since(stats))
	r.t.note("%s: from the first deadline until the last event: %s", lw.tag, env.cpuSince(cpu, 0))
	w.stop()
	prof.wait()
	res := watchResult(w.ws)
	res.waited, res.redisCPU = waited, rcpu
	if r.cfg.EventsDir != "" {
		path := filepath.Join(r.cfg.EventsDir, lw.profile+".tsv")
		if err := writeEvents(path, w.ws); err != nil {
			return lateResult{}, err
		}
		r.logf("  each order's lateness: %s", path)
	}
	return res, nil
}

// writeEvents writes what the watchers recorded, one tracked order a line
// in the order of i ("<prefix><i>"), which is the order of their deadlines:
// i, expired_at - deadline and receive - deadline in µs, tab-separated,
// under a header line. A run's lateness can so be followed through the
// burst: whether the claims fell behind from the start or at one moment,
// and how far the delivery trailed them.
func writeEvents(path string, ws []*watcher) error {
	type line struct {
		i           int
		claim, late time.Duration
	}
	var lines []line
	for _, w := range ws {
		for k, i := range w.index {
			lines = append(lines, line{i, w.claim[k], w.late[k]})
		}
	}
	slices.SortStableFunc(lines, func(a, b line) int { return cmp.Compare(a.i, b.i) })
	b := []byte("order\tclaim_us\tlate_us\n")
	for _, l := range lines {
		b = fmt.Appendf(b, "%d\t%d\t%d\n", l.i, l.claim.Microseconds(), l.late.Microseconds())
	}
	return os.WriteFile(path, b, 0o644)
}

// calibrate times a sample of checkouts (cancelled again) on a fresh
// service, to plan how long checking out `due` orders will take, and
// returns their rate per second.
func (r *runner) calibrate(ctx context.Context, env *env, due int) (float64, error) {
	n := min(max(due/20, 500), 5000)
	took, err := checkoutAll(ctx, env.clients, r.sz.callers, n, func(i int) string { return "cal-" + strconv.Itoa(i) }, fixed(time.Hour))
	if err == nil {
		_, err = callAll(ctx, r.sz.callers, n, func(ctx context.Context, i int) error {
			_, err := env.clients[i%len(env.clients)].CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: "cal-" + strconv.Itoa(i)})
			return err
		})
	}
	if err != nil {
		return 0, err
	}
	rate := float64(n) / took.Seconds()
	r.logf("  calibration: %d checkouts in %s (%.0f/s), cancelled again", n, took.Round(time.Millisecond), rate)
	return rate, nil
}

// checkoutLead is how long before the first deadline the checkout of `due`
// orders at `rate` per second should begin: every due order must be checked
// out before the first deadline, with a margin for a slower machine.
func checkoutLead(due int, rate float64) time.Duration {
	return max(2*time.Second, time.Duration(1.6*float64(due)/rate*float64(time.Second))+time.Second)
}

// watchResult merges what watchers recorded.
func watchResult(ws []*watcher) lateResult { return watchResultOf(ws, func(int) bool { return true }) }

// watchResultOf is watchResult over the tracked orders i for which keep(i)
// holds; the duplicates and reconnects are the watchers' whole.
func watchResultOf(ws []*watcher, keep func(i int) bool) lateResult {
	var res lateResult
	var late, claim []time.Duration
	for _, w := range ws {
		res.dups += w.dups
		res.reconnects += w.reconnects
		if w.lastErr != nil {
			res.lastErr = w.lastErr
		}
		for i := range w.n {
			if !keep(i) {
				continue
			}
			res.want++
			if !w.seen[i] {
				late = append(late, never)
				claim = append(claim, never)
			}
		}
		for j, i := range w.index {
			if keep(i) {
				res.got++
				late = append(late, w.late[j])
				claim = append(claim, w.claim[j])
			}
		}
	}
	res.late, res.claim = summarize(late), summarize(claim)
	return res
}

func fixed(d time.Duration) func(int) time.Duration { return func(int) time.Duration { return d } }

// naiveLateness measures the same workload with the naive recipe on a fresh
// redis-server: SET order:<id> 1 PX <ttl>, loaded with pipelining, and a
// subscriber on __keyevent@0__:expired (notify-keyspace-events Ex). Each
// key's deadline is read back with PEXPIRETIME, so it is Redis's own. With
// touch, it measures the floor instead: a client also reads (EXISTS) every
// key whose deadline has passed, each millisecond, which makes Redis expire
// it and publish its event at once; the least Redis can do per expiry.
func (r *runner) naiveLateness(ctx context.Context, background, due int, spread time.Duration, touch bool) (lateResult, error) {
	rd, err := startRedis(r.dir)
	if err != nil {
		return lateResult{}, err
	}
	defer rd.Stop()
	rdb := rd.Client()
	defer rdb.Close()
	if err := rdb.ConfigSet(ctx, "notify-keyspace-events", "Ex").Err(); err != nil {
		return lateResult{}, err
	}
	const prefix = "order:due-"
	ev, err := subscribeExpired(ctx, rdb, prefix, due)
	if err != nil {
		return lateResult{}, err
	}
	defer ev.stop()

	memBefore, err := usedMemory(ctx, rdb)
	if err != nil {
		return lateResult{}, err
	}
	t0 := time.Now()
	if err := pipeSet(ctx, rdb, background, func(i int) string { return "order:bg-" + strconv.Itoa(i) },
		func(int) []any { return []any{"PX", time.Hour.Milliseconds()} }); err != nil {
		return lateResult{}, err
	}
	var perKey float64
	if background > 0 {
		r.logf("  loaded %d keys (PX 1h) with pipelining in %s", background, time.Since(t0).Round(time.Millisecond))
		memAfter, err := usedMemory(ctx, rdb)
		if err != nil {
			return lateResult{}, err
		}
		perKey = float64(memAfter-memBefore) / float64(background)
	}
	lead := 2*time.Second + time.Duration(due)*20*time.Microsecond
	start := time.Now().Add(lead)
	// The ttl is read as each key is set: a key whose deadline has passed
	// gets PX 0 or less, which Redis refuses, failing the load.
	ttl := until(start, spread, due)
	if err := pipeSet(ctx, rdb, due, func(i int) string { return prefix + strconv.Itoa(i) },
		func(i int) []any { return []any{"PX", ttl(i).Milliseconds()} }); err != nil {
		return lateResult{}, err
	}
	deadlines := make([]time.Time, due)
	for lo := 0; lo < due; lo += 1000 {
		pipe := rdb.Pipeline()
		cmds := make([]*redis.Cmd, 0, 1000)
		for i := lo; i < min(lo+1000, due); i++ {
			cmds = append(cmds, pipe.Do(ctx, "PEXPIRETIME", prefix+strconv.Itoa(i)))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return lateResult{}, err
		}
		for j, c := range cmds {
			v, err := c.Int64()
			if err != nil || v < 0 {
				return lateResult{}, fmt.Errorf("PEXPIRETIME of due key %d: %v %v (expired before it could be read?)", lo+j, v, err)
			}
			deadlines[lo+j] = time.UnixMilli(v)
		}
	}
	lastDeadline := deadlines[0]
	for _, d := range deadlines {
		if d.After(lastDeadline) {
			lastDeadline = d
		}
	}
	rcpu := redisCPU(ctx, rdb)
	stopTouch := func() error { return nil }
	if touch {
		stopTouch = touchKeys(ctx, rd.Client(), prefix, deadlines)
		defer stopTouch()
	}
	bound := lastDeadline.Add(r.sz.naiveWait)
	select {
	case <-ev.all:
	case <-time.After(time.Until(bound)):
	case <-ctx.Done():
		return lateResult{}, ctx.Err()
	}
	waited := time.Since(lastDeadline)
	rcpu = redisCPU(ctx, rdb) - rcpu
	ev.stop()
	if err := stopTouch(); err != nil {
		return lateResult{}, fmt.Errorf("reading the due keys: %w", err)
	}
	late := make([]time.Duration, due)
	got := 0
	for i, t := range ev.recv {
		late[i] = never
		if !t.IsZero() {
			late[i] = t.Sub(deadlines[i])
			got++
		}
	}
	return lateResult{want: due, got: got, dups: int(ev.dups.Load()), late: summarize(late), waited: waited, perKey: perKey, redisCPU: rcpu}, nil
}

// touchKeys runs touchDue over the keys "<prefix><i>" with their
// deadlines, in deadline order, until every key was found gone or the
// returned stop is called, which returns touchDue's error (a floor whose
// keys were not read is no floor); it closes rdb when it ends.
func touchKeys(ctx context.Context, rdb *redis.Client, prefix string, deadlines []time.Time) (stop func() error) {
	byDeadline := make([]int, len(deadlines))
	for i := range byDeadline {
		byDeadline[i] = i
	}
	slices.SortFunc(byDeadline, func(a, b int) int { return deadlines[a].Compare(deadlines[b]) })
	ms := make([]int64, len(deadlines))
	for j, i := range byDeadline {
		ms[j] = deadlines[i].UnixMilli()
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var err error
	wg.Go(func() {
		defer rdb.Close()
		err = touchDue(ctx, rdb, func(j int) string { return prefix + strconv.Itoa(byDeadline[j]) }, ms)
	})
	return func() error { cancel(); wg.Wait(); return err }
}
