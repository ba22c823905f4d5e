package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

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
	rdb := e.redis.Client()
	defer rdb.Close()
	// The loading callers get connections of their own, so that one HTTP/2
	// connection does not bound the load.
	const loadConns = 4
	conns, clients, err := dial(e.svc.GRPCAddr, loadConns)
	if err != nil {
		return lateResult{}, 0, err
	}
	defer closeAll(conns)
	callers := 4 * r.sz.callers

	// A warm-up past Redis's small encodings and the first script loads, as
	// in stage 3.
	if _, err := checkoutAll(ctx, clients, callers, 500, func(i int) string { return "sw-" + strconv.Itoa(i) }, fixed(2*time.Hour)); err != nil {
		return lateResult{}, 0, err
	}
	before, err := usedMemory(ctx, rdb)
	if err != nil {
		return lateResult{}, 0, err
	}
	r.logf("  loading %d pending orders (ttl 2h) through gRPC BatchCheckout, %d a call: %d callers over %d connections", pending, loadBatch, loadConns, loadConns)
	cpu := e.cpu()
	var retried atomic.Int64
	took, err := batchLoad(ctx, clients, loadConns, pending, func(i int) string { return "sp-" + strconv.Itoa(i) }, 2*time.Hour, &retried)
	if err != nil {
		return lateResult{}, 0, err
	}
	r.t.note("5: %d pending orders loaded through gRPC BatchCheckout (%d a call, %d callers over %d connections) in %s, %.0f/s; %s",
		pending, loadBatch, loadConns, loadConns, took.Round(time.Millisecond), float64(pending)/took.Seconds(), e.cpuSince(cpu, 0))
	r.logf("  loaded in %s (%.0f/s)", took.Round(time.Millisecond), float64(pending)/took.Seconds())
	after, err := usedMemory(ctx, rdb)
	if err != nil {
		return lateResult{}, 0, err
	}
	perOrder := float64(after-before) / float64(pending)
	r.t.note("5: Redis used_memory %d → %d B over the %d pending orders", before, after, pending)
	// The due orders' lead is planned from the rate of single checkouts,
	// measured here on 2,000 more (after the memory was read).
	warm := time.Now()
	if _, err := checkoutAll(ctx, clients, callers, 2000, func(i int) string { return "sw2-" + strconv.Itoa(i) }, fixed(2*time.Hour)); err != nil {
		return lateResult{}, 0, err
	}
	loadRate := 2000 / time.Since(warm).Seconds()

	const prefix = "sd-"
	w, err := startWatchers(ctx, e.svc.GRPCAddr, 1, prefix, due)
	if err != nil {
		return lateResult{}, 0, err
	}
	defer w.stop()
	lead := checkoutLead(due, loadRate)
	start := time.Now().Add(lead)
	last := start.Add(r.sz.scaleFor)
	r.logf("  checking out %d orders due from %s to %s", due, lead.Round(time.Millisecond), (lead + r.sz.scaleFor).Round(time.Millisecond))
	took, err = loadOrders(ctx, clients, callers, due, func(i int) string { return prefix + strconv.Itoa(i) }, until(start, r.sz.scaleFor, due), &retried)
	if err != nil {
		return lateResult{}, 0, err
	}
	r.t.note("5: loading the pending and the due orders, %d checkouts answered UNAVAILABLE were retried", retried.Load())
	gap := time.Until(start)
	r.logf("  checked out in %s, %s before the first deadline; waiting for the events", took.Round(time.Millisecond), gap.Round(time.Millisecond))
	r.t.note("5: the %d due orders were checked out in %s, the last %s before the first deadline", due, took.Round(time.Millisecond), gap.Round(time.Millisecond))
	prof := r.profile(e.svc, "scale", start.Add(-100*time.Millisecond))
	time.Sleep(time.Until(start))
	cpu, stats := e.cpu(), readRedisStats(ctx, rdb)
	w.wait(last.Add(r.sz.svcWait))
	waited := time.Since(last)
	if err := e.exited(); err != nil {
		return lateResult{}, 0, err
	}
	use := e.cpuUsed(cpu, 0)
	r.logf("  %s", use)
	r.t.note("5: %s", readRedisStats(ctx, rdb).since(stats))
	r.t.note("5: from the first deadline until the last event: %s", use)
	if n, err := rdb.DBSize(ctx).Result(); err == nil {
		r.t.note("5: Redis held %d keys after the run (the %d pending orders stay pending: ttl 2 h)", n, pending)
	}
	w.stop()
	prof.wait()
	res := watchResult(w.ws)
	res.waited = waited
	r.logf("  delivered %d/%d, p50 %s, p99 %s, max %s", res.got, res.want, res.fmt(res.late.P50), res.fmt(res.late.P99), res.fmt(res.late.Max))
	return res, perOrder, nil
}

// loadBatch is the number of orders in each BatchCheckout of batchLoad.
const loadBatch = 500

// batchLoad checks out orders id(0)…id(n-1), each with the given ttl, in
// BatchCheckout calls of loadBatch orders from callers goroutines. Items
// answered UNAVAILABLE are sent again, as in loadOrders, and counted in
// retried; an item that finds its order pending on a retry counts as done.
func batchLoad(ctx context.Context, clients []pb.OrderServiceClient, callers, n int, id func(int) string, ttl time.Duration, retried *atomic.Int64) (time.Duration, error) {
	batches := (n + loadBatch - 1) / loadBatch
	return callAll(ctx, callers, batches, func(ctx context.Context, b int) error {
		var ids []string
		for i := b * loadBatch; i < min(n, (b+1)*loadBatch); i++ {
			ids = append(ids, id(i))
		}
		for attempt := range loadRetries {
			if attempt > 0 {
				retried.Add(int64(len(ids)))
				if !backoff.Sleep(ctx, loadBackoff.Delay(attempt-1)) {
					return ctx.Err()
				}
			}
			req := &pb.BatchCheckoutRequest{Requests: make([]*pb.CheckoutRequest, len(ids))}
			for i, oid := range ids {
				req.Requests[i] = &pb.CheckoutRequest{OrderId: oid, Ttl: durationpb.New(ttl)}
			}
			resp, err := clients[b%len(clients)].BatchCheckout(ctx, req)
			if status.Code(err) == codes.Unavailable {
				continue
			}
			if err != nil {
				return fmt.Errorf("batch checkout of %s…: %w", ids[0], err)
			}
			var again []string
			for i, res := range resp.GetResults() {
				switch {
				case status.Code(status.FromProto(res.GetError()).Err()) == codes.Unavailable:
					again = append(again, ids[i])
				case res.GetError() != nil:
					return fmt.Errorf("checkout %s: %v", ids[i], status.FromProto(res.GetError()).Err())
				case !res.GetCheckout().GetCreated() && attempt == 0:
					return fmt.Errorf("checkout %s: the order already existed", ids[i])
				}
			}
			if len(again) == 0 {
				return nil
			}
			ids = again
		}
		return fmt.Errorf("batch checkout of %s…: %d items still unavailable after %d attempts", ids[0], len(ids), loadRetries)
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
