package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// Stage 9 measures a bulk reschedule: BulkChangeOrders shifting every
// pending order of one merchant (bulkOrders of them, beside as many of
// another merchant that it must leave alone), in orders per second from
// the operation's start to its end, beside the same orders rescheduled one
// RescheduleOrder call at a time by the stage's callers.
func (r *runner) bulk(ctx context.Context) error {
	n := 200_000
	if r.cfg.Quick {
		n = 20_000
	}
	e, err := r.startEnv()
	if err != nil {
		return err
	}
	defer e.stop()
	c := e.clients[0]
	for _, merchant := range []string{"m-1", "m-2"} {
		for from := 0; from < n; from += 1000 {
			req := &pb.BatchCheckoutRequest{}
			for i := from; i < min(from+1000, n); i++ {
				req.Requests = append(req.Requests, &pb.CheckoutRequest{OrderId: merchant + "-" + strconv.Itoa(i), Ttl: durationpb.New(time.Hour),
					Metadata: map[string]string{"merchant": merchant}})
			}
			if _, err := c.BatchCheckout(ctx, req); err != nil {
				return err
			}
		}
	}
	r.logf("  bulk shift of %d orders beside %d of another merchant", n, n)
	op, err := c.BulkChangeOrders(ctx, &pb.BulkChangeOrdersRequest{Filter: `metadata.merchant = "m-1"`,
		Change: &pb.BulkChangeOrdersRequest_Shift{Shift: durationpb.New(time.Minute)}})
	if err != nil {
		return err
	}
	for !op.GetDone() {
		time.Sleep(100 * time.Millisecond)
		if op, err = c.GetOperation(ctx, &pb.GetOperationRequest{Name: op.GetName()}); err != nil {
			return err
		}
	}
	m := op.GetMetadata()
	took := m.GetEndTime().AsTime().Sub(m.GetCreateTime().AsTime())
	bulkRate := float64(m.GetChanged()) / took.Seconds()
	r.logf("    %d matched, %d changed in %s: %.0f orders/s", m.GetMatched(), m.GetChanged(), took.Round(time.Millisecond), bulkRate)
	if m.GetChanged() != int64(n) {
		r.t.note("9: the bulk shift changed %d of %d orders: %v", m.GetChanged(), n, m)
	}

	// The baseline: the other merchant's orders, one call each.
	one := func(ctx context.Context, w int) error {
		id := "m-2-" + strconv.Itoa(rand.IntN(n))
		_, err := e.clients[w%len(e.clients)].RescheduleOrder(ctx, &pb.RescheduleOrderRequest{OrderId: id,
			NewDeadline: &pb.RescheduleOrderRequest_Ttl{Ttl: durationpb.New(2 * time.Hour)}})
		return err
	}
	res := hammer(ctx, e, r.sz.callers, r.sz.warmup, r.sz.loadFor, one)
	r.logf("    RescheduleOrder: %d callers: %.0f calls/s, %d errors", r.sz.callers, res.rate, res.errs)
	r.t.add(row{"9", "bulk reschedule orders/s", rate(bulkRate), rate(res.rate) + " RescheduleOrder", ratio(bulkRate, res.rate), "", fmt.Sprintf("%d orders in %s", n, took.Round(time.Millisecond))})
	return nil
}
