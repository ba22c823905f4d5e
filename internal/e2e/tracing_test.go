package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// otlpReceiver is an OTLP/HTTP trace receiver, as a collector serves it
// on /v1/traces: it keeps every span the server exports.
type otlpReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
	// services are the service.name of the exports' resources.
	services map[string]bool
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{services: map[string]bool{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/traces" {
			http.NotFound(w, req)
			return
		}
		body, err := io.ReadAll(req.Body)
		var export collectorpb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &export)
		}
		if err != nil {
			t.Errorf("the receiver cannot read an export: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range export.GetResourceSpans() {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					r.services[kv.GetValue().GetStringValue()] = true
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				r.spans = append(r.spans, ss.GetSpans()...)
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// trace returns the spans received so far of the trace id.
func (r *otlpReceiver) trace(id []byte) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if string(s.GetTraceId()) == string(id) {
			out = append(out, s)
		}
	}
	return out
}

// waitFor polls the received spans until done says they are complete, for
// up to 10 s, and returns them.
func (r *otlpReceiver) waitFor(t *testing.T, what string, get func() []*tracepb.Span, done func([]*tracepb.Span) bool) []*tracepb.Span {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		spans := get()
		if done(spans) {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not received within 10 s; got:\n%s", what, describe(spans))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// describe lists spans, one a line, for a failure's message.
func describe(spans []*tracepb.Span) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "  %s %q kind=%v span=%x parent=%x\n", hex.EncodeToString(s.GetTraceId()), s.GetName(), s.GetKind(), s.GetSpanId(), s.GetParentSpanId())
	}
	return b.String()
}

// find returns the first span of spans that match says is the one, or nil.
func find(spans []*tracepb.Span, match func(*tracepb.Span) bool) *tracepb.Span {
	for _, s := range spans {
		if match(s) {
			return s
		}
	}
	return nil
}

// ancestor reports whether a is an ancestor of s among spans.
func ancestor(spans []*tracepb.Span, a, s *tracepb.Span) bool {
	byID := map[string]*tracepb.Span{}
	for _, x := range spans {
		byID[string(x.GetSpanId())] = x
	}
	for p := byID[string(s.GetParentSpanId())]; p != nil; p = byID[string(p.GetParentSpanId())] {
		if p == a {
			return true
		}
	}
	return false
}

// attr returns the value of a string or integer attribute of s, as text;
// "" when s has none.
func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			if v, ok := kv.GetValue().GetValue().(*commonpb.AnyValue_IntValue); ok {
				return fmt.Sprint(v.IntValue)
			}
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func isRedis(s *tracepb.Span) bool {
	return s.GetKind() == tracepb.Span_SPAN_KIND_CLIENT && attr(s, "db.system") == "redis"
}

// TestTracing: the built binary, with tracing set by the standard OTEL_*
// variables and exporting over OTLP/HTTP to a receiver of the test, on a
// real redis-server. A REST Checkout whose caller sent a traceparent is
// one trace of the caller's: the HTTP span is the child of the caller's,
// the Checkout RPC's server span descends from it, and the Redis calls
// from the RPC span. A gRPC call's traceparent starts its trace the same
// way, and the sweeper's claim of the order is a span with its Redis call.
func TestTracing(t *testing.T) {
	t.Parallel()
	rcv := startOTLPReceiver(t)
	r := redistest.Start(t)
	s := startProcess(t, map[string]string{
		"REDIS_URL":                   r.URL(),
		"OTEL_TRACES_EXPORTER":        "otlp",
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.srv.URL,
		// Export each batch at once rather than every 5 s.
		"OTEL_BSP_SCHEDULE_DELAY": "50",
	})
	if !strings.Contains(s.Logs(), "tracing=true") {
		t.Errorf("the serving line does not say tracing=true:\n%s", s.Logs())
	}

	traceID, _ := hex.DecodeString("4bf92f3577b34da6a3ce929d0e0e4736")
	callerSpan, _ := hex.DecodeString("00f067aa0ba902b7")
	req, err := s.newRequest(context.Background(), http.MethodPost, "/v1/orders",
		strings.NewReader(`{"orderId":"traced-1","ttl":"1s"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("checkout: status %d", resp.StatusCode)
	}

	const method = "orderexpiry.v1.OrderService/Checkout"
	isRPCServer := func(s *tracepb.Span) bool {
		return s.GetName() == method && s.GetKind() == tracepb.Span_SPAN_KIND_SERVER
	}
	spans := rcv.waitFor(t, "the REST checkout's trace", func() []*tracepb.Span { return rcv.trace(traceID) }, func(spans []*tracepb.Span) bool {
		return find(spans, isRPCServer) != nil && find(spans, isRedis) != nil &&
			find(spans, func(s *tracepb.Span) bool {
				return s.GetKind() == tracepb.Span_SPAN_KIND_SERVER && s.GetName() != method
			}) != nil
	})
	httpSpan := find(spans, func(s *tracepb.Span) bool { return string(s.GetParentSpanId()) == string(callerSpan) })
	if httpSpan == nil || httpSpan.GetKind() != tracepb.Span_SPAN_KIND_SERVER || attr(httpSpan, "http.request.method") != "POST" {
		t.Fatalf("no HTTP server span of POST is the caller's child; the trace:\n%s", describe(spans))
	}
	rpc := find(spans, isRPCServer)
	if !ancestor(spans, httpSpan, rpc) {
		t.Errorf("the RPC span does not descend from the HTTP span; the trace:\n%s", describe(spans))
	}
	for _, sp := range spans {
		if isRedis(sp) && !ancestor(spans, rpc, sp) {
			t.Errorf("the Redis span %q does not descend from the RPC span; the trace:\n%s", sp.GetName(), describe(spans))
		}
	}
	t.Logf("the REST checkout's trace:\n%s", describe(spans))
	rcv.mu.Lock()
	if !rcv.services["orderexpiry"] || len(rcv.services) != 1 {
		t.Errorf("the spans come from the services %v, want orderexpiry", rcv.services)
	}
	rcv.mu.Unlock()

	// A gRPC caller's traceparent, in its metadata, starts the trace of the
	// call the same way.
	grpcTrace, _ := hex.DecodeString("0af7651916cd43dd8448eb211c80319c")
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	if _, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "traced-1"}); err != nil {
		t.Fatal(err)
	}
	isGet := func(s *tracepb.Span) bool {
		return s.GetName() == "orderexpiry.v1.OrderService/GetOrder" && s.GetKind() == tracepb.Span_SPAN_KIND_SERVER
	}
	spans = rcv.waitFor(t, "the gRPC GetOrder's trace", func() []*tracepb.Span { return rcv.trace(grpcTrace) }, func(spans []*tracepb.Span) bool {
		return find(spans, isGet) != nil && find(spans, isRedis) != nil
	})
	get := find(spans, isGet)
	if hex.EncodeToString(get.GetParentSpanId()) != "b7ad6b7169203331" {
		t.Errorf("the GetOrder span is not the caller's child; the trace:\n%s", describe(spans))
	}
	if redis := find(spans, isRedis); !ancestor(spans, get, redis) {
		t.Errorf("the Redis span does not descend from the GetOrder span; the trace:\n%s", describe(spans))
	}

	// The order expires: the sweeper's claim is a span that says so, with
	// its script's Redis span below it.
	var sweep *tracepb.Span
	rcv.waitFor(t, "a sweep that claimed the order", func() []*tracepb.Span {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return append([]*tracepb.Span(nil), rcv.spans...)
	}, func(spans []*tracepb.Span) bool {
		sweep = find(spans, func(s *tracepb.Span) bool {
			return s.GetName() == "orderexpiry.sweep" && attr(s, "orderexpiry.expired") == "1"
		})
		return sweep != nil && len(rcv.trace(sweep.GetTraceId())) >= 2
	})
	sweepTrace := rcv.trace(sweep.GetTraceId())
	if find(sweepTrace, func(s *tracepb.Span) bool { return isRedis(s) && ancestor(sweepTrace, sweep, s) }) == nil {
		t.Errorf("the sweep's Redis call is not its child; its trace:\n%s", describe(sweepTrace))
	}
}
