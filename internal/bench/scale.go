package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/backoff"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// scale runs stage 5, sustained scale: scalePending orders are checked out
// to stay pending (ttl 2 h), then scaleRate orders a second expire for
// scaleFor while they are pending, through the service and, on another
// fresh redis-server, through the naive recipe with the same load. Every
// event must reach the watcher once, p99 lateness be at most 20 ms and Redis
// hold at most 300 B per pending order.
//
// The pending orders go in through the service, as a user's bulk import
// would: concurrent BatchCheckout calls of loadBatch orders each (a
// pipelined write straight into Redis would skip the work the service does
// per order). The due orders go in through Checkout, one call each.
func (r *runner) scale(ctx context.Context) error {
	pending, due := r.sz.scalePending, int(float64(r.sz.scaleRate)*r.sz.scaleFor.Seconds())
	label := fmt.Sprintf("5 scale: %d/s expire for %s (%d due) while %d other orders are pending", r.sz.scaleRate, r.sz.scaleFor, due, pending)
	r.logf("%s: the service", label)
	svc, perOrder, err := r.serviceScale(ctx, pending, due)
	if err != nil {
		return fmt.Errorf("%s, service: %w", label, err)
	}
	var naive lateResult
	if r.cfg.Naive {
		r.logf("%s: the naive recipe (waits up to %s after the last deadline)", label, r.sz.naiveWait)
		if naive, err = r.naiveLateness(ctx, pending, due, r.sz.scaleFor, false); err != nil {
			return fmt.Errorf("%s, naive: %w", label, err)
		}
	}
	base := func(s string) string {
		if !r.cfg.Naive {
			return "-"
		}
		return s
	}
	rat := func(a, b time.Duration) string {
		if !r.cfg.Naive {
			return "-"
		}
		return latRatio(a, svc.waited, b, naive.waited)
	}
	once := svc.got == svc.want && svc.dups == 0
	r.t.add(row{"5", fmt.Sprintf("delivered once (%d due over %s, %d pending)", due, r.sz.scaleFor, pending), count(svc.got, svc.want),
		base(count(naive.got, naive.want)), base(ratio(float64(svc.got), float64(naive.got))), "all, once", yesNo(once)})
	r.t.add(row{"5", "lateness p50", svc.fmt(svc.late.P50), base(naive.fmt(naive.late.P50)), rat(svc.late.P50, naive.late.P50), "", ""})
	r.t.add(row{"5", "lateness p99", svc.fmt(svc.late.P99), base(naive.fmt(naive.late.P99)), rat(svc.late.P99, naive.late.P99),
		"≤ 20.0 ms", yesNo(once && svc.late.P99 <= 20*time.Millisecond)})
	r.t.add(row{"5", "lateness max", svc.fmt(svc.late.Max), base(naive.fmt(naive.late.Max)), rat(svc.late.Max, naive.late.Max), "", ""})
	r.t.add(row{"5", fmt.Sprintf("Redis used_memory per pending order (%d)", pending), bytesPer(perOrder),
		base(bytesPer(naive.perKey) + " naive SET PX"), base(ratio(perOrder, naive.perKey)), "≤ 300 B", yesNo(perOrder > 0 && perOrder <= 300)})
	r.t.note("5: service claim lateness (expired_at - deadline) p50 %s, p99 %s, max %s; %d duplicate events, %d watch reconnects (last error: %v)",
		svc.fmt(svc.claim.P50), svc.fmt(svc.claim.P99), svc.fmt(svc.claim.Max), svc.dups, svc.reconnects, svc.lastErr)
	if r.cfg.Naive {
		r.t.note("5: naive baseline waited %s after the last deadline; %d of %d expired events arrived, %d twice (an event that did not arrive counts as later than that wait: \"> …\")",
			naive.waited.Round(100*time.Millisecond), naive.got, naive.want, naive.dups)
	}
	return nil
}

// serviceScale measures stage 5 through the service and returns the
// lateness of the due orders and Redis's used_memory growth per pending
// order.
func (r *runner) serviceScale(ctx context.Context, pending, due int) (lateResult, float64, error) {
	e, err := r.startEnv()
	if err != nil {
		return lateResult{}, 0, err
	}
	defer e.stop()
	st, err := r.newLoadedStore(ctx, e, cpuSet{svc: e.svc.PID(), masters: []int{e.redis.PID()}}, []string{e.redis.Addr})
	if err != nil {
		return lateResult{}, 0, err
	}
	defer st.close()
	perOrder, err := st.loadPending(ctx, pending)
	if err != nil {
		return lateResult{}, 0, err
	}
	r.t.note("5: %d pending orders loaded through gRPC BatchCheckout (%d a call, %d callers over %d connections) in %s, %.0f/s; %s",
		pending, loadBatch, loadConns, loadConns, st.loadTook.Round(time.Millisecond), st.batchRate, st.loadCPU)
	r.t.note("5: Redis used_memory %d → %d B over the %d pending orders", st.memBefore, st.memAfter, pending)
	// The due orders' lead is planned from the rate of single checkouts,
	// measured here on 2,000 more (after the memory was read).
	loadRate, err := st.checkoutRate(ctx)
	if err != nil {
		return lateResult{}, 0, err
	}
	x, err := st.expire(ctx, expiry{prefix: "sd-", rate: r.sz.scaleRate, dur: r.sz.scaleFor, loadRate: loadRate, profile: "scale"})
	if err != nil {
		return lateResult{}, 0, err
	}
	r.t.note("5: loading the pending and the due orders, %d checkouts answered UNAVAILABLE were retried", st.retried.Load())
	r.t.note("5: the %d due orders were checked out in %s, the last %s before the first deadline", due, x.took.Round(time.Millisecond), x.gap.Round(time.Millisecond))
	r.t.note("5: %s", x.stats)
	r.t.note("5: from the first deadline until the last event: %s", x.cpu)
	if n, err := st.rdbs[0].DBSize(ctx).Result(); err == nil {
		r.t.note("5: Redis held %d keys after the run (the %d pending orders stay pending: ttl 2 h)", n, pending)
	}
	r.logf("  delivered %d/%d, p50 %s, p99 %s, max %s", x.got, x.want, x.fmt(x.late.P50), x.fmt(x.late.P99), x.fmt(x.late.Max))
	return x.lateResult, perOrder, nil
}

// loadConns is how many connections of their own a loadedStore's loading
// callers get, so that one HTTP/2 connection does not bound the load.
const loadConns = 4

// loadedStore is a service on its store (one redis-server or a cluster)
// with connections of its own for loading orders into it: the machinery of
// the sustained-expiry workloads of stage 5 and of the capacity stage. The
// pending orders go in through BatchCheckout, as a user's bulk import
// would (a pipelined write straight into Redis would skip the work the
// service does per order).
type loadedStore struct {
	r       *runner
	e       *env
	procs   cpuSet          // the service's and the redis-servers' processes
	rdbs    []*redis.Client // the masters, for INFO
	conns   []*grpc.ClientConn
	clients []pb.OrderServiceClient
	callers int // concurrent single checkouts
	retried atomic.Int64
	// existed, when set, counts the BatchCheckout items answered "already
	// pending" on their first attempt instead of failing the load on them.
	existed *atomic.Int64

	// What loadPending measured.
	memBefore, memAfter int64
	loadTook            time.Duration
	batchRate           float64 // orders a second through BatchCheckout
	loadCPU             string
}

// newLoadedStore dials the loading connections to e's service, whose
// store's masters are at masterAddrs, and makes 500 warm-up checkouts past
// Redis's small encodings and the first script loads, as in stage 3.
func (r *runner) newLoadedStore(ctx context.Context, e *env, procs cpuSet, masterAddrs []string) (*loadedStore, error) {
	conns, clients, err := dial(e.svc.GRPCAddr, loadConns)
	if err != nil {
		return nil, err
	}
	st := &loadedStore{r: r, e: e, procs: procs, conns: conns, clients: clients, callers: 4 * r.sz.callers}
	for _, a := range masterAddrs {
		st.rdbs = append(st.rdbs, redis.NewClient(&redis.Options{Addr: a, ReadTimeout: 10 * time.Second}))
	}
	if _, err := checkoutAll(ctx, clients, st.callers, 500, func(i int) string { return "sw-" + strconv.Itoa(i) }, fixed(2*time.Hour)); err != nil {
		st.close()
		return nil, err
	}
	return st, nil
}

func (st *loadedStore) close() {
	closeAll(st.conns)
	for _, c := range st.rdbs {
		c.Close()
	}
}

// usedMemory is the masters' used_memory together.
func (st *loadedStore) usedMemory(ctx context.Context) (int64, error) {
	var sum int64
	for _, c := range st.rdbs {
		m, err := usedMemory(ctx, c)
		if err != nil {
			return 0, err
		}
		sum += m
	}
	return sum, nil
}

// redisStats is the masters' INFO commandstats and stats together.
func (st *loadedStore) redisStats(ctx context.Context) redisStats {
	sum := redisStats{calls: map[string]int64{}, usec: map[string]int64{}}
	for _, c := range st.rdbs {
		s := readRedisStats(ctx, c)
		for k, v := range s.calls {
			sum.calls[k] += v
		}
		for k, v := range s.usec {
			sum.usec[k] += v
		}
		sum.expiredKeys += s.expiredKeys
	}
	return sum
}

// loadPending checks out `pending` orders (ttl 2 h) through BatchCheckout
// and returns the masters' used_memory growth per order.
func (st *loadedStore) loadPending(ctx context.Context, pending int) (float64, error) {
	var err error
	if st.memBefore, err = st.usedMemory(ctx); err != nil {
		return 0, err
	}
	st.r.logf("  loading %d pending orders (ttl 2h) through gRPC BatchCheckout, %d a call: %d callers over %d connections", pending, loadBatch, loadConns, loadConns)
	cpu := st.procs.snap()
	st.loadTook, err = batchLoad(ctx, st.clients, loadConns, pending, func(i int) string { return "sp-" + strconv.Itoa(i) }, fixed(2*time.Hour), &st.retried, st.existed)
	if err != nil {
		return 0, err
	}
	st.loadCPU = st.procs.since(cpu)
	st.batchRate = float64(pending) / st.loadTook.Seconds()
	st.r.logf("  loaded in %s (%.0f/s)", st.loadTook.Round(time.Millisecond), st.batchRate)
	if st.memAfter, err = st.usedMemory(ctx); err != nil {
		return 0, err
	}
	return float64(st.memAfter-st.memBefore) / float64(pending), nil
}

// checkoutRate times 2,000 single checkouts (ttl 2 h, left pending) and
// returns their rate per second.
func (st *loadedStore) checkoutRate(ctx context.Context) (float64, error) {
	warm := time.Now()
	if _, err := checkoutAll(ctx, st.clients, st.callers, 2000, func(i int) string { return "sw2-" + strconv.Itoa(i) }, fixed(2*time.Hour)); err != nil {
		return 0, err
	}
	return 2000 / time.Since(warm).Seconds(), nil
}

// expiry is one sustained-expiry workload: rate orders a second due for
// dur, the first deadline after the last of them is checked out.
type expiry struct {
	prefix   string // the due orders are <prefix><i>
	rate     int
	dur      time.Duration
	loadRate float64 // orders a second the loading is expected to reach, to plan the lead
	batch    bool    // check them out with BatchCheckout rather than one Checkout each
	profile  string  // the name of the service's CPU profile, if profiles are asked for
}

// expiryResult is what an expiry measured: the due orders' events at one
// watcher, open before they were checked out, and what the processes spent
// from the first deadline until the last event.
type expiryResult struct {
	lateResult
	took, gap time.Duration // checking out the due orders; from the last checkout to the first deadline
	cpu       string        // the processes' CPU over the window
	redisCPU  time.Duration // every redis-server's CPU over the window
	stats     string        // the masters' busiest commands over the window
}

// expire runs one expiry workload on the store.
func (st *loadedStore) expire(ctx context.Context, x expiry) (expiryResult, error) {
	r, e := st.r, st.e
	due := int(float64(x.rate) * x.dur.Seconds())
	w, err := startWatchers(ctx, e.svc.GRPCAddr, 1, x.prefix, due)
	if err != nil {
		return expiryResult{}, err
	}
	defer w.stop()
	lead := checkoutLead(due, x.loadRate)
	start := time.Now().Add(lead)
	last := start.Add(x.dur)
	r.logf("  checking out %d orders due from %s to %s", due, lead.Round(time.Millisecond), (lead + x.dur).Round(time.Millisecond))
	id := func(i int) string { return x.prefix + strconv.Itoa(i) }
	var res expiryResult
	if x.batch {
		res.took, err = batchLoad(ctx, st.clients, loadConns, due, id, until(start, x.dur, due), &st.retried, st.existed)
	} else {
		res.took, err = loadOrders(ctx, st.clients, st.callers, due, id, until(start, x.dur, due), &st.retried)
	}
	if err != nil {
		return expiryResult{}, err
	}
	res.gap = time.Until(start)
	r.logf("  checked out in %s, %s before the first deadline; waiting for the events", res.took.Round(time.Millisecond), res.gap.Round(time.Millisecond))
	var prof *profiling
	if x.profile != "" {
		prof = r.profile(e.svc, x.profile, start.Add(-100*time.Millisecond))
	}
	time.Sleep(time.Until(start))
	cpu, stats := st.procs.snap(), st.redisStats(ctx)
	w.wait(last.Add(r.sz.svcWait))
	waited := time.Since(last)
	if err := e.exited(); err != nil {
		return expiryResult{}, err
	}
	now := st.procs.snap()
	res.redisCPU = now.masters + now.replicas - cpu.masters - cpu.replicas
	res.cpu = st.procs.since(cpu)
	r.logf("  %s", res.cpu)
	res.stats = st.redisStats(ctx).since(stats)
	w.stop() // the watcher's results may be read only once it has stopped
	prof.wait()
	res.lateResult = watchResult(w.ws)
	res.waited = waited
	return res, nil
}

// loadBatch is the number of orders in each BatchCheckout of batchLoad.
const loadBatch = 500

// batchLoad checks out orders id(0)…id(n-1), each with ttl(i), in
// BatchCheckout calls of loadBatch orders from callers goroutines; ttl(i)
// is asked as each call is made, as in checkoutAll. Items
// answered UNAVAILABLE are sent again, as in loadOrders, and counted in
// retried; an item that finds its order pending on a retry counts as done.
// An item answered "already pending" on its first attempt fails the load,
// unless existed is given: then it is counted there (the ids are new, so
// the count is of answers that cannot be right).
func batchLoad(ctx context.Context, clients []pb.OrderServiceClient, callers, n int, id func(int) string, ttl func(int) time.Duration, retried, existed *atomic.Int64) (time.Duration, error) {
	batches := (n + loadBatch - 1) / loadBatch
	return callAll(ctx, callers, batches, func(ctx context.Context, b int) error {
		var todo []int // the orders of this batch not yet checked out
		for i := b * loadBatch; i < min(n, (b+1)*loadBatch); i++ {
			todo = append(todo, i)
		}
		for attempt := range loadRetries {
			if attempt > 0 {
				retried.Add(int64(len(todo)))
				if !backoff.Sleep(ctx, loadBackoff.Delay(attempt-1)) {
					return ctx.Err()
				}
			}
			req := &pb.BatchCheckoutRequest{Requests: make([]*pb.CheckoutRequest, len(todo))}
			for j, i := range todo {
				d := ttl(i)
				if d < time.Millisecond {
					return fmt.Errorf("checkout %s: its deadline passed before it was checked out (the load was slower than planned)", id(i))
				}
				req.Requests[j] = &pb.CheckoutRequest{OrderId: id(i), Ttl: durationpb.New(d)}
			}
			resp, err := clients[b%len(clients)].BatchCheckout(ctx, req)
			if status.Code(err) == codes.Unavailable {
				continue
			}
			if err != nil {
				return fmt.Errorf("batch checkout of %s…: %w", id(todo[0]), err)
			}
			var again []int
			for j, res := range resp.GetResults() {
				switch {
				case status.Code(status.FromProto(res.GetError()).Err()) == codes.Unavailable:
					again = append(again, todo[j])
				case res.GetError() != nil:
					return fmt.Errorf("checkout %s: %v", id(todo[j]), status.FromProto(res.GetError()).Err())
				case !res.GetCheckout().GetCreated() && attempt == 0 && existed != nil:
					existed.Add(1)
				case !res.GetCheckout().GetCreated() && attempt == 0:
					return fmt.Errorf("checkout %s: the order already existed", id(todo[j]))
				}
			}
			if len(again) == 0 {
				return nil
			}
			todo = again
		}
		return fmt.Errorf("batch checkout of %s…: %d items still unavailable after %d attempts", id(todo[0]), len(todo), loadRetries)
	})
}

// loadRetries bounds the attempts of one checkout of loadOrders.
const loadRetries = 5

// loadBackoff paces those attempts: 100ms, 200ms, 400ms, 800ms.
var loadBackoff = backoff.Policy{First: 100 * time.Millisecond, Max: 800 * time.Millisecond}

// loadOrders checks out orders id(0)…id(n-1) as checkoutAll does, but as a
// client of a busy service would: a checkout answered UNAVAILABLE ("retry
// later": the service's Redis did not answer in time) is tried again, up to
// loadRetries times with a growing pause, and a retry that finds its order
// already pending counts as done, since the attempt before created it and
// only its answer was lost. Each retry is counted in retried.
func loadOrders(ctx context.Context, clients []pb.OrderServiceClient, callers, n int, id func(int) string, ttl func(int) time.Duration, retried *atomic.Int64) (time.Duration, error) {
	return callAll(ctx, callers, n, func(ctx context.Context, i int) error {
		var err error
		for attempt := range loadRetries {
			if attempt > 0 {
				retried.Add(1)
				if !backoff.Sleep(ctx, loadBackoff.Delay(attempt-1)) {
					return ctx.Err()
				}
			}
			d := ttl(i)
			if d < time.Millisecond {
				return fmt.Errorf("checkout %s: its deadline passed before it was checked out (the load was slower than planned)", id(i))
			}
			var resp *pb.CheckoutResponse
			resp, err = clients[i%len(clients)].Checkout(ctx, &pb.CheckoutRequest{OrderId: id(i), Ttl: durationpb.New(d)})
			switch {
			case status.Code(err) == codes.Unavailable:
				continue
			case err != nil:
				return fmt.Errorf("checkout %s: %w", id(i), err)
			case !resp.GetCreated() && attempt == 0:
				return fmt.Errorf("checkout %s: the order already existed", id(i))
			}
			return nil
		}
		return fmt.Errorf("checkout %s: %d attempts: %w", id(i), loadRetries, err)
	})
}
