package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestRescheduleGRPC: an order rescheduled later expires at its new deadline,
// and its event says so; each refusal has its code.
func TestRescheduleGRPC(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := context.Background()
		w := s.watch(t, "")
		co, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "g-1", Ttl: ttl(300 * time.Millisecond)})
		if err != nil {
			t.Fatal(err)
		}
		o, err := s.Client.RescheduleOrder(ctx, &pb.RescheduleOrderRequest{
			OrderId:          "g-1",
			NewDeadline:      &pb.RescheduleOrderRequest_Ttl{Ttl: ttl(time.Second)},
			ExpectedDeadline: co.GetOrder().GetDeadline(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if o.GetReschedules() != 1 || !o.GetDeadline().AsTime().After(co.GetOrder().GetDeadline().AsTime()) {
			t.Fatalf("rescheduled order: %v", o)
		}
		// The old expected deadline no longer holds.
		_, err = s.Client.RescheduleOrder(ctx, &pb.RescheduleOrderRequest{
			OrderId:          "g-1",
			NewDeadline:      &pb.RescheduleOrderRequest_Ttl{Ttl: ttl(time.Minute)},
			ExpectedDeadline: co.GetOrder().GetDeadline(),
		})
		wantCode(t, err, codes.Aborted)

		ev := w.next(t, 5*time.Second)
		if ev.GetOrderId() != "g-1" || !ev.GetDeadline().AsTime().Equal(o.GetDeadline().AsTime()) {
			t.Fatalf("event %v, want g-1 at the new deadline %v", ev, o.GetDeadline().AsTime())
		}
		if ev.GetExpiredAt().AsTime().Before(o.GetDeadline().AsTime()) {
			t.Errorf("expired at %v, before the new deadline %v", ev.GetExpiredAt().AsTime(), o.GetDeadline().AsTime())
		}
		got, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "g-1"})
		if err != nil || got.GetStatus() != pb.OrderStatus_ORDER_STATUS_EXPIRED || got.GetReschedules() != 1 {
			t.Fatalf("GetOrder: %v, %v", got, err)
		}

		tests := []struct {
			name string
			req  *pb.RescheduleOrderRequest
			want codes.Code
		}{
			{"expired order", &pb.RescheduleOrderRequest{OrderId: "g-1", NewDeadline: &pb.RescheduleOrderRequest_Ttl{Ttl: ttl(time.Minute)}}, codes.FailedPrecondition},
			{"unknown order", &pb.RescheduleOrderRequest{OrderId: "g-none", NewDeadline: &pb.RescheduleOrderRequest_Ttl{Ttl: ttl(time.Minute)}}, codes.NotFound},
			{"no new deadline", &pb.RescheduleOrderRequest{OrderId: "g-2"}, codes.InvalidArgument},
			{"zero ttl", &pb.RescheduleOrderRequest{OrderId: "g-2", NewDeadline: &pb.RescheduleOrderRequest_Ttl{Ttl: ttl(0)}}, codes.InvalidArgument},
			{"deadline in the past", &pb.RescheduleOrderRequest{OrderId: "g-2", NewDeadline: &pb.RescheduleOrderRequest_Deadline{Deadline: timestamppb.New(time.Now().Add(-time.Hour))}}, codes.InvalidArgument},
			{"deadline past the maximum ttl", &pb.RescheduleOrderRequest{OrderId: "g-2", NewDeadline: &pb.RescheduleOrderRequest_Deadline{Deadline: timestamppb.New(time.Now().Add(1000 * time.Hour))}}, codes.InvalidArgument},
			{"bad id", &pb.RescheduleOrderRequest{OrderId: "a b", NewDeadline: &pb.RescheduleOrderRequest_Ttl{Ttl: ttl(time.Minute)}}, codes.InvalidArgument},
		}
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "g-2", Ttl: ttl(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := s.Client.RescheduleOrder(ctx, tt.req)
				wantCode(t, err, tt.want)
			})
		}
	})
}

// TestRescheduleREST: the same through the REST port, earlier this time,
// with an absolute deadline.
func TestRescheduleREST(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		lines := s.restWatch(t, "")
		code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"rr-1","ttl":"3600s"}`)
		if code != 200 {
			t.Fatalf("checkout: %d %v", code, body)
		}
		old := field(body, "order", "deadline").(string)
		at := time.Now().Add(400 * time.Millisecond).UTC().Truncate(time.Millisecond)
		code, body = s.restCall(t, "POST", "/v1/orders/rr-1:reschedule", `{"deadline":"`+at.Format(time.RFC3339Nano)+`","expectedDeadline":"`+old+`"}`)
		if code != 200 || body["reschedules"] != float64(1) || body["status"] != "ORDER_STATUS_PENDING" {
			t.Fatalf("reschedule: %d %v", code, body)
		}
		ev := lines.next(t)
		if ev["orderId"] != "rr-1" {
			t.Fatalf("event: %v", ev)
		}
		if d, _ := time.Parse(time.RFC3339Nano, ev["deadline"].(string)); !d.Equal(at) {
			t.Errorf("event deadline %v, want the new %v", d, at)
		}
		code, body = s.restCall(t, "POST", "/v1/orders/rr-1:reschedule", `{"ttl":"60s"}`)
		if code != 409 || body["code"] != float64(codes.FailedPrecondition) {
			t.Errorf("reschedule of an expired order: %d %v", code, body)
		}
		if code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"rr-2","ttl":"60s"}`); code != 200 {
			t.Fatalf("checkout: %d %v", code, body)
		}
		code, body = s.restCall(t, "POST", "/v1/orders/rr-2:reschedule", `{"ttl":"60s","expectedDeadline":"2020-01-01T00:00:00Z"}`)
		if code != 409 || body["code"] != float64(codes.Aborted) {
			t.Errorf("reschedule with a stale expected deadline: %d %v", code, body)
		}
		code, body = s.restCall(t, "POST", "/v1/orders/rr-2:reschedule", `{}`)
		if code != 400 {
			t.Errorf("reschedule with no deadline: %d %v", code, body)
		}
	})
}

// TestCheckoutDeadlineAndRepeats: a checkout with an absolute deadline,
// through both ports; the same request repeated answers the order
// (created false), another request under the pending id ALREADY_EXISTS
// (409) naming what differs, and ttl with deadline INVALID_ARGUMENT (400).
func TestCheckoutDeadlineAndRepeats(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := context.Background()
		at := time.Now().Add(time.Hour).Truncate(time.Millisecond)
		req := &pb.CheckoutRequest{OrderId: "cd-1", Deadline: timestamppb.New(at), Metadata: map[string]string{"cart": "A"}}
		co, err := s.Client.Checkout(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if !co.GetCreated() || !co.GetOrder().GetDeadline().AsTime().Equal(at) {
			t.Fatalf("Checkout at %v: %v", at, co)
		}
		again, err := s.Client.Checkout(ctx, req)
		if err != nil || again.GetCreated() || !again.GetOrder().GetDeadline().AsTime().Equal(at) {
			t.Fatalf("the same Checkout again: %v, %v", again, err)
		}
		_, err = s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "cd-1", Deadline: timestamppb.New(at), Metadata: map[string]string{"cart": "B"}})
		wantCode(t, err, codes.AlreadyExists)
		if !strings.Contains(status.Convert(err).Message(), `metadata differs at key "cart"`) {
			t.Errorf("Checkout with other metadata: %v, want it to name the key", err)
		}

		body := `{"orderId":"cd-1","deadline":"` + at.Add(time.Minute).UTC().Format(time.RFC3339Nano) + `","metadata":{"cart":"A"}}`
		code, got := s.restCall(t, "POST", "/v1/orders", body)
		if code != 409 || !strings.Contains(fmt.Sprint(got["message"]), "it was checked out with deadline") {
			t.Errorf("REST checkout at another deadline: %d %v, want 409 naming the deadline", code, got)
		}
		code, got = s.restCall(t, "POST", "/v1/orders", `{"orderId":"cd-1","ttl":"60s","metadata":{"cart":"A"}}`)
		if code != 409 || !strings.Contains(fmt.Sprint(got["message"]), "this asks for a ttl of 1m") {
			t.Errorf("REST checkout with a ttl instead: %d %v, want 409 naming the ttl", code, got)
		}
		code, got = s.restCall(t, "POST", "/v1/orders", `{"orderId":"cd-2","ttl":"60s","deadline":"`+at.UTC().Format(time.RFC3339)+`"}`)
		if code != 400 || !strings.Contains(fmt.Sprint(got["message"]), "ttl or deadline, not both") {
			t.Errorf("REST checkout with both: %d %v, want 400", code, got)
		}
		code, got = s.restCall(t, "POST", "/v1/orders", `{"orderId":"cd-3","deadline":"2020-01-01T00:00:00Z"}`)
		if code != 400 || !strings.Contains(fmt.Sprint(got["message"]), "is not after now") {
			t.Errorf("REST checkout at a past deadline: %d %v, want 400", code, got)
		}
		// A batch item answers as a checkout of its own would.
		bc, err := s.Client.BatchCheckout(ctx, &pb.BatchCheckoutRequest{Requests: []*pb.CheckoutRequest{
			req,
			{OrderId: "cd-1", Ttl: ttl(time.Hour), Metadata: map[string]string{"cart": "A"}},
			{OrderId: "cd-4", Deadline: timestamppb.New(at)},
		}})
		if err != nil {
			t.Fatal(err)
		}
		r := bc.GetResults()
		if r[0].GetCheckout().GetCreated() || r[0].GetError() != nil {
			t.Errorf("batch item 0, the same request: %v", r[0])
		}
		if codes.Code(r[1].GetError().GetCode()) != codes.AlreadyExists {
			t.Errorf("batch item 1, another request: %v, want ALREADY_EXISTS", r[1])
		}
		if !r[2].GetCheckout().GetCreated() || !r[2].GetCheckout().GetOrder().GetDeadline().AsTime().Equal(at) {
			t.Errorf("batch item 2, a new order at a deadline: %v", r[2])
		}
	})
}
