package bench

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// flakyOrders answers Checkout UNAVAILABLE a set number of times per order,
// creating the order the first time anyway, as a service does whose answer
// is lost after Redis ran the checkout.
type flakyOrders struct {
	pb.UnimplementedOrderServiceServer
	mu      sync.Mutex
	fails   map[string]int
	created map[string]bool
}

func (f *flakyOrders) Checkout(_ context.Context, req *pb.CheckoutRequest) (*pb.CheckoutResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := req.GetOrderId()
	was := f.created[id]
	f.created[id] = true
	if f.fails[id] > 0 {
		f.fails[id]--
		return nil, status.Error(codes.Unavailable, "the order store is unavailable; retry later")
	}
	return &pb.CheckoutResponse{Created: !was}, nil
}

// TestLoadOrders: the scale stage's loader retries a checkout answered
// UNAVAILABLE and takes "already pending" on a retry as done, but fails on
// an order that existed before its first attempt and after its last retry.
func TestLoadOrders(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fails   map[string]int
		created map[string]bool
		retries int64
		err     string
	}{
		{"clean", nil, nil, 0, ""},
		{"a lost answer", map[string]int{"o-1": 1}, nil, 1, ""},
		{"two lost answers", map[string]int{"o-0": 2, "o-2": 1}, nil, 3, ""},
		{"always unavailable", map[string]int{"o-1": 100}, nil, loadRetries - 1, "checkout o-1: 5 attempts"},
		{"existed before", nil, map[string]bool{"o-2": true}, 0, "checkout o-2: the order already existed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &flakyOrders{fails: map[string]int{}, created: map[string]bool{}}
			for k, v := range tc.fails {
				f.fails[k] = v
			}
			for k, v := range tc.created {
				f.created[k] = v
			}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			gs := grpc.NewServer()
			pb.RegisterOrderServiceServer(gs, f)
			go gs.Serve(lis)
			defer gs.Stop()
			conns, clients, err := dial(lis.Addr().String(), 1)
			if err != nil {
				t.Fatal(err)
			}
			defer closeAll(conns)
			var retried atomic.Int64
			_, err = loadOrders(context.Background(), clients, 1, 3, func(i int) string { return "o-" + string(rune('0'+i)) }, fixed(time.Hour), &retried)
			if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err %v, want %q", err, tc.err)
			}
			if retried.Load() != tc.retries {
				t.Fatalf("%d retries, want %d", retried.Load(), tc.retries)
			}
		})
	}
}
