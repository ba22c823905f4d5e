package client_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/client"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestBulkOperations: a bulk change started through the client is waited
// for with WaitOperation, and the operations are iterated over, across
// pages, newest first.
func TestBulkOperations(t *testing.T) {
	s := startServer(t, nil)
	c := dial(t, s.GRPCAddr, client.Options{Insecure: true})
	ctx := context.Background()
	checkout(t, c, time.Hour, "op-1", "op-2", "op-3")
	var names []string
	for range 105 {
		op, err := c.BulkChangeOrders(ctx, &pb.BulkChangeOrdersRequest{Filter: `order_id = "op-*"`, Change: &pb.BulkChangeOrdersRequest_Ttl{Ttl: durationpb.New(2 * time.Hour)}, DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, op.GetName())
		time.Sleep(2 * time.Millisecond) // distinct creation times, for the order
	}
	done, err := c.WaitOperation(ctx, names[0], 10*time.Millisecond)
	if err != nil || !done.GetDone() || done.GetMetadata().GetMatched() != 3 {
		t.Fatalf("WaitOperation: %v, %v; want done with 3 matched", done, err)
	}
	var got []string
	for op, err := range c.Operations(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, op.GetName())
	}
	if len(got) != len(names) || got[0] != names[len(names)-1] || got[len(got)-1] != names[0] {
		t.Errorf("Operations: %d, first %v, last %v; want %d newest first", len(got), got[0], got[len(got)-1], len(names))
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.WaitOperation(short, "operations/none", 10*time.Millisecond); err == nil {
		t.Errorf("WaitOperation of an unknown operation: no error")
	}
}
