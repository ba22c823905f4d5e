package inproc

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// fakeService answers GetOrder and WatchExpirations with what its hooks
// say.
type fakeService struct {
	pb.UnimplementedOrderServiceServer
	getOrder func(ctx context.Context, req *pb.GetOrderRequest) (*pb.Order, error)
	watch    func(req *pb.WatchExpirationsRequest, stream pb.OrderService_WatchExpirationsServer) error
}

func (f *fakeService) GetOrder(ctx context.Context, req *pb.GetOrderRequest) (*pb.Order, error) {
	return f.getOrder(ctx, req)
}

func (f *fakeService) WatchExpirations(req *pb.WatchExpirationsRequest, stream pb.OrderService_WatchExpirationsServer) error {
	return f.watch(req, stream)
}

func newClient(t testing.TB, f *fakeService, opts Options) pb.OrderServiceClient {
	t.Helper()
	c := New(opts)
	pb.RegisterOrderServiceServer(c, f)
	return pb.NewOrderServiceClient(c)
}

// TestInvoke: a call reaches the method through the interceptors, in
// order, with the caller's outgoing metadata as incoming metadata, its
// request copied in and its response copied out; the header and trailer the
// method sets reach the call options.
func TestInvoke(t *testing.T) {
	var ran []string
	record := func(name string) grpc.UnaryServerInterceptor {
		return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if info.FullMethod != pb.OrderService_GetOrder_FullMethodName {
				t.Errorf("%s: FullMethod %q", name, info.FullMethod)
			}
			ran = append(ran, name)
			return handler(ctx, req)
		}
	}
	var served *pb.Order
	f := &fakeService{getOrder: func(ctx context.Context, req *pb.GetOrderRequest) (*pb.Order, error) {
		ran = append(ran, "method")
		md, _ := metadata.FromIncomingContext(ctx)
		if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer x" {
			t.Errorf("incoming authorization %q", got)
		}
		if out, ok := metadata.FromOutgoingContext(ctx); ok && len(out) > 0 {
			t.Errorf("the method's outgoing metadata is %v, want none", out)
		}
		if m, ok := grpc.Method(ctx); !ok || m != pb.OrderService_GetOrder_FullMethodName {
			t.Errorf("grpc.Method %q, %v", m, ok)
		}
		if err := grpc.SetHeader(ctx, metadata.Pairs("h", "1")); err != nil {
			t.Errorf("SetHeader: %v", err)
		}
		if err := grpc.SetTrailer(ctx, metadata.Pairs("t", "2")); err != nil {
			t.Errorf("SetTrailer: %v", err)
		}
		req.OrderId = "changed by the method"
		served = &pb.Order{OrderId: "o-1", Metadata: map[string]string{"k": "v"}}
		return served, nil
	}}
	client := newClient(t, f, Options{Interceptors: []grpc.UnaryServerInterceptor{record("first"), record("second")}})

	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer x")
	req := &pb.GetOrderRequest{OrderId: "o-1"}
	var header, trailer metadata.MD
	got, err := client.GetOrder(ctx, req, grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ran, ",") != "first,second,method" {
		t.Errorf("ran %v, want first, second, method", ran)
	}
	if !proto.Equal(got, served) || got == served {
		t.Errorf("got %v (same message: %v), want a copy of %v", got, got == served, served)
	}
	if req.OrderId != "o-1" {
		t.Errorf("the caller's request was changed: %v", req)
	}
	if h, tr := strings.Join(header.Get("h"), ","), strings.Join(trailer.Get("t"), ","); h != "1" || tr != "2" {
		t.Errorf("header %v, trailer %v", header, trailer)
	}
}

// TestInvokeErrors: every error reaches the caller as a status, as from a
// server, and a request over the size bound is refused before any
// interceptor runs.
func TestInvokeErrors(t *testing.T) {
	var intercepted int
	count := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		intercepted++
		return handler(ctx, req)
	}
	var fail error
	f := &fakeService{getOrder: func(context.Context, *pb.GetOrderRequest) (*pb.Order, error) { return nil, fail }}
	client := newClient(t, f, Options{Interceptors: []grpc.UnaryServerInterceptor{count}, MaxRecvMsgSize: 100})
	ctx := context.Background()

	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{status.Error(codes.NotFound, "no order o-1"), codes.NotFound, "no order o-1"},
		{errors.New("plain"), codes.Unknown, "plain"},
		{context.Canceled, codes.Canceled, context.Canceled.Error()},
		{context.DeadlineExceeded, codes.DeadlineExceeded, context.DeadlineExceeded.Error()},
	} {
		fail = tc.err
		_, err := client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "o-1"})
		st, ok := status.FromError(err)
		if !ok || st.Code() != tc.code || st.Message() != tc.msg {
			t.Errorf("method error %v: the caller got %v (a status: %v), want %v %q", tc.err, err, ok, tc.code, tc.msg)
		}
	}

	intercepted = 0
	_, err := client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: strings.Repeat("x", 100)})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "larger than max (102 vs. 100)") {
		t.Errorf("a request of 102 bytes: %v, want RESOURCE_EXHAUSTED larger than max (102 vs. 100)", err)
	}
	if intercepted != 0 {
		t.Errorf("the interceptors ran %d times for a request over the bound", intercepted)
	}

	_, err = client.Checkout(ctx, &pb.CheckoutRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("a method the service does not implement: %v, want UNIMPLEMENTED", err)
	}
	if _, err = New(Options{}).NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/no.Such/Bidi"); status.Code(err) != codes.Unimplemented {
		t.Errorf("a stream not served in process: %v, want UNIMPLEMENTED", err)
	}
	if err := New(Options{}).Invoke(ctx, "/no.Such/Method", &pb.GetOrderRequest{}, &pb.Order{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("an unknown method: %v, want UNIMPLEMENTED", err)
	}
}

// spanNames is a tracer provider that records the names and kinds of the
// spans started.
type spanNames struct {
	embedded.TracerProvider
	mu    sync.Mutex
	names []string
}

func (p *spanNames) Tracer(string, ...trace.TracerOption) trace.Tracer { return spanTracer{p: p} }

type spanTracer struct {
	embedded.Tracer
	p *spanNames
}

func (t spanTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(opts...)
	t.p.mu.Lock()
	t.p.names = append(t.p.names, name+" "+cfg.SpanKind().String())
	t.p.mu.Unlock()
	return noop.NewTracerProvider().Tracer("").Start(ctx, name, opts...)
}

// TestSpan: each call starts a server span named by its method with the
// Conn's tracer provider, and none without one.
func TestSpan(t *testing.T) {
	f := &fakeService{getOrder: func(context.Context, *pb.GetOrderRequest) (*pb.Order, error) { return &pb.Order{}, nil }}
	p := &spanNames{}
	client := newClient(t, f, Options{TracerProvider: p})
	if _, err := client.GetOrder(context.Background(), &pb.GetOrderRequest{OrderId: "o-1"}); err != nil {
		t.Fatal(err)
	}
	if want := "orderexpiry.v1.OrderService/GetOrder server"; len(p.names) != 1 || p.names[0] != want {
		t.Errorf("spans %q, want [%q]", p.names, want)
	}
	// Without a provider, not even the global one is asked for a span.
	global := &spanNames{}
	defer otel.SetTracerProvider(otel.GetTracerProvider())
	otel.SetTracerProvider(global)
	if _, err := newClient(t, f, Options{}).GetOrder(context.Background(), &pb.GetOrderRequest{OrderId: "o-1"}); err != nil {
		t.Fatal(err)
	}
	if len(global.names) != 0 {
		t.Errorf("a Conn without a tracer provider started spans %q, want none", global.names)
	}
}

// BenchmarkInvoke measures a call with one interceptor, the cost the
// gateway's calls pay in process.
func BenchmarkInvoke(b *testing.B) {
	order := &pb.Order{OrderId: "o-1", Metadata: map[string]string{"k": "v"}}
	f := &fakeService{getOrder: func(context.Context, *pb.GetOrderRequest) (*pb.Order, error) { return order, nil }}
	pass := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(ctx, req)
	}
	client := newClient(b, f, Options{Interceptors: []grpc.UnaryServerInterceptor{pass, pass}})
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer x", "x-forwarded-for", "127.0.0.1")
	b.ReportAllocs()
	for b.Loop() {
		var header, trailer metadata.MD
		if _, err := client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "o-1"}, grpc.Header(&header), grpc.Trailer(&trailer)); err != nil {
			b.Fatal(err)
		}
	}
}
