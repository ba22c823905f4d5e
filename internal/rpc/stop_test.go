package rpc_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/memstore"
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/rpc"
	"github.com/orderexpiry/orderexpiry/internal/watch"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// slowNack is the memory store with a nack that takes a while, as one over
// a network does: Stop must wait for it.
type slowNack struct{ *memstore.Store }

func (s slowNack) Nack(ctx context.Context, group string, ids []order.AckID, retry time.Duration, reason string) ([]order.AckStatus, error) {
	time.Sleep(100 * time.Millisecond)
	return s.Store.Nack(ctx, group, ids, retry, reason)
}

// TestStopHandsBackFirst: Stop returns only once every consume stream has
// handed its unacknowledged deliveries back, so that the server may close
// the store after it; the stream then ends UNAVAILABLE, and a stream or a
// pull that comes after Stop is answered at once.
func TestStopHandsBackFirst(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := memstore.New(memstore.Options{})
	hub := watch.NewHub(st, watch.Options{})
	go func() { _ = st.Run(ctx) }()
	go func() { _ = hub.Run(ctx) }()
	svc := rpc.New(slowNack{st}, hub, rpc.Options{Limits: order.DefaultLimits, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv := rpc.NewServer(svc)
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient("passthrough:///rpc-test",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewOrderServiceClient(conn)

	if _, err := client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "g", AckDeadline: durationpb.New(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	stream, err := client.ConsumeExpirations(ctx, &pb.ConsumeExpirationsRequest{GroupId: "g", Consumer: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	const n = 2
	for _, id := range []string{"a", "b"} {
		if _, err := client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id, Ttl: durationpb.New(10 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}

	stopCtx, stopCancel := context.WithTimeout(ctx, 5*time.Second)
	defer stopCancel()
	svc.Stop(stopCtx)
	// Straight after Stop, without waiting: the deliveries are back.
	ds, err := st.Deliver(ctx, "g", "other", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != n {
		t.Fatalf("%d deliveries ready once Stop returned, want the stream's %d", len(ds), n)
	}
	for _, d := range ds {
		if d.AckID.Attempt != 2 {
			t.Errorf("%s delivered again as attempt %d, want 2", d.Event.OrderID, d.AckID.Attempt)
		}
	}
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != "the server is shutting down; reconnect" {
		t.Fatalf("the stream ended with %v, want UNAVAILABLE: the server is shutting down; reconnect", err)
	}

	late, err := client.ConsumeExpirations(ctx, &pb.ConsumeExpirationsRequest{GroupId: "g"})
	if err == nil {
		_, err = late.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("a stream opened after Stop: %v, want UNAVAILABLE", err)
	}
	begin := time.Now()
	resp, err := client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "g", Wait: durationpb.New(30 * time.Second)})
	if err != nil || len(resp.GetReceivedExpirations()) != 0 {
		t.Fatalf("a pull after Stop: %v, %v; want an empty answer", resp, err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("a pull after Stop took %s, want an answer at once", took)
	}
}
