package metrics

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// services is a server's methods, as GetServiceInfo gives them.
type services map[string]grpc.ServiceInfo

func (s services) GetServiceInfo() map[string]grpc.ServiceInfo { return s }

// fakeStream is a server stream that sends and receives a message per call,
// failing once its messages run out.
type fakeStream struct {
	grpc.ServerStream
	left int
}

func (s *fakeStream) Context() context.Context { return context.Background() }

func (s *fakeStream) SendMsg(any) error { return nil }

func (s *fakeStream) RecvMsg(any) error {
	if s.left == 0 {
		return io.EOF
	}
	s.left--
	return nil
}

// exercise makes the same calls through the interceptors of a collector:
// unary calls ending in every kind of error the service returns, and
// streams with messages both ways.
func exercise(t *testing.T, init func(services), unary grpc.UnaryServerInterceptor, stream grpc.StreamServerInterceptor) {
	t.Helper()
	init(services{
		"orderexpiry.v1.OrderService": {Methods: []grpc.MethodInfo{
			{Name: "Checkout"}, {Name: "GetOrder"},
			{Name: "WatchExpirations", IsServerStream: true},
			{Name: "Upload", IsClientStream: true},
			{Name: "Chat", IsClientStream: true, IsServerStream: true},
		}},
		"grpc.health.v1.Health": {Methods: []grpc.MethodInfo{{Name: "Check"}}},
	})
	results := []error{
		nil, nil,
		status.Error(codes.NotFound, "no order"),
		status.Error(codes.InvalidArgument, "bad id"),
		status.Error(codes.Unauthenticated, "no token"),
		context.Canceled,
		context.DeadlineExceeded,
		errors.New("plain"),
		status.Error(codes.Code(42), "a code gRPC does not define"),
	}
	for i, res := range results {
		method := "/orderexpiry.v1.OrderService/Checkout"
		if i%2 == 1 {
			method = "/orderexpiry.v1.OrderService/GetOrder"
		}
		_, _ = unary(context.Background(), "req", &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) {
			if res != nil {
				return nil, res
			}
			return "resp", nil
		})
	}
	// A method the collector was not told of ahead.
	_, _ = unary(context.Background(), "req", &grpc.UnaryServerInfo{FullMethod: "/other.v1.Other/Call"}, func(context.Context, any) (any, error) {
		return nil, status.Error(codes.Internal, "broken")
	})
	for i, res := range []error{nil, status.Error(codes.Unavailable, "store down")} {
		ss := &fakeStream{left: 2 + i}
		_ = stream(nil, ss, &grpc.StreamServerInfo{FullMethod: "/orderexpiry.v1.OrderService/WatchExpirations", IsServerStream: true}, func(_ any, s grpc.ServerStream) error {
			for s.RecvMsg(nil) == nil {
				_ = s.SendMsg("ev")
				_ = s.SendMsg("ev")
			}
			return res
		})
	}
}

// text is the text exposition of c, without the histograms' sums and
// bucket counts, which hold the calls' durations; their counts stay.
func text(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range families {
		for _, m := range f.Metric {
			if h := m.Histogram; h != nil {
				h.SampleSum = nil
				for _, bucket := range h.Bucket {
					bucket.CumulativeCount = nil
				}
			}
		}
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// TestGRPCMetricsMatchGRPCProm holds GRPCMetrics to the metrics of
// go-grpc-middleware's Prometheus provider, which it replaces: the same
// series, help and values after the same calls.
func TestGRPCMetricsMatchGRPCProm(t *testing.T) {
	want := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(rpcBuckets)))
	exercise(t, func(s services) { want.InitializeMetrics(s) }, want.UnaryServerInterceptor(), want.StreamServerInterceptor())
	got := newGRPCMetrics(rpcBuckets)
	exercise(t, func(s services) { got.InitializeMetrics(s) }, got.UnaryServerInterceptor(), got.StreamServerInterceptor())

	w, g := text(t, want), text(t, got)
	if !strings.Contains(w, `grpc_server_handled_total{grpc_code="NotFound",grpc_method="Checkout",grpc_service="orderexpiry.v1.OrderService",grpc_type="unary"} 1`) {
		t.Fatalf("the reference output lacks a series the calls make:\n%s", w)
	}
	if g != w {
		wl, gl := strings.Split(w, "\n"), strings.Split(g, "\n")
		for i := 0; i < max(len(wl), len(gl)); i++ {
			var a, b string
			if i < len(wl) {
				a = wl[i]
			}
			if i < len(gl) {
				b = gl[i]
			}
			if a != b {
				t.Fatalf("line %d differs:\nwant %s\ngot  %s", i+1, a, b)
			}
		}
	}
}

// BenchmarkUnaryInterceptor compares the cost of the metrics of one unary
// call, here and in grpcprom.
func BenchmarkUnaryInterceptor(b *testing.B) {
	svc := services{"orderexpiry.v1.OrderService": {Methods: []grpc.MethodInfo{{Name: "Checkout"}}}}
	info := &grpc.UnaryServerInfo{FullMethod: "/orderexpiry.v1.OrderService/Checkout"}
	handler := func(context.Context, any) (any, error) { return "resp", nil }
	run := func(b *testing.B, unary grpc.UnaryServerInterceptor) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = unary(context.Background(), "req", info, handler)
		}
	}
	b.Run("grpcprom", func(b *testing.B) {
		m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(rpcBuckets)))
		m.InitializeMetrics(svc)
		run(b, m.UnaryServerInterceptor())
	})
	b.Run("GRPCMetrics", func(b *testing.B) {
		m := newGRPCMetrics(rpcBuckets)
		m.InitializeMetrics(svc)
		run(b, m.UnaryServerInterceptor())
	})
}
