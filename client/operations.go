package client

import (
	"context"
	"iter"
	"time"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// WaitOperation polls a bulk operation (by its name, "operations/<id>", as
// BulkChangeOrders answered) every poll until it is done, and returns it
// then; or the error of a GetOperation, or the context's. The operation
// goes on in the service whether or not anyone waits for it.
func (c *Client) WaitOperation(ctx context.Context, name string, poll time.Duration) (*pb.Operation, error) {
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		op, err := c.GetOperation(ctx, &pb.GetOperationRequest{Name: name})
		if err != nil || op.GetDone() {
			return op, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// Operations iterates over the bulk operations, newest first, a page at a
// time; it stops at the first error, which it yields.
func (c *Client) Operations(ctx context.Context) iter.Seq2[*pb.Operation, error] {
	return pages("", func(token string) ([]*pb.Operation, string, error) {
		resp, err := c.ListOperations(ctx, &pb.ListOperationsRequest{PageSize: 100, PageToken: token})
		return resp.GetOperations(), resp.GetNextPageToken(), err
	})
}
