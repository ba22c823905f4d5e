package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// Stage 8 loads BatchCheckout: batchCallers concurrent callers, each sending
// batches of batchItems new orders, beside redis-benchmark SET without
// pipelining on the same redis-server. A direct-to-Redis library enqueue
// reaches about half of that SET rate here, which is the goal.
const (
	batchCallers = 4
	batchItems   = 250
)

// batch runs stage 8 and adds its row to the table.
func (r *runner) batch(ctx context.Context) error {
	e, err := r.startEnv()
	if err != nil {
		return err
	}
	defer e.stop()
	rdb := e.redis.Client()
	defer rdb.Close()

	set, err := r.redisBenchmark(ctx, e, "set")
	if err != nil {
		return err
	}
	r.t.note("8: redis-benchmark SET: %s", set.cpu)

	var seq atomic.Int64
	ttl := durationpb.New(time.Hour)
	op := func(ctx context.Context, w int) error {
		req := &pb.BatchCheckoutRequest{Requests: make([]*pb.CheckoutRequest, batchItems)}
		for i := range req.Requests {
			req.Requests[i] = &pb.CheckoutRequest{OrderId: "bc-" + strconv.FormatInt(seq.Add(1), 10), Ttl: ttl}
		}
		resp, err := e.clients[w%len(e.clients)].BatchCheckout(ctx, req)
		if err != nil {
			return err
		}
		for _, res := range resp.GetResults() {
			if !res.GetCheckout().GetCreated() {
				return fmt.Errorf("batch item: %v, want a new order", res)
			}
		}
		return nil
	}
	stats := readRedisStats(ctx, rdb)
	r.logf("  BatchCheckout: %d callers of %d orders a call for %s (after %s of warm-up)", batchCallers, batchItems, r.sz.loadFor, r.sz.warmup)
	prof := r.profile(e.svc, "batch-BatchCheckout", time.Now().Add(r.sz.warmup))
	res := hammer(ctx, e, batchCallers, r.sz.warmup, r.sz.loadFor, op)
	prof.wait()
	orders := res.rate * batchItems
	r.logf("    %.0f orders/s (%.0f calls/s), p50 %s, p99 %s a call, %d errors; %s", orders, res.rate, ms(res.lat.P50), ms(res.lat.P99), res.errs, res.cpu)
	r.t.note("8: BatchCheckout: %d callers of %d orders a call: %s", batchCallers, batchItems, res.cpu)
	r.t.note("8: BatchCheckout: %s", readRedisStats(ctx, rdb).since(stats))
	if res.errs > 0 {
		r.t.note("8: BatchCheckout had %d failed calls, the first: %v", res.errs, res.firstErr)
	}
	r.t.add(row{"8", "BatchCheckout orders/s", rate(orders), rate(set.rate) + " SET", ratio(orders, set.rate), "≥ 0.5× SET", yesNo(orders >= 0.5*set.rate && res.errs == 0)})
	r.t.add(row{"8", "BatchCheckout p99 a call", ms(res.lat.P99), fmt.Sprintf("%d orders", batchItems), "", "", ""})
	return nil
}
