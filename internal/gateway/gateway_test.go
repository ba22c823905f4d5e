package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// fakeServer is an OrderService whose answers the test chooses. Each
// method records its request and calls the matching function; a nil
// function answers with an empty success.
type fakeServer struct {
	pb.UnimplementedOrderServiceServer

	checkout func(*pb.CheckoutRequest) (*pb.CheckoutResponse, error)
	unary    func(method, id string) (*pb.Order, error) // GetOrder, CompleteOrder, CancelOrder
	watch    func(*pb.WatchExpirationsRequest, grpc.ServerStreamingServer[pb.ExpirationEvent]) error

	mu       sync.Mutex
	requests []any
}

func (s *fakeServer) record(req any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
}

func (s *fakeServer) recorded() []any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]any(nil), s.requests...)
}

func (s *fakeServer) Checkout(_ context.Context, req *pb.CheckoutRequest) (*pb.CheckoutResponse, error) {
	s.record(req)
	if s.checkout == nil {
		return &pb.CheckoutResponse{Order: &pb.Order{OrderId: req.GetOrderId()}}, nil
	}
	return s.checkout(req)
}

func (s *fakeServer) unaryCall(method, id string, req any) (*pb.Order, error) {
	s.record(req)
	if s.unary == nil {
		return &pb.Order{OrderId: id}, nil
	}
	return s.unary(method, id)
}

func (s *fakeServer) GetOrder(_ context.Context, req *pb.GetOrderRequest) (*pb.Order, error) {
	return s.unaryCall("GetOrder", req.GetOrderId(), req)
}

func (s *fakeServer) CompleteOrder(_ context.Context, req *pb.CompleteOrderRequest) (*pb.Order, error) {
	return s.unaryCall("CompleteOrder", req.GetOrderId(), req)
}

func (s *fakeServer) CancelOrder(_ context.Context, req *pb.CancelOrderRequest) (*pb.Order, error) {
	return s.unaryCall("CancelOrder", req.GetOrderId(), req)
}

func (s *fakeServer) WatchExpirations(req *pb.WatchExpirationsRequest, stream grpc.ServerStreamingServer[pb.ExpirationEvent]) error {
	s.record(req)
	if s.watch == nil {
		return status.Error(codes.Unimplemented, "no watch in this test")
	}
	return s.watch(req, stream)
}

// testGateway is the gateway over a real gRPC server on a loopback port.
type testGateway struct {
	handler http.Handler
	srv     *httptest.Server
	active  atomic.Int64 // requests whose handler has not returned
}

// ServeHTTP serves through the gateway, counting the handlers running.
func (g *testGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.active.Add(1)
	defer g.active.Add(-1)
	g.handler.ServeHTTP(w, r)
}

func (g *testGateway) url(path string) string { return g.srv.URL + path }

// startGateway serves fake over gRPC on 127.0.0.1 and the gateway over it
// through httptest; everything stops when tb ends.
func startGateway(tb testing.TB, fake pb.OrderServiceServer, health Health) *testGateway {
	tb.Helper()
	return startGatewayWith(tb, fake, Options{Health: health})
}

// startGatewayWith is startGateway with the gateway's options; a nil
// Health reports serving.
func startGatewayWith(tb testing.TB, fake pb.OrderServiceServer, opts Options) *testGateway {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterOrderServiceServer(gs, fake)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	tb.Cleanup(func() {
		gs.Stop()
		<-served
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	if opts.Health == nil {
		opts.Health = func(context.Context) error { return nil }
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	h, err := New(ctx, conn, opts)
	if err != nil {
		tb.Fatal(err)
	}
	g := &testGateway{handler: h}
	g.srv = httptest.NewServer(g)
	tb.Cleanup(func() {
		// Close waits for every handler; one that never returns must fail
		// the test rather than hang the run.
		closed := make(chan struct{})
		go func() {
			g.srv.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			tb.Errorf("the HTTP server did not close: %d gateway handlers still running", g.active.Load())
		}
	})
	return g
}

// errorBody is the JSON body of an error response.
type errorBody struct {
	Code    int               `json:"code"`
	Message string            `json:"message"`
	Details []json.RawMessage `json:"details"`
}

// do sends a request and returns the response with its body read.
func do(t *testing.T, method, url, body string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// checkError checks an error response: its status, a JSON body with the
// gRPC code and a message containing each of parts.
func checkError(t *testing.T, resp *http.Response, body []byte, wantHTTP int, wantCode codes.Code, parts ...string) errorBody {
	t.Helper()
	if resp.StatusCode != wantHTTP {
		t.Errorf("status %d, want %d (body %s)", resp.StatusCode, wantHTTP, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %q is not a JSON error: %v", body, err)
	}
	if e.Code != int(wantCode) {
		t.Errorf("code %d, want %d (%s)", e.Code, wantCode, wantCode)
	}
	for _, p := range parts {
		if !strings.Contains(e.Message, p) {
			t.Errorf("message %q does not contain %q", e.Message, p)
		}
	}
	return e
}

func TestErrorStatuses(t *testing.T) {
	calls := []struct {
		name         string
		method, path string
		body         string
	}{
		{name: "checkout", method: http.MethodPost, path: "/v1/orders", body: `{"orderId":"o-1"}`},
		{name: "get", method: http.MethodGet, path: "/v1/orders/o-1"},
		{name: "complete", method: http.MethodPost, path: "/v1/orders/o-1:complete"},
		{name: "cancel", method: http.MethodPost, path: "/v1/orders/o-1:cancel"},
	}
	codesTests := []struct {
		name     string
		code     codes.Code
		wantHTTP int
	}{
		{name: "failed precondition", code: codes.FailedPrecondition, wantHTTP: http.StatusConflict},
		{name: "out of range", code: codes.OutOfRange, wantHTTP: http.StatusGone},
		{name: "not found", code: codes.NotFound, wantHTTP: http.StatusNotFound},
		{name: "invalid argument", code: codes.InvalidArgument, wantHTTP: http.StatusBadRequest},
		{name: "unavailable", code: codes.Unavailable, wantHTTP: http.StatusServiceUnavailable},
		{name: "resource exhausted", code: codes.ResourceExhausted, wantHTTP: http.StatusTooManyRequests},
		{name: "internal", code: codes.Internal, wantHTTP: http.StatusInternalServerError},
	}
	var mu sync.Mutex
	var current codes.Code
	var message string
	fail := func() error {
		mu.Lock()
		defer mu.Unlock()
		return status.Error(current, message)
	}
	fake := &fakeServer{
		checkout: func(*pb.CheckoutRequest) (*pb.CheckoutResponse, error) { return nil, fail() },
		unary:    func(string, string) (*pb.Order, error) { return nil, fail() },
	}
	g := startGateway(t, fake, nil)
	for _, ct := range codesTests {
		for _, call := range calls {
			t.Run(ct.name+"/"+call.name, func(t *testing.T) {
				mu.Lock()
				current = ct.code
				message = `cannot complete order "o-1": it is expired — since ` + ct.name
				want := message
				mu.Unlock()
				resp, body := do(t, call.method, g.url(call.path), call.body)
				e := checkError(t, resp, body, ct.wantHTTP, ct.code)
				if e.Message != want {
					t.Errorf("message %q, want %q", e.Message, want)
				}
			})
		}
	}
}

func TestRouting(t *testing.T) {
	tests := []struct {
		name         string
		method, path string
		wantHTTP     int
		wantCode     codes.Code
	}{
		{name: "unknown path", method: http.MethodGet, path: "/v1/nope", wantHTTP: http.StatusNotFound, wantCode: codes.NotFound},
		{name: "root", method: http.MethodGet, path: "/", wantHTTP: http.StatusNotFound, wantCode: codes.NotFound},
		{name: "unknown version", method: http.MethodGet, path: "/v2/orders/x", wantHTTP: http.StatusNotFound, wantCode: codes.NotFound},
		{name: "too many segments", method: http.MethodGet, path: "/v1/orders/x/y", wantHTTP: http.StatusNotFound, wantCode: codes.NotFound},
	}
	fake := &fakeServer{}
	g := startGateway(t, fake, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, tt.method, g.url(tt.path), "")
			checkError(t, resp, body, tt.wantHTTP, tt.wantCode)
		})
	}
	if reqs := fake.recorded(); len(reqs) != 0 {
		t.Errorf("the server was called for unknown routes: %v", reqs)
	}
}

// TestWrongMethod checks that a known path with the wrong method is an
// error that never reaches the server. (grpc-gateway answers these with 501
// and code 12, Unimplemented, not 405; the test does not insist on either.)
func TestWrongMethod(t *testing.T) {
	tests := []struct {
		name         string
		method, path string
	}{
		{name: "delete an order", method: http.MethodDelete, path: "/v1/orders/x"},
		{name: "put orders", method: http.MethodPut, path: "/v1/orders"},
		{name: "list orders", method: http.MethodGet, path: "/v1/orders"},
		{name: "post the watch", method: http.MethodPost, path: "/v1/expirations:watch"},
		{name: "post healthz", method: http.MethodPost, path: "/healthz"},
		{name: "unknown verb", method: http.MethodPost, path: "/v1/orders/x:refund"},
	}
	fake := &fakeServer{}
	g := startGateway(t, fake, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, tt.method, g.url(tt.path), "")
			if resp.StatusCode < 400 {
				t.Errorf("status %d, want an error", resp.StatusCode)
			}
			var e errorBody
			if err := json.Unmarshal(body, &e); err != nil || e.Code == 0 || e.Message == "" {
				t.Errorf("body %q is not a JSON error (%v)", body, err)
			}
		})
	}
	if reqs := fake.recorded(); len(reqs) != 0 {
		t.Errorf("the server was called: %v", reqs)
	}
}

func TestRequestBody(t *testing.T) {
	tests := []struct {
		name         string
		method, path string
		body         string
		wantHTTP     int
		wantParts    []string // message parts of an error
		wantReq      string   // the request the server sees, as JSON; empty: not called
	}{
		{name: "camelCase", method: http.MethodPost, path: "/v1/orders", body: `{"orderId":"a","ttl":"5s","metadata":{"k":"v"}}`,
			wantHTTP: http.StatusOK, wantReq: `{"orderId":"a","ttl":"5s","metadata":{"k":"v"}}`},
		{name: "snake_case", method: http.MethodPost, path: "/v1/orders", body: `{"order_id":"b"}`,
			wantHTTP: http.StatusOK, wantReq: `{"orderId":"b"}`},
		{name: "empty checkout body reaches the server", method: http.MethodPost, path: "/v1/orders",
			wantHTTP: http.StatusOK, wantReq: `{}`},
		{name: "unknown field", method: http.MethodPost, path: "/v1/orders", body: `{"orderId":"a","bogus":1}`,
			wantHTTP: http.StatusBadRequest, wantParts: []string{"bogus"}},
		{name: "misspelt field", method: http.MethodPost, path: "/v1/orders", body: `{"orderID":"a"}`,
			wantHTTP: http.StatusBadRequest, wantParts: []string{"orderID"}},
		{name: "not JSON", method: http.MethodPost, path: "/v1/orders", body: `order_id=a`,
			wantHTTP: http.StatusBadRequest},
		{name: "truncated JSON", method: http.MethodPost, path: "/v1/orders", body: `{"orderId":`,
			wantHTTP: http.StatusBadRequest},
		{name: "array", method: http.MethodPost, path: "/v1/orders", body: `[]`,
			wantHTTP: http.StatusBadRequest},
		{name: "bad ttl", method: http.MethodPost, path: "/v1/orders", body: `{"orderId":"a","ttl":"soon"}`,
			wantHTTP: http.StatusBadRequest, wantParts: []string{`field "ttl"`, `"soon" is not a duration`, `"5m"`}},
		{name: "ttl of the wrong type", method: http.MethodPost, path: "/v1/orders", body: `{"orderId":"a","ttl":5}`,
			wantHTTP: http.StatusBadRequest, wantParts: []string{`field "ttl"`}},
		{name: "metadata value of the wrong type", method: http.MethodPost, path: "/v1/orders", body: `{"orderId":"a","metadata":{"k":1}}`,
			wantHTTP: http.StatusBadRequest, wantParts: []string{`field "metadata"`}},
		{name: "trailing data", method: http.MethodPost, path: "/v1/orders", body: `{"orderId":"a"} {"bogus":1}`,
			wantHTTP: http.StatusBadRequest, wantParts: []string{"request body"}},
		{name: "wrong type", method: http.MethodPost, path: "/v1/orders", body: `{"orderId":7}`,
			wantHTTP: http.StatusBadRequest, wantParts: []string{"orderId"}},
		{name: "empty body on complete", method: http.MethodPost, path: "/v1/orders/x:complete",
			wantHTTP: http.StatusOK, wantReq: `{"orderId":"x"}`},
		{name: "empty object on complete", method: http.MethodPost, path: "/v1/orders/x:complete", body: `{}`,
			wantHTTP: http.StatusOK, wantReq: `{"orderId":"x"}`},
		{name: "the path wins over the body", method: http.MethodPost, path: "/v1/orders/x:complete", body: `{"orderId":"y"}`,
			wantHTTP: http.StatusOK, wantReq: `{"orderId":"x"}`},
		{name: "empty body on cancel", method: http.MethodPost, path: "/v1/orders/ord-2003:cancel",
			wantHTTP: http.StatusOK, wantReq: `{"orderId":"ord-2003"}`},
		{name: "unknown field on cancel", method: http.MethodPost, path: "/v1/orders/x:cancel", body: `{"reason":"x"}`,
			wantHTTP: http.StatusBadRequest, wantParts: []string{"reason"}},
		{name: "get", method: http.MethodGet, path: "/v1/orders/ord-1",
			wantHTTP: http.StatusOK, wantReq: `{"orderId":"ord-1"}`},
		{name: "escaped path segment", method: http.MethodGet, path: "/v1/orders/a%20b",
			wantHTTP: http.StatusOK, wantReq: `{"orderId":"a b"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeServer{}
			g := startGateway(t, fake, nil)
			resp, body := do(t, tt.method, g.url(tt.path), tt.body)
			reqs := fake.recorded()
			if tt.wantHTTP != http.StatusOK {
				e := checkError(t, resp, body, tt.wantHTTP, codes.InvalidArgument, tt.wantParts...)
				if !strings.HasPrefix(e.Message, "request body") {
					t.Errorf("message %q does not start with \"request body\"", e.Message)
				}
				if len(reqs) != 0 {
					t.Errorf("the server was called with %v", reqs)
				}
				return
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200 (body %s)", resp.StatusCode, body)
			}
			if len(reqs) != 1 {
				t.Fatalf("the server saw %d requests, want 1", len(reqs))
			}
			got, err := protojson.Marshal(reqs[0].(proto.Message))
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, got, []byte(tt.wantReq)) {
				t.Errorf("the server saw %s, want %s", got, tt.wantReq)
			}
		})
	}
}

// jsonEqual compares two JSON documents, with the server's requests
// written by protojson's rules (camelCase names, durations as strings).
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	xs, _ := json.Marshal(x)
	ys, _ := json.Marshal(y)
	return string(xs) == string(ys)
}

func TestResponseShowsDefaults(t *testing.T) {
	tests := []struct {
		name    string
		created bool
		want    string
	}{
		{name: "created false is shown", created: false, want: `"created":false`},
		{name: "created true", created: true, want: `"created":true`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeServer{checkout: func(req *pb.CheckoutRequest) (*pb.CheckoutResponse, error) {
				return &pb.CheckoutResponse{Order: &pb.Order{OrderId: req.GetOrderId(), Status: pb.OrderStatus_ORDER_STATUS_PENDING}, Created: tt.created}, nil
			}}
			g := startGateway(t, fake, nil)
			resp, body := do(t, http.MethodPost, g.url("/v1/orders"), `{"orderId":"a"}`)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			compact := strings.ReplaceAll(string(body), " ", "")
			for _, w := range []string{tt.want, `"orderId":"a"`, `"status":"ORDER_STATUS_PENDING"`, `"metadata":{}`} {
				if !strings.Contains(compact, w) {
					t.Errorf("body %s does not contain %s", body, w)
				}
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantHTTP int
		wantBody string
	}{
		{name: "serving", wantHTTP: http.StatusOK, wantBody: `{"status":"SERVING"}`},
		{name: "not serving", err: errors.New("the order store is unreachable"), wantHTTP: http.StatusServiceUnavailable, wantBody: `{"reason":"the order store is unreachable","status":"NOT_SERVING"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := startGateway(t, &fakeServer{}, func(context.Context) error { return tt.err })
			resp, body := do(t, http.MethodGet, g.url("/healthz"), "")
			if resp.StatusCode != tt.wantHTTP {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.wantHTTP)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if got := strings.TrimSpace(string(body)); got != tt.wantBody {
				t.Errorf("body %q, want %q", got, tt.wantBody)
			}
			// /livez answers SERVING whatever the store: it is the liveness
			// probe, which must not restart replicas while Redis is away.
			resp, body = do(t, http.MethodGet, g.url("/livez"), "")
			if got := strings.TrimSpace(string(body)); resp.StatusCode != http.StatusOK || got != `{"status":"SERVING"}` {
				t.Errorf("/livez: %d %q, want 200 {\"status\":\"SERVING\"}", resp.StatusCode, got)
			}
		})
	}
}

// testEvent is the i-th event a fake watch sends.
func testEvent(i int) *pb.ExpirationEvent {
	at := time.Date(2026, 11, 21, 5, 50, 2, 0, time.UTC).Add(time.Duration(i) * time.Millisecond)
	return &pb.ExpirationEvent{
		Cursor:    strings.Join([]string{"1795240202144", string(rune('0' + i))}, "-"),
		OrderId:   "ord-" + string(rune('a'+i)),
		Deadline:  timestamppb.New(at.Add(-time.Millisecond)),
		ExpiredAt: timestamppb.New(at),
		Metadata:  map[string]string{"sku": "tee-L"},
	}
}

func TestWatchQuery(t *testing.T) {
	tests := []struct {
		name       string
		query      string
		wantHTTP   int
		wantParts  []string
		wantCursor string // what the server sees, when it is called
	}{
		{name: "unknown parameter", query: "?cursor=1-0", wantHTTP: http.StatusBadRequest,
			wantParts: []string{"unknown query parameter cursor", "after_cursor"}},
		{name: "several unknown parameters are sorted", query: "?zeta=1&after_cursor=1-0&alpha=2", wantHTTP: http.StatusBadRequest,
			wantParts: []string{"unknown query parameter alpha, zeta"}},
		{name: "after_cursor twice", query: "?after_cursor=1-0&after_cursor=2-0", wantHTTP: http.StatusBadRequest,
			wantParts: []string{"after_cursor is given more than once"}},
		{name: "after_cursor and afterCursor", query: "?after_cursor=1-0&afterCursor=2-0", wantHTTP: http.StatusBadRequest,
			wantParts: []string{"more than once"}},
		{name: "afterCursor twice", query: "?afterCursor=1-0&afterCursor=1-0", wantHTTP: http.StatusBadRequest,
			wantParts: []string{"more than once"}},
		{name: "after_cursor is passed on", query: "?after_cursor=1795240202144-0", wantHTTP: http.StatusGone, wantCursor: "1795240202144-0"},
		{name: "afterCursor is passed on", query: "?afterCursor=5-1", wantHTTP: http.StatusGone, wantCursor: "5-1"},
		{name: "no cursor", query: "", wantHTTP: http.StatusGone, wantCursor: ""},
		{name: "empty after_cursor", query: "?after_cursor=", wantHTTP: http.StatusGone, wantCursor: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeServer{watch: func(*pb.WatchExpirationsRequest, grpc.ServerStreamingServer[pb.ExpirationEvent]) error {
				return status.Error(codes.OutOfRange, "after_cursor is older than the retention period")
			}}
			g := startGateway(t, fake, nil)
			resp, body := do(t, http.MethodGet, g.url("/v1/expirations:watch"+tt.query), "")
			reqs := fake.recorded()
			if tt.wantHTTP == http.StatusBadRequest {
				checkError(t, resp, body, tt.wantHTTP, codes.InvalidArgument, tt.wantParts...)
				if len(reqs) != 0 {
					t.Errorf("the server was called with %v", reqs)
				}
				return
			}
			checkError(t, resp, body, tt.wantHTTP, codes.OutOfRange, "retention")
			if len(reqs) != 1 {
				t.Fatalf("the server saw %d requests, want 1", len(reqs))
			}
			if got := reqs[0].(*pb.WatchExpirationsRequest).GetAfterCursor(); got != tt.wantCursor {
				t.Errorf("the server saw after_cursor %q, want %q", got, tt.wantCursor)
			}
		})
	}
}

func TestWatchRejectedBeforeStart(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantHTTP int
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "out of range", err: status.Error(codes.OutOfRange, "after_cursor 1-0 is older than the retention period"),
			wantHTTP: http.StatusGone, wantCode: codes.OutOfRange, wantMsg: "after_cursor 1-0 is older than the retention period"},
		{name: "invalid", err: status.Error(codes.InvalidArgument, `after_cursor "x" is not a cursor`),
			wantHTTP: http.StatusBadRequest, wantCode: codes.InvalidArgument, wantMsg: `after_cursor "x" is not a cursor`},
		{name: "unavailable", err: status.Error(codes.Unavailable, "the order store is unavailable; retry later"),
			wantHTTP: http.StatusServiceUnavailable, wantCode: codes.Unavailable, wantMsg: "the order store is unavailable; retry later"},
		{name: "resource exhausted", err: status.Error(codes.ResourceExhausted, "too many watchers"),
			wantHTTP: http.StatusTooManyRequests, wantCode: codes.ResourceExhausted, wantMsg: "too many watchers"},
		{name: "ends without a header or an error", err: nil,
			wantHTTP: http.StatusInternalServerError, wantCode: codes.Internal, wantMsg: "the stream ended before it started"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeServer{watch: func(*pb.WatchExpirationsRequest, grpc.ServerStreamingServer[pb.ExpirationEvent]) error {
				return tt.err
			}}
			g := startGateway(t, fake, nil)
			resp, body := do(t, http.MethodGet, g.url("/v1/expirations:watch?after_cursor=1-0"), "")
			e := checkError(t, resp, body, tt.wantHTTP, tt.wantCode)
			if e.Message != tt.wantMsg {
				t.Errorf("message %q, want %q", e.Message, tt.wantMsg)
			}
		})
	}
}

// watchLines reads an NDJSON watch response to its end.
func watchLines(t *testing.T, body io.Reader) []string {
	t.Helper()
	var lines []string
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the watch: %v (lines so far %q)", err, lines)
	}
	return lines
}

func getWatch(t *testing.T, url string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func checkEventLine(t *testing.T, line string, want *pb.ExpirationEvent) {
	t.Helper()
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("line %q is not JSON: %v", line, err)
	}
	for k, v := range map[string]string{"cursor": want.GetCursor(), "orderId": want.GetOrderId()} {
		if got[k] != v {
			t.Errorf("line %s: %s = %v, want %v", line, k, got[k], v)
		}
	}
	for k, v := range map[string]time.Time{"deadline": want.GetDeadline().AsTime(), "expiredAt": want.GetExpiredAt().AsTime()} {
		s, _ := got[k].(string)
		if at, err := time.Parse(time.RFC3339Nano, s); err != nil || !at.Equal(v) {
			t.Errorf("line %s: %s = %v, want %v", line, k, got[k], v.Format(time.RFC3339Nano))
		}
	}
	if md, _ := got["metadata"].(map[string]any); md["sku"] != "tee-L" {
		t.Errorf("line %s: metadata %v", line, got["metadata"])
	}
	for _, k := range []string{"order_id", "expired_at", "result"} {
		if _, ok := got[k]; ok {
			t.Errorf("line %s has the key %q; want bare camelCase events", line, k)
		}
	}
}

func TestWatchStream(t *testing.T) {
	tests := []struct {
		name    string
		events  int
		end     error
		wantEnd string // the last line; empty: none after the events
	}{
		{name: "two events then unavailable", events: 2,
			end:     status.Error(codes.Unavailable, "the server is shutting down; resume with after_cursor=1795240202144-1"),
			wantEnd: `{"error":{"code":14,"status":"UNAVAILABLE","message":"the server is shutting down; resume with after_cursor=1795240202144-1"}}`},
		{name: "lagged", events: 3,
			end:     status.Error(codes.ResourceExhausted, "this watcher fell too far behind; resume with after_cursor=1795240202144-2"),
			wantEnd: `{"error":{"code":8,"status":"RESOURCE_EXHAUSTED","message":"this watcher fell too far behind; resume with after_cursor=1795240202144-2"}}`},
		{name: "message with quotes and non-ASCII", events: 1,
			end:     status.Error(codes.Internal, `say "hi" — é`),
			wantEnd: `{"error":{"code":13,"status":"INTERNAL","message":"say \"hi\" — é"}}`},
		{name: "no events then an error", events: 0,
			end:     status.Error(codes.Unavailable, "stopping"),
			wantEnd: `{"error":{"code":14,"status":"UNAVAILABLE","message":"stopping"}}`},
		{name: "ends cleanly", events: 2, end: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []*pb.ExpirationEvent
			for i := range tt.events {
				want = append(want, testEvent(i))
			}
			fake := &fakeServer{watch: func(_ *pb.WatchExpirationsRequest, stream grpc.ServerStreamingServer[pb.ExpirationEvent]) error {
				if err := stream.SendHeader(metadata.MD{}); err != nil {
					return err
				}
				for _, ev := range want {
					if err := stream.Send(ev); err != nil {
						return err
					}
				}
				return tt.end
			}}
			g := startGateway(t, fake, nil)
			resp := getWatch(t, g.url("/v1/expirations:watch"))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
				t.Errorf("Content-Type %q, want application/x-ndjson", ct)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}
			lines := watchLines(t, resp.Body)
			wantLines := len(want)
			if tt.wantEnd != "" {
				wantLines++
			}
			if len(lines) != wantLines {
				t.Fatalf("got %d lines %q, want %d", len(lines), lines, wantLines)
			}
			for i, ev := range want {
				checkEventLine(t, lines[i], ev)
			}
			if tt.wantEnd == "" {
				return
			}
			last := lines[len(lines)-1]
			if !jsonEqual(t, []byte(last), []byte(tt.wantEnd)) {
				t.Errorf("last line %s, want %s", last, tt.wantEnd)
			}
		})
	}
}

// TestWatchHeaderFirst checks that the status line and headers arrive as
// soon as the server accepts the watch, before any event.
func TestWatchHeaderFirst(t *testing.T) {
	tests := []struct {
		name   string
		events int
	}{
		{name: "then one event", events: 1},
		{name: "then three events", events: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proceed := make(chan struct{})
			var once sync.Once
			release := func() { once.Do(func() { close(proceed) }) }
			t.Cleanup(release)
			fake := &fakeServer{watch: func(_ *pb.WatchExpirationsRequest, stream grpc.ServerStreamingServer[pb.ExpirationEvent]) error {
				if err := stream.SendHeader(metadata.MD{}); err != nil {
					return err
				}
				select {
				case <-proceed:
				case <-stream.Context().Done():
					return stream.Context().Err()
				}
				for i := range tt.events {
					if err := stream.Send(testEvent(i)); err != nil {
						return err
					}
				}
				return nil
			}}
			g := startGateway(t, fake, nil)
			// Do returns with the headers; the server sends no event until
			// then.
			resp := getWatch(t, g.url("/v1/expirations:watch"))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
				t.Errorf("Content-Type %q, want application/x-ndjson", ct)
			}
			release()
			lines := watchLines(t, resp.Body)
			if len(lines) != tt.events {
				t.Fatalf("got %d lines %q, want %d", len(lines), lines, tt.events)
			}
			for i, line := range lines {
				checkEventLine(t, line, testEvent(i))
			}
		})
	}
}

// TestWatchClientGoesAway checks that a client that disconnects ends the
// gRPC stream and the gateway's handler. Each case goes through several
// connections, so that a race between the two ends shows up.
func TestWatchClientGoesAway(t *testing.T) {
	const rounds = 10
	tests := []struct {
		name   string
		events int // events read before going away
	}{
		{name: "before any event", events: 0},
		{name: "after an event", events: 1},
		{name: "after three events", events: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ended := make(chan error, rounds)
			fake := &fakeServer{watch: func(_ *pb.WatchExpirationsRequest, stream grpc.ServerStreamingServer[pb.ExpirationEvent]) error {
				if err := stream.SendHeader(metadata.MD{}); err != nil {
					return err
				}
				for i := range tt.events {
					if err := stream.Send(testEvent(i)); err != nil {
						return err
					}
				}
				<-stream.Context().Done()
				ended <- stream.Context().Err()
				return nil
			}}
			g := startGateway(t, fake, nil)
			for round := range rounds {
				ctx, cancel := context.WithCancel(context.Background())
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url("/v1/expirations:watch"), nil)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				r := bufio.NewReader(resp.Body)
				for i := range tt.events {
					line, err := r.ReadString('\n')
					if err != nil {
						t.Fatalf("round %d, line %d: %v", round, i, err)
					}
					checkEventLine(t, strings.TrimSpace(line), testEvent(i))
				}
				cancel()
				resp.Body.Close()
				select {
				case err := <-ended:
					if !errors.Is(err, context.Canceled) {
						t.Errorf("round %d: the server's stream ended with %v, want context.Canceled", round, err)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("round %d: the gRPC stream did not end when the HTTP client went away", round)
				}
				deadline := time.Now().Add(5 * time.Second)
				for g.active.Load() != 0 {
					if time.Now().After(deadline) {
						t.Fatalf("round %d: the watch handler did not return after the client went away", round)
					}
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
}

// TestEscapedPath: an escaped colon is part of the segment it is in, never
// the start of a custom verb. A path whose order id the service would
// refuse is refused for it, with 400, even where no route takes its method.
func TestEscapedPath(t *testing.T) {
	tests := []struct {
		name         string
		method, path string
		wantCall     string // the RPC the server sees, and its id; empty: none
		wantID       string
		wantHTTP     int
	}{
		{name: "plain colon starts the verb", method: http.MethodPost, path: "/v1/orders/ok-1:complete", wantCall: "CompleteOrder", wantID: "ok-1", wantHTTP: 200},
		{name: "escaped colon is in the id", method: http.MethodGet, path: "/v1/orders/ok-1%3Acomplete", wantCall: "GetOrder", wantID: "ok-1:complete", wantHTTP: 200},
		{name: "escaped colon then the verb", method: http.MethodPost, path: "/v1/orders/ok-1%3Acancel:cancel", wantCall: "CancelOrder", wantID: "ok-1:cancel", wantHTTP: 200},
		{name: "escaped letters", method: http.MethodGet, path: "/v1/orders/%6Fk", wantCall: "GetOrder", wantID: "ok", wantHTTP: 200},
		{name: "escaped colon is no verb", method: http.MethodPost, path: "/v1/orders/ok-1%3Acomplete", wantHTTP: 400},
		{name: "lower-case escape", method: http.MethodPost, path: "/v1/orders/ok-1%3acancel", wantHTTP: 400},
		{name: "escaped slash", method: http.MethodGet, path: "/v1/orders/a%2Fb", wantHTTP: 400},
		{name: "wrong method, bad id", method: http.MethodDelete, path: "/v1/orders/bad%20id", wantHTTP: 400},
		{name: "wrong method, good id", method: http.MethodDelete, path: "/v1/orders/ok-1", wantHTTP: 405},
		{name: "unknown verb, good id", method: http.MethodPost, path: "/v1/orders/ok-1:refund", wantHTTP: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			var mu sync.Mutex
			fake := &fakeServer{unary: func(method, id string) (*pb.Order, error) {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, method+" "+id)
				return &pb.Order{OrderId: id}, nil
			}}
			g := startGateway(t, fake, nil)
			resp, body := do(t, tt.method, g.url(tt.path), "")
			if resp.StatusCode != tt.wantHTTP {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tt.wantHTTP)
			}
			if tt.wantHTTP == 400 {
				checkError(t, resp, body, 400, codes.InvalidArgument, "order_id has the character")
			}
			mu.Lock()
			defer mu.Unlock()
			if tt.wantCall == "" {
				if len(got) != 0 {
					t.Fatalf("the server was called: %v", got)
				}
				return
			}
			if want := tt.wantCall + " " + tt.wantID; len(got) != 1 || got[0] != want {
				t.Fatalf("the server saw %q, want %q", got, want)
			}
		})
	}
}

// TestLongURI: a request URI longer than MaxBodyBytes gets 414, after the
// caller's credentials were checked (401 without them), and never reaches
// the server; one within it goes on as before.
func TestLongURI(t *testing.T) {
	const limit = 1024
	authorize := func(r *http.Request) error {
		if r.Header.Get("Authorization") != "Bearer ok" {
			return status.Error(codes.Unauthenticated, "invalid bearer token")
		}
		return nil
	}
	fake := &fakeServer{}
	g := startGatewayWith(t, fake, Options{MaxBodyBytes: limit, Authorize: authorize, Open: map[string]bool{"health": true}})
	call := func(method, path, auth string) (*http.Response, []byte) {
		req, err := http.NewRequest(method, g.url(path), nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}
	long := strings.Repeat("x", limit)
	tests := []struct {
		name         string
		method, path string
		auth         string
		wantHTTP     int
		wantCode     codes.Code
	}{
		{"long id without credentials", http.MethodGet, "/v1/orders/" + long, "", 401, codes.Unauthenticated},
		{"long id with wrong credentials", http.MethodGet, "/v1/orders/" + long, "Bearer no", 401, codes.Unauthenticated},
		{"long id", http.MethodGet, "/v1/orders/" + long, "Bearer ok", 414, codes.InvalidArgument},
		{"long verb call", http.MethodPost, "/v1/orders/" + long + ":cancel", "Bearer ok", 414, codes.InvalidArgument},
		{"long watch query", http.MethodGet, "/v1/expirations:watch?after_cursor=" + long, "Bearer ok", 414, codes.InvalidArgument},
		{"long query of an open endpoint", http.MethodGet, "/healthz?" + long, "", 414, codes.InvalidArgument},
		{"long query of a closed endpoint", http.MethodGet, "/metrics?" + long, "", 401, codes.Unauthenticated},
		{"unknown long path", http.MethodGet, "/" + long, "Bearer ok", 414, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := call(tt.method, tt.path, tt.auth)
			e := checkError(t, resp, body, tt.wantHTTP, tt.wantCode)
			if tt.wantHTTP == 414 && !strings.Contains(e.Message, "the limit is 1024 bytes") {
				t.Errorf("message %q does not give the limit", e.Message)
			}
			if tt.wantHTTP == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("a 401 without a challenge")
			}
		})
	}
	if reqs := fake.recorded(); len(reqs) != 0 {
		t.Fatalf("the server was called: %v", reqs)
	}
	// Just within the limit, the call goes on.
	path := "/v1/orders/"
	path += strings.Repeat("y", limit-len(path))
	if resp, body := call(http.MethodGet, path, "Bearer ok"); resp.StatusCode != 200 {
		t.Fatalf("a URI of exactly the limit: %d %s", resp.StatusCode, body)
	}
}

// TestWatchClientStopsReading: a watch whose client stops reading is ended
// once a write has waited for WatchWriteTimeout: the handler returns, the
// gRPC stream ends and the connection is closed, while the client is still
// connected and silent.
func TestWatchClientStopsReading(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ended := make(chan error, 1)
	big := strings.Repeat("x", 60<<10)
	fake := &fakeServer{watch: func(_ *pb.WatchExpirationsRequest, stream grpc.ServerStreamingServer[pb.ExpirationEvent]) error {
		if err := stream.SendHeader(metadata.MD{}); err != nil {
			return err
		}
		for i := 0; ; i++ {
			ev := testEvent(i % 10)
			ev.Metadata = map[string]string{"big": big}
			if err := stream.Send(ev); err != nil {
				break
			}
		}
		<-stream.Context().Done()
		ended <- stream.Context().Err()
		return nil
	}}
	g := startGatewayWith(t, fake, Options{WatchWriteTimeout: timeout})
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v1/expirations:watch HTTP/1.1\r\nHost: gateway\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	status, err := bufio.NewReaderSize(conn, 16).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Fatalf("status line %q, %v", status, err)
	}
	// The client reads nothing more.
	start := time.Now()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the gRPC stream ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the gRPC stream of a watch whose client stopped reading was still open after 10s (write timeout %s)", timeout)
	}
	took := time.Since(start)
	deadline := time.Now().Add(5 * time.Second)
	for g.active.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the watch handler did not return")
		}
		time.Sleep(time.Millisecond)
	}
	// What was in flight drains, then the connection ends.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the connection is still open")
		}
	}
	t.Logf("the watch ended %s after the client stopped reading", took.Round(time.Millisecond))
}
