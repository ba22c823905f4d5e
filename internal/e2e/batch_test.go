package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestBatchCheckoutGRPC: each item of a BatchCheckout is answered on its
// own, in order: created, found pending (an id given twice, a retry of the
// whole batch), or INVALID_ARGUMENT naming the item; the orders expire to
// the watcher exactly once; an empty batch and one over 1,000 items are
// refused as a whole.
func TestBatchCheckoutGRPC(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := context.Background()
		w := s.watch(t, "")

		md := map[string]string{"customer": "c-9"}
		req := &pb.BatchCheckoutRequest{Requests: []*pb.CheckoutRequest{
			{OrderId: "bt-1", Ttl: ttl(300 * time.Millisecond)},
			{OrderId: "bt-2", Ttl: ttl(400 * time.Millisecond), Metadata: md},
			{OrderId: "bad id", Ttl: ttl(time.Second)},
			{OrderId: "bt-3", Ttl: ttl(0)},
			{OrderId: "bt-1", Ttl: ttl(300 * time.Millisecond)},
			{OrderId: "bt-4", Ttl: ttl(500 * time.Millisecond)},
		}}
		res, err := s.Client.BatchCheckout(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.GetResults()) != len(req.GetRequests()) {
			t.Fatalf("%d results for %d items", len(res.GetResults()), len(req.GetRequests()))
		}
		r := res.GetResults()
		for _, i := range []int{0, 1, 5} {
			c := r[i].GetCheckout()
			if !c.GetCreated() || c.GetOrder().GetOrderId() != req.Requests[i].GetOrderId() || c.GetOrder().GetStatus() != pb.OrderStatus_ORDER_STATUS_PENDING {
				t.Errorf("item %d: %v; want %s created", i, r[i], req.Requests[i].GetOrderId())
			}
			if d := c.GetOrder().GetDeadline().AsTime().Sub(c.GetOrder().GetCreatedAt().AsTime()); d != req.Requests[i].GetTtl().AsDuration() {
				t.Errorf("item %d: deadline - created_at = %s, want its ttl", i, d)
			}
		}
		if got := r[1].GetCheckout().GetOrder().GetMetadata(); got["customer"] != "c-9" {
			t.Errorf("item 1: metadata %v, want %v", got, md)
		}
		for i, mention := range map[int]string{2: "requests[2].order_id", 3: "requests[3].ttl"} {
			e := r[i].GetError()
			if codes.Code(e.GetCode()) != codes.InvalidArgument || !strings.Contains(e.GetMessage(), mention) {
				t.Errorf("item %d: %v; want INVALID_ARGUMENT naming %s", i, r[i], mention)
			}
		}
		if c := r[4].GetCheckout(); c.GetCreated() || !c.GetOrder().GetDeadline().AsTime().Equal(r[0].GetCheckout().GetOrder().GetDeadline().AsTime()) {
			t.Errorf("item 4, bt-1 again: %v; want the pending bt-1 unchanged, created false", r[4])
		}

		// A retry of the batch creates nothing.
		again, err := s.Client.BatchCheckout(ctx, &pb.BatchCheckoutRequest{Requests: []*pb.CheckoutRequest{req.Requests[0], req.Requests[1]}})
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range again.GetResults() {
			if a.GetCheckout() == nil || a.GetCheckout().GetCreated() {
				t.Errorf("retried item %d: %v; want created false", i, a)
			}
		}

		evs := w.collect(t, 3, 5*time.Second)
		seen := map[string]int{}
		for _, ev := range evs {
			seen[ev.GetOrderId()]++
		}
		for _, id := range []string{"bt-1", "bt-2", "bt-4"} {
			if seen[id] != 1 {
				t.Errorf("%s: %d events, want 1 (events %v)", id, seen[id], seen)
			}
		}
		w.quiet(t, 500*time.Millisecond)

		_, err = s.Client.BatchCheckout(ctx, &pb.BatchCheckoutRequest{})
		wantCode(t, err, codes.InvalidArgument)
		big := &pb.BatchCheckoutRequest{}
		for i := range 1001 {
			big.Requests = append(big.Requests, &pb.CheckoutRequest{OrderId: fmt.Sprintf("big-%d", i)})
		}
		_, err = s.Client.BatchCheckout(ctx, big)
		wantCode(t, err, codes.InvalidArgument)
		if _, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "big-0"}); err == nil {
			t.Errorf("an item of the refused batch of 1,001 was checked out")
		}

		// 1,000 is the limit, and is taken.
		big.Requests = big.Requests[:1000]
		res, err = s.Client.BatchCheckout(ctx, big)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res.GetResults() {
			if !r.GetCheckout().GetCreated() || r.GetCheckout().GetOrder().GetOrderId() != big.Requests[i].GetOrderId() {
				t.Fatalf("item %d of 1,000: %v", i, r)
			}
		}
	})
}

// TestBatchCheckoutREST: POST /v1/orders:batchCheckout answers each item
// with its order or its google.rpc.Status, and refuses an empty batch with
// 400.
func TestBatchCheckoutREST(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		code, body := s.restCall(t, "POST", "/v1/orders:batchCheckout",
			`{"requests":[{"orderId":"rb-1","ttl":"60s","metadata":{"k":"v"}},{"orderId":"a:b"},{"orderId":"rb-1","ttl":"60s","metadata":{"k":"v"}}]}`)
		if code != 200 {
			t.Fatalf("batch checkout: %d %v", code, body)
		}
		results, _ := body["results"].([]any)
		if len(results) != 3 {
			t.Fatalf("results: %v", body)
		}
		first, _ := results[0].(map[string]any)
		if field(first, "checkout", "created") != true || field(first, "checkout", "order", "orderId") != "rb-1" || field(first, "checkout", "order", "metadata", "k") != "v" {
			t.Errorf("item 0: %v", first)
		}
		second, _ := results[1].(map[string]any)
		if msg, _ := field(second, "error", "message").(string); field(second, "error", "code") != float64(codes.InvalidArgument) || !strings.Contains(msg, "requests[1].order_id") {
			t.Errorf("item 1: %v; want code 3 naming requests[1].order_id", second)
		}
		third, _ := results[2].(map[string]any)
		if field(third, "checkout", "created") != false {
			t.Errorf("item 2, rb-1 again: %v; want created false", third)
		}
		if code, body := s.restCall(t, "GET", "/v1/orders/rb-1", ""); code != 200 || body["status"] != "ORDER_STATUS_PENDING" {
			t.Errorf("get: %d %v", code, body)
		}
		for _, b := range []string{`{}`, `{"requests":[]}`} {
			if code, body := s.restCall(t, "POST", "/v1/orders:batchCheckout", b); code != 400 || !strings.Contains(fmt.Sprint(body["message"]), "requests") {
				t.Errorf("batch %s: %d %v; want 400 naming requests", b, code, body)
			}
		}
	})
}

// TestBatchCheckoutRedisFaults: with Redis out of memory every item of a
// batch is RESOURCE_EXHAUSTED with a message naming maxmemory, with Redis
// unreachable every item is UNAVAILABLE, over gRPC and REST.
func TestBatchCheckoutRedisFaults(t *testing.T) {
	r := redistest.Start(t, "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
	s := startServer(t, map[string]string{"REDIS_URL": r.URL()})
	ctx := t.Context()
	batch := func(prefix string, n int, md map[string]string) *pb.BatchCheckoutRequest {
		req := &pb.BatchCheckoutRequest{}
		for i := range n {
			req.Requests = append(req.Requests, &pb.CheckoutRequest{OrderId: fmt.Sprintf("%s-%d", prefix, i), Ttl: ttl(time.Hour), Metadata: md})
		}
		return req
	}
	wantItems := func(what string, res *pb.BatchCheckoutResponse, err error, code codes.Code, mention string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for i, r := range res.GetResults() {
			if e := r.GetError(); codes.Code(e.GetCode()) != code || !strings.Contains(e.GetMessage(), mention) {
				t.Errorf("%s: item %d: %v; want %v naming %q", what, i, r, code, mention)
			}
		}
	}

	md := map[string]string{"cart": strings.Repeat("x", 1000)}
	full := false
	for round := 0; !full; round++ {
		res, err := s.Client.BatchCheckout(ctx, batch(fmt.Sprintf("fill%d", round), 50, md))
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res.GetResults() {
			switch {
			case r.GetCheckout().GetCreated():
			case codes.Code(r.GetError().GetCode()) == codes.ResourceExhausted:
				full = true
			default:
				t.Fatalf("fill round %d, item %d: %v; want created or RESOURCE_EXHAUSTED", round, i, r)
			}
		}
		if round > 100 {
			t.Fatalf("%d batches of 50 orders of 1 KB taken by a Redis of 2 MB", round)
		}
	}
	// Redis frees a little after a refusal; a lower limit keeps it full.
	if err := r.Client(t).ConfigSet(ctx, "maxmemory", "1mb").Err(); err != nil {
		t.Fatal(err)
	}
	res, err := s.Client.BatchCheckout(ctx, batch("full", 20, nil))
	wantItems("gRPC, Redis full", res, err, codes.ResourceExhausted, "maxmemory")
	code, body := s.restCall(t, "POST", "/v1/orders:batchCheckout", `{"requests":[{"orderId":"rest-full-1"},{"orderId":"rest-full-2"}]}`)
	results, _ := body["results"].([]any)
	if code != 200 || len(results) != 2 {
		t.Fatalf("REST, Redis full: %d %v", code, body)
	}
	for i, item := range results {
		if m, _ := item.(map[string]any); field(m, "error", "code") != float64(codes.ResourceExhausted) {
			t.Errorf("REST, Redis full: item %d: %v; want code 8", i, item)
		}
	}
	if _, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "full-0"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetOrder(full-0) after its refused checkout: %v; want NOT_FOUND", err)
	}

	r.Kill()
	start := time.Now()
	res, err = s.Client.BatchCheckout(ctx, batch("down", 20, nil))
	wantItems("gRPC, Redis down", res, err, codes.Unavailable, "unavailable")
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("BatchCheckout took %s to fail with Redis down", took)
	}
	code, body = s.restCall(t, "POST", "/v1/orders:batchCheckout", `{"requests":[{"orderId":"rest-down-1"}]}`)
	results, _ = body["results"].([]any)
	if m, _ := firstOf(results).(map[string]any); code != 200 || field(m, "error", "code") != float64(codes.Unavailable) {
		t.Errorf("REST, Redis down: %d %v; want 200 with item code 14", code, body)
	}
}

func firstOf(xs []any) any {
	if len(xs) == 0 {
		return nil
	}
	return xs[0]
}
