package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// capGoal is the p99 lateness a rate must hold to count as sustained.
const capGoal = 50 * time.Millisecond

// capPlot is where the capacity stage draws its curve, from the directory
// make bench runs in (the module's root).
var capPlot = filepath.Join("bin", "bench", "capacity.svg")

// capStep is what one step of a capacity curve measured.
type capStep struct {
	rate int
	res  lateResult
	// redisCPU is every redis-server's CPU from the first deadline until the
	// last event (or the bound), divided by the step's orders.
	redisCPU time.Duration
	cpu      string // the processes' CPU over the step's window
	stats    string // the masters' busiest commands over the window
	took     time.Duration
	gap      time.Duration
}

// held says whether the step meets the goal: every event delivered once,
// p99 lateness within capGoal.
func (s capStep) held() bool {
	return s.res.got == s.res.want && s.res.dups == 0 && s.res.late.P99 <= capGoal
}

// capCurve is one store's steps and what they came to.
type capCurve struct {
	store string
	steps []capStep
}

// sustained is the highest rate of the steps before the first that broke
// the goal (0 when the first broke it), and whether every step held.
func (c capCurve) sustained() (rate int, all bool) {
	for _, s := range c.steps {
		if !s.held() {
			return rate, false
		}
		rate = s.rate
	}
	return rate, true
}

// capacity runs the capacity stage: the sustained expiry rate the service
// holds with p99 lateness within capGoal beside capPending pending orders,
// on one redis-server and then on a Redis Cluster of 3 masters and 3
// replicas. Each store is loaded once; then the rates of capRates expire
// for capFor each, one step after the other, until a step breaks the goal.
// The floor, on a fresh redis-server of its own, is Redis itself at the
// same rates: its keys expire and publish their keyspace events as a client
// reads each within a millisecond of its deadline (see floorCurve). The
// stage writes the curves as a plot, capPlot.
func (r *runner) capacity(ctx context.Context) error {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		return fmt.Errorf("redis-cli is needed to create the cluster (apt-get install redis-tools): %w", err)
	}
	pending, dur := r.sz.capPending, r.sz.capFor
	r.logf("capacity: rates %v a second for %s each, beside %d pending orders, until p99 lateness passes %s", r.sz.capRates, dur, pending, ms(capGoal))

	var curves []capCurve
	var errs []error
	for _, store := range []struct {
		name, tag string // tag names its CPU profiles
		start     func(ctx context.Context) (*loadedStore, func(), error)
	}{{"1 Redis", "one", r.capacityOne}, {"cluster 3+3", "cluster", r.capacityCluster}} {
		r.logf("capacity: the service on %s", store.name)
		c, err := r.capacityCurve(ctx, store.name, store.tag, store.start, pending)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, fmt.Errorf("%s: %w", store.name, err))
			r.logf("  %s: %v", store.name, err)
		}
		curves = append(curves, c)
	}
	// The floor runs at every rate a store ran.
	var rates []int
	for _, c := range curves {
		for _, s := range c.steps {
			if !slices.Contains(rates, s.rate) {
				rates = append(rates, s.rate)
			}
		}
	}
	slices.Sort(rates)
	r.logf("capacity: the floor, Redis with a client reading each due key at its deadline, at %v a second", rates)
	floor, err := r.floorCurve(ctx, pending, rates, dur)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, fmt.Errorf("floor: %w", err))
		r.logf("  floor: %v", err)
	}

	r.capacityRows(curves, floor, pending, dur)
	plotted := append(slices.Clone(curves), floor)
	if err := writeCapacityPlot(capPlot, plotted, capGoal); err != nil {
		errs = append(errs, fmt.Errorf("the plot: %w", err))
	} else {
		abs, _ := filepath.Abs(capPlot)
		r.logf("capacity: plot written to %s", abs)
		r.t.note("capacity: the plot of lateness p50 and p99 against the rate is %s", capPlot)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}

// capacityRows adds each step's rows and each store's sustained rate to
// the table.
func (r *runner) capacityRows(curves []capCurve, floor capCurve, pending int, dur time.Duration) {
	floorAt := func(rate int) (capStep, bool) {
		for _, s := range floor.steps {
			if s.rate == rate {
				return s, true
			}
		}
		return capStep{}, false
	}
	const stage = "capacity"
	var oneRate int
	for ci, c := range curves {
		for _, s := range c.steps {
			f, ok := floorAt(s.rate)
			base := func(v string) string {
				if !ok {
					return "-"
				}
				return v
			}
			lat := func(v, b time.Duration) (string, string, string) {
				if !ok {
					return s.res.fmt(v), "-", "-"
				}
				return s.res.fmt(v), f.res.fmt(b), latRatio(v, s.res.waited, b, f.res.waited)
			}
			at := fmt.Sprintf("%s %d/s: ", c.store, s.rate)
			once := s.res.got == s.res.want && s.res.dups == 0
			r.t.add(row{stage, at + fmt.Sprintf("delivered once (%d due over %s)", s.res.want, dur), count(s.res.got, s.res.want),
				base(count(f.res.got, f.res.want)), base(ratio(float64(s.res.got), float64(f.res.got))), "all, once", yesNo(once)})
			v, b, rt := lat(s.res.late.P50, f.res.late.P50)
			r.t.add(row{stage, at + "lateness p50", v, b, rt, "", ""})
			v, b, rt = lat(s.res.late.P99, f.res.late.P99)
			r.t.add(row{stage, at + "lateness p99", v, b, rt, "≤ " + ms(capGoal), yesNo(s.held())})
			r.t.add(row{stage, at + "Redis CPU per expired order", micros(s.redisCPU), base(micros(f.redisCPU)),
				base(ratio(float64(s.redisCPU), float64(f.redisCPU))), "", ""})
			r.t.note("capacity: %s %d/s: %d orders checked out in %s (BatchCheckout), the last %s before the first deadline; claim lateness (expired_at - deadline) p50 %s, p99 %s, max %s; lateness max %s; %d duplicate events, %d watch reconnects (last error: %v)",
				c.store, s.rate, s.res.want, s.took.Round(time.Millisecond), s.gap.Round(time.Millisecond),
				s.res.fmt(s.res.claim.P50), s.res.fmt(s.res.claim.P99), s.res.fmt(s.res.claim.Max), s.res.fmt(s.res.late.Max), s.res.dups, s.res.reconnects, s.res.lastErr)
			if s.gap < 0 {
				r.t.note("capacity: %s %d/s: the checkouts went on %s past the first deadline (the load was slower than planned), into the step's expirations", c.store, s.rate, (-s.gap).Round(time.Millisecond))
			}
			r.t.note("capacity: %s %d/s, from the first deadline until the last event: %s", c.store, s.rate, s.cpu)
			r.t.note("capacity: %s %d/s: %s", c.store, s.rate, s.stats)
		}
		rate, all := c.sustained()
		text := fmt.Sprintf("%d/s", rate)
		switch {
		case len(c.steps) == 0:
			text = "-"
		case all:
			text = fmt.Sprintf("≥ %d/s (every step held)", rate)
		case rate == 0:
			text = fmt.Sprintf("< %d/s (the first step broke)", c.steps[0].rate)
		}
		baseText, rt := "-", "-"
		if ci == 0 {
			oneRate = rate
		} else {
			baseText = fmt.Sprintf("%d/s 1 Redis", oneRate)
			if rate > 0 {
				rt = ratio(float64(rate), float64(oneRate))
			}
		}
		r.t.add(row{stage, fmt.Sprintf("%s: sustained expiry rate, beside %d pending", c.store, pending), text, baseText, rt,
			"p99 ≤ " + ms(capGoal) + ", all once", "report"})
	}
	for _, s := range floor.steps {
		r.t.note("capacity: floor %d/s: %d of %d keyspace events, %d twice; lateness p50 %s, p99 %s, max %s; Redis CPU %s per expired key; %s",
			s.rate, s.res.got, s.res.want, s.res.dups, s.res.fmt(s.res.late.P50), s.res.fmt(s.res.late.P99), s.res.fmt(s.res.late.Max), micros(s.redisCPU), s.cpu)
	}
}

// capacityCurve loads a store with `pending` orders and steps the rate up
// on it until a step breaks the goal. The steps it ran are returned with
// any error.
func (r *runner) capacityCurve(ctx context.Context, store, tag string, start func(context.Context) (*loadedStore, func(), error), pending int) (capCurve, error) {
	c := capCurve{store: store}
	st, stop, err := start(ctx)
	if err != nil {
		return c, err
	}
	defer stop()
	st.existed = new(atomic.Int64)
	perOrder, err := st.loadPending(ctx, pending)
	if err != nil {
		return c, err
	}
	r.t.note("capacity: %s: %d pending orders loaded through gRPC BatchCheckout in %s, %.0f/s, %.0f B of used_memory each; %s",
		store, pending, st.loadTook.Round(time.Millisecond), st.batchRate, perOrder, st.loadCPU)
	// The lead of a step's checkouts is planned from half the pending
	// orders' rate at first and then from the slowest load of a step so far
	// (orders with deadlines spread over the step went in at less than half
	// that rate in a run on a busy machine).
	loadRate := st.batchRate / 2
	for k, rate := range r.sz.capRates {
		r.logf("  %s: %d/s for %s", store, rate, r.sz.capFor)
		x, err := st.expire(ctx, expiry{prefix: fmt.Sprintf("cap%d-", k), rate: rate, dur: r.sz.capFor, loadRate: loadRate, batch: true,
			profile: fmt.Sprintf("capacity-%s-%d", tag, rate)})
		if err != nil {
			return c, fmt.Errorf("%d/s: %w", rate, err)
		}
		loadRate = min(loadRate, float64(x.want)/x.took.Seconds())
		s := capStep{rate: rate, res: x.lateResult, cpu: x.cpu, stats: x.stats, took: x.took, gap: x.gap}
		if x.want > 0 {
			s.redisCPU = x.redisCPU / time.Duration(x.want)
		}
		c.steps = append(c.steps, s)
		r.logf("  %s %d/s: delivered %d/%d (%d twice), p50 %s, p99 %s; Redis CPU %s an order", store, rate, x.got, x.want, x.dups,
			x.fmt(x.late.P50), x.fmt(x.late.P99), micros(s.redisCPU))
		if !s.held() {
			break
		}
	}
	if st.retried.Load() > 0 {
		r.t.note("capacity: %s: %d checkouts answered UNAVAILABLE were retried", store, st.retried.Load())
	}
	if n := st.existed.Load(); n > 0 {
		r.t.note("capacity: %s: %d new orders were answered \"already pending\" (created false) on their first BatchCheckout attempt, though no order had their ids before", store, n)
	}
	return c, nil
}

// capacityOne starts the service on a fresh redis-server.
func (r *runner) capacityOne(ctx context.Context) (*loadedStore, func(), error) {
	e, err := r.startEnv()
	if err != nil {
		return nil, nil, err
	}
	st, err := r.newLoadedStore(ctx, e, cpuSet{svc: e.svc.PID(), masters: []int{e.redis.PID()}}, []string{e.redis.Addr})
	if err != nil {
		e.stop()
		return nil, nil, err
	}
	return st, func() { st.close(); e.stop() }, nil
}

// capacityCluster starts the service on a fresh Redis Cluster of
// clusterMasters masters with a replica each, as stage 6 does.
func (r *runner) capacityCluster(ctx context.Context) (*loadedStore, func(), error) {
	began := time.Now()
	c, err := redistest.LaunchCluster(ctx, r.dir, clusterMasters, 1)
	if err != nil {
		return nil, nil, err
	}
	r.logf("  cluster of %d nodes up and settled in %s", len(c.Nodes), time.Since(began).Round(time.Millisecond))
	masters, err := c.MastersContext(ctx)
	if err != nil {
		c.Kill()
		return nil, nil, err
	}
	e, err := r.startClusterEnv(c)
	if err != nil {
		c.Kill()
		return nil, nil, err
	}
	e.warn = func() {
		if w := e.svc.Warnings(); len(w) > 0 {
			r.logf("  the service on the cluster logged %d warnings; the first:\n%s", len(w), indent(w[0], "    "))
			r.t.note("capacity: the service on the cluster logged %d warnings, the first: %s", len(w), w[0])
		}
	}
	procs := cpuSet{svc: e.svc.PID()}
	var addrs []string
	for _, n := range c.Nodes {
		if slices.Contains(masters, n) {
			procs.masters = append(procs.masters, n.PID())
			addrs = append(addrs, n.Addr)
		} else {
			procs.replicas = append(procs.replicas, n.PID())
		}
	}
	st, err := r.newLoadedStore(ctx, e, procs, addrs)
	if err != nil {
		e.stop()
		c.Kill()
		return nil, nil, err
	}
	// The service stops before its Redis.
	return st, func() { st.close(); e.stop(); c.Kill() }, nil
}

// micros formats a CPU time per order in microseconds.
func micros(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f µs", float64(d)/1e3)
}
