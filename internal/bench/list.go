package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// listCalls is how many ListOrders calls each side of the list stage times.
const listCalls = 300

// list runs stage 10, listing: pages of 100 pending orders by deadline
// (ListOrders with filter status = PENDING, the first page and the page
// after it), timed beside 1,000 pending orders and then, on the same Redis,
// beside listPending. The deadline index already orders the pending orders,
// so a page must cost Redis about the same whatever their number: the goal
// is a ratio of at most 2× in latency and in Redis CPU per page.
func (r *runner) list(ctx context.Context) error {
	small, large := 1000, r.sz.listPending
	e, err := r.startEnv()
	if err != nil {
		return err
	}
	defer e.stop()
	conns, clients, err := dial(e.svc.GRPCAddr, loadConns)
	if err != nil {
		return err
	}
	defer closeAll(conns)
	var retried atomic.Int64
	if _, err := batchLoad(ctx, clients, loadConns, small, func(i int) string { return "ls-" + strconv.Itoa(i) }, fixed(2*time.Hour), &retried, nil); err != nil {
		return err
	}
	few, err := r.listPages(ctx, e, clients[0])
	if err != nil {
		return err
	}
	r.logf("  beside %d pending: %s", small, few)
	r.logf("  loading %d more pending orders through BatchCheckout", large-small)
	took, err := batchLoad(ctx, clients, loadConns, large-small, func(i int) string { return "ll-" + strconv.Itoa(i) }, fixed(2*time.Hour), &retried, nil)
	if err != nil {
		return err
	}
	r.logf("  loaded in %s", took.Round(time.Millisecond))
	many, err := r.listPages(ctx, e, clients[0])
	if err != nil {
		return err
	}
	r.logf("  beside %d pending: %s", large, many)
	lat := float64(many.p50) / float64(few.p50)
	cpu := float64(many.redisPer) / float64(few.redisPer)
	r.t.add(row{"10", fmt.Sprintf("page of 100 pending by deadline, p50, beside %d (base: beside %d)", large, small),
		fmtDur(many.p50), fmtDur(few.p50), ratio(lat, 1), "≤ 2×", yesNo(valid(lat) && lat <= 2)})
	r.t.add(row{"10", "Redis CPU per page", fmtDur(many.redisPer), fmtDur(few.redisPer), ratio(cpu, 1), "≤ 2×", yesNo(valid(cpu) && cpu <= 2)})
	r.t.note("10: %d ListOrders calls a side, one caller, half first pages and half second pages (with the first's token); beside %d: %s; beside %d: %s",
		listCalls, small, few, large, many)
	return e.exited()
}

type listTiming struct {
	p50, p99 time.Duration
	// redisPer is Redis's CPU time per call.
	redisPer time.Duration
}

func (l listTiming) String() string {
	return fmt.Sprintf("p50 %s, p99 %s, Redis CPU %s a page", fmtDur(l.p50), fmtDur(l.p99), fmtDur(l.redisPer))
}

func fmtDur(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

// listPages times listCalls ListOrders calls one after another.
func (r *runner) listPages(ctx context.Context, e *env, c pb.OrderServiceClient) (listTiming, error) {
	req := &pb.ListOrdersRequest{Filter: "status = PENDING", PageSize: 100}
	first, err := c.ListOrders(ctx, req)
	if err != nil {
		return listTiming{}, err
	}
	if len(first.GetOrders()) != 100 || first.GetNextPageToken() == "" {
		return listTiming{}, fmt.Errorf("the first page has %d orders and next token %q, want 100 and a token", len(first.GetOrders()), first.GetNextPageToken())
	}
	second := &pb.ListOrdersRequest{Filter: req.Filter, PageSize: 100, PageToken: first.GetNextPageToken()}
	lats := make([]time.Duration, 0, listCalls)
	snap := e.cpu()
	for i := range listCalls {
		q := req
		if i%2 == 1 {
			q = second
		}
		start := time.Now()
		resp, err := c.ListOrders(ctx, q)
		if err != nil {
			return listTiming{}, err
		}
		lats = append(lats, time.Since(start))
		if len(resp.GetOrders()) != 100 {
			return listTiming{}, fmt.Errorf("a page has %d orders, want 100", len(resp.GetOrders()))
		}
	}
	used := e.cpuUsed(snap, 0)
	slices.Sort(lats)
	return listTiming{p50: lats[len(lats)/2], p99: lats[len(lats)*99/100], redisPer: used.redis / listCalls}, nil
}
