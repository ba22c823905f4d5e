package baseline

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// start runs the baselines on a fresh redis-server and returns a gRPC
// client and the REST base URL.
func start(t *testing.T) (pb.OrderServiceClient, string, *redistest.Server) {
	t.Helper()
	rd := redistest.Start(t)
	rdb := rd.Client(t)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, rdb, gl, hl) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewOrderServiceClient(conn), "http://" + hl.Addr().String(), rd
}

// TestGRPCBaseline: Checkout creates the order once with one SET NX PX
// (its key has the ttl), GetOrder reads it back, and an unknown order is
// NotFound: the benchmark counts only answers that did the work.
func TestGRPCBaseline(t *testing.T) {
	c, _, rd := start(t)
	ctx := context.Background()
	for i, want := range []bool{true, false} {
		resp, err := c.Checkout(ctx, &pb.CheckoutRequest{OrderId: "o1", Ttl: durationpb.New(time.Hour)})
		if err != nil || resp.GetCreated() != want {
			t.Fatalf("checkout %d: created %v, %v; want created %v", i, resp.GetCreated(), err, want)
		}
	}
	if pttl := rd.Client(t).PTTL(ctx, "order:o1").Val(); pttl < 59*time.Minute || pttl > time.Hour {
		t.Fatalf("the key's ttl is %s, want about 1h", pttl)
	}
	o, err := c.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "o1"})
	if err != nil || o.GetOrderId() != "o1" || time.Until(o.GetDeadline().AsTime()) < 59*time.Minute {
		t.Fatalf("GetOrder: %v, %v", o, err)
	}
	if _, err := c.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetOrder of an unknown order: %v, want NotFound", err)
	}
	if _, err := c.Checkout(ctx, &pb.CheckoutRequest{OrderId: "o2"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Checkout without a ttl: %v, want InvalidArgument", err)
	}
}

// TestRESTBaseline: the seeds' recipe answers 200 for a new order, 409 for
// a taken id, 400 for a body it cannot use, and reads an order back (404
// when there is none).
func TestRESTBaseline(t *testing.T) {
	_, base, rd := start(t)
	call := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/v1/orders", `{"id":"r1","expire":60}`, 200},
		{"POST", "/v1/orders", `{"id":"r1","expire":60}`, 409},
		{"POST", "/v1/orders", `{"id":"r2"}`, 400},
		{"POST", "/v1/orders", `{"id":`, 400},
		{"GET", "/v1/orders/r1", "", 200},
		{"GET", "/v1/orders/r2", "", 404},
		{"GET", "/healthz", "", 200},
	} {
		if got, body := call(tc.method, tc.path, tc.body); got != tc.want {
			t.Errorf("%s %s %s: %d %s, want %d", tc.method, tc.path, tc.body, got, body, tc.want)
		}
	}
	if pttl := rd.Client(t).PTTL(context.Background(), "order:r1").Val(); pttl < 59*time.Second || pttl > time.Minute {
		t.Fatalf("the key's ttl is %s, want about 60s", pttl)
	}
}
