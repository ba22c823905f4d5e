package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// benchServer is a server on the memory store with a bearer token, whose
// store runs until the benchmark ends.
func benchServer(b *testing.B) *Server {
	b.Helper()
	f, err := ParseFlags(nil, func(k string) string {
		if k == "AUTH_TOKENS" {
			return "bench-token"
		}
		return ""
	}, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(f.Config, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = s.store.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		s.closeStore()
	})
	return s
}

var benchIDs atomic.Int64

// BenchmarkREST measures the REST calls through the HTTP handler (with no
// network): the gateway, the call into the service and the memory store.
// The store's share is small, so that the allocations per call are mostly
// the request path's.
func BenchmarkREST(b *testing.B) {
	s := benchServer(b)
	call := func(b *testing.B, method, path, body string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer bench-token")
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		s.http.Handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
		}
	}
	b.Run("Checkout", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			call(b, http.MethodPost, "/v1/orders", `{"orderId":"rest-`+strconv.FormatInt(benchIDs.Add(1), 10)+`","ttl":"3600s"}`)
		}
	})
	call(b, http.MethodPost, "/v1/orders", `{"orderId":"rest-get","ttl":"3600s"}`)
	b.Run("GetOrder", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			call(b, http.MethodGet, "/v1/orders/rest-get", "")
		}
	})
}

// BenchmarkGRPC measures the gRPC calls over a loopback connection to the
// gRPC server, client included.
func BenchmarkGRPC(b *testing.B) {
	s := benchServer(b)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = s.grpc.Serve(lis) }()
	b.Cleanup(s.grpc.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	client := pb.NewOrderServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer bench-token")
	ttl := durationpb.New(3600e9)
	b.Run("Checkout", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "grpc-" + strconv.FormatInt(benchIDs.Add(1), 10), Ttl: ttl}); err != nil {
				b.Fatal(err)
			}
		}
	})
	if _, err := client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "grpc-get", Ttl: ttl}); err != nil {
		b.Fatal(err)
	}
	b.Run("GetOrder", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "grpc-get"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
