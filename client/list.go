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
	return pages(req.GetPageToken(), func(token string) ([]*pb.Order, string, error) {
		r := proto.CloneOf(req)
		r.PageToken = token
		resp, err := c.ListOrders(ctx, r, opts...)
		return resp.GetOrders(), resp.GetNextPageToken(), err
	})
}

// pages walks a paged listing from the page token first: list answers a
// page's items and the next page's token ("" after the last page). It
// yields every item; a failed call is yielded as the error and ends the
// walk, and so does a loop that stops early.
func pages[T any](first string, list func(token string) ([]T, string, error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		for token := first; ; {
			items, next, err := list(token)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, it := range items {
				if !yield(it, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			token = next
		}
	}
}
