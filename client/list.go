package client

import (
	"context"
	"iter"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// Orders lists the orders that req's filter matches, in its order_by, page
// after page: it calls ListOrders with req (from its page_token on) and then
// with each next_page_token, until the last page, and yields every order.
// A call that fails is yielded as the error, and the listing ends there.
// Stopping the loop early stops the listing; req itself is not changed.
//
//	for o, err := range c.Orders(ctx, &pb.ListOrdersRequest{Filter: "status = PENDING"}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(o.GetOrderId(), o.GetDeadline().AsTime())
//	}
func (c *Client) Orders(ctx context.Context, req *pb.ListOrdersRequest, opts ...grpc.CallOption) iter.Seq2[*pb.Order, error] {
	return func(yield func(*pb.Order, error) bool) {
		r := proto.CloneOf(req)
		for {
			resp, err := c.ListOrders(ctx, r, opts...)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, o := range resp.GetOrders() {
				if !yield(o, nil) {
					return
				}
			}
			if resp.GetNextPageToken() == "" {
				return
			}
			r.PageToken = resp.GetNextPageToken()
		}
	}
}
