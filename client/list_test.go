package client_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/client"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestOrders pages through a listing with the iterator: every order once,
// in deadline order, across pages; an early break stops it; a bad filter is
// yielded as the error.
func TestOrders(t *testing.T) {
	s := startServer(t, nil)
	c := dial(t, s.GRPCAddr, client.Options{Insecure: true})
	ctx := t.Context()
	var reqs []*pb.CheckoutRequest
	for i := range 25 {
		reqs = append(reqs, &pb.CheckoutRequest{OrderId: fmt.Sprintf("it-%02d", i), Ttl: durationpb.New(time.Hour + time.Duration(i)*time.Second),
			Metadata: map[string]string{"even": fmt.Sprint(i%2 == 0)}})
	}
	if _, err := c.BatchCheckout(ctx, &pb.BatchCheckoutRequest{Requests: reqs}); err != nil {
		t.Fatal(err)
	}
	req := &pb.ListOrdersRequest{Filter: `metadata.even = "true"`, PageSize: 4}
	var got []string
	for o, err := range c.Orders(ctx, req) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, o.GetOrderId())
	}
	if len(got) != 13 || got[0] != "it-00" || got[12] != "it-24" {
		t.Errorf("listed %v, want the 13 even orders in deadline order", got)
	}
	if req.GetPageToken() != "" {
		t.Errorf("the iterator changed the request: page_token %q", req.GetPageToken())
	}
	n := 0
	for range c.Orders(ctx, &pb.ListOrdersRequest{PageSize: 2}) {
		if n++; n == 3 {
			break
		}
	}
	errs := 0
	for o, err := range c.Orders(ctx, &pb.ListOrdersRequest{Filter: "status = PAID"}) {
		if o != nil || status.Code(err) != codes.InvalidArgument {
			t.Errorf("bad filter: yielded %v, %v; want INVALID_ARGUMENT", o, err)
		}
		errs++
	}
	if errs != 1 {
		t.Errorf("bad filter: %d errors yielded, want 1", errs)
	}
}
