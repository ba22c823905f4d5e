package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestMetrics: /metrics counts what happened to orders (a retry is not a
// new order), the lateness of expirations, the open watch streams, the
// subscriber, and every RPC, those that came through the gateway too.
func TestMetrics(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := context.Background()
		grpcWatch := s.watch(t, "")
		restWatch := s.restWatch(t, "")
		checkMetrics(t, s, []wantSample{{name: "orderexpiry_watchers", value: 2}})

		// Checkouts: two over gRPC (and a retry of one), one over REST.
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "m-expire", Ttl: ttl(200 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		if res, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "m-expire", Ttl: ttl(200 * time.Millisecond)}); err != nil || res.GetCreated() {
			t.Fatalf("retry: %v %v", res, err)
		}
		if code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"m-complete","ttl":"60s"}`); code != 200 {
			t.Fatalf("REST checkout: %d %v", code, body)
		}
		if code, body := s.restCall(t, "POST", "/v1/orders/m-complete:complete", ""); code != 200 {
			t.Fatalf("REST complete: %d %v", code, body)
		}
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "m-cancel", Ttl: ttl(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Client.CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: "m-cancel"}); err != nil {
			t.Fatal(err)
		}
		if ev := grpcWatch.next(t, 5*time.Second); ev.GetOrderId() != "m-expire" {
			t.Fatalf("event %v", ev)
		}
		if l := restWatch.next(t); l["orderId"] != "m-expire" {
			t.Fatalf("REST line %v", l)
		}

		unary := func(method, code string) map[string]string {
			return map[string]string{"grpc_service": "orderexpiry.v1.OrderService", "grpc_method": method, "grpc_type": "unary", "grpc_code": code}
		}
		checkMetrics(t, s, []wantSample{
			{name: "orderexpiry_orders_checked_out_total", value: 3},
			{name: "orderexpiry_orders_closed_total", labels: map[string]string{"outcome": "completed"}, value: 1},
			{name: "orderexpiry_orders_closed_total", labels: map[string]string{"outcome": "cancelled"}, value: 1},
			{name: "orderexpiry_orders_closed_total", labels: map[string]string{"outcome": "expired"}, value: 1},
			{name: "orderexpiry_orders_caught_up_total", value: 0},
			{name: "orderexpiry_expiration_lateness_seconds_count", value: 1, atLeast: true},
			{name: "orderexpiry_watchers", value: 2},
			{name: "orderexpiry_subscriber_connected", value: 1},
			// Three over gRPC (the retry included) and one through the gateway.
			{name: "grpc_server_handled_total", labels: unary("Checkout", "OK"), value: 4},
			{name: "grpc_server_handled_total", labels: unary("CompleteOrder", "OK"), value: 1},
			{name: "grpc_server_handled_total", labels: unary("CancelOrder", "OK"), value: 1},
			{name: "grpc_server_handled_total", labels: unary("GetOrder", "OK"), value: 0},
			{name: "grpc_server_handling_seconds_count", labels: map[string]string{"grpc_method": "Checkout"}, value: 4},
		})

		// A failed call is counted under its code.
		_, err := s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: "m-cancel"})
		wantCode(t, err, codes.FailedPrecondition)
		checkMetrics(t, s, []wantSample{
			{name: "grpc_server_handled_total", labels: unary("CompleteOrder", "FailedPrecondition"), value: 1},
			{name: "orderexpiry_orders_closed_total", labels: map[string]string{"outcome": "completed"}, value: 1},
		})

		grpcWatch.cancel()
		restWatch.cancel()
		checkMetrics(t, s, []wantSample{{name: "orderexpiry_watchers", value: 0}})
	})
}

// TestMetricsSubscriberDown: on Redis, orderexpiry_subscriber_connected
// says 0 while the subscription to expired-key events is down, and 1 again
// once it is back.
func TestMetricsSubscriberDown(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t)
	s := startServer(t, map[string]string{"REDIS_URL": r.URL()})
	connected := func(v float64) []wantSample {
		return []wantSample{{name: "orderexpiry_subscriber_connected", value: v}}
	}
	checkMetrics(t, s, connected(1))
	r.Kill()
	checkMetrics(t, s, connected(0))
	r.Restart(t)
	checkMetrics(t, s, connected(1))
}

// wantSample is one sample /metrics should show: its value, or at least
// its value.
type wantSample struct {
	name    string
	labels  map[string]string // a subset of the sample's labels
	value   float64
	atLeast bool
}

func (w wantSample) String() string {
	var ls []string
	for _, k := range slices.Sorted(maps.Keys(w.labels)) {
		ls = append(ls, fmt.Sprintf("%s=%q", k, w.labels[k]))
	}
	op := "="
	if w.atLeast {
		op = ">="
	}
	return fmt.Sprintf("%s{%s} %s %g", w.name, strings.Join(ls, ","), op, w.value)
}

// checkMetrics scrapes /metrics until it shows every wanted sample, and
// fails with what is missing if it does not within 5 s. (Counters and
// gauges are updated just after the calls and events that move them.)
func checkMetrics(t *testing.T, s *server, want []wantSample) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var wrong []string
		fams := s.scrape(t)
		for _, w := range want {
			got, err := sampleValue(fams, w.name, w.labels)
			switch {
			case err != nil:
				wrong = append(wrong, fmt.Sprintf("%s: %v", w, err))
			case got == w.value, w.atLeast && got > w.value:
			default:
				wrong = append(wrong, fmt.Sprintf("%s: got %g", w, got))
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics after 5s:\n%s", strings.Join(wrong, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrape reads /metrics in the Prometheus text format.
func (s *server) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := s.newRequest(context.Background(), "GET", "/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("/metrics: Content-Type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// sampleValue returns the value of the one sample of name whose labels
// include labels. A name ending in _count or _sum is also looked up as the
// sample count or sum of a histogram or summary.
func sampleValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, error) {
	fam, part := fams[name], ""
	if fam == nil {
		for _, suffix := range []string{"_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && fams[base] != nil {
				fam, part = fams[base], suffix
			}
		}
	}
	if fam == nil {
		return 0, fmt.Errorf("no such metric")
	}
	var found []float64
	for _, m := range fam.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		var v float64
		switch fam.GetType() {
		case dto.MetricType_COUNTER:
			v = m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			v = m.GetGauge().GetValue()
		case dto.MetricType_UNTYPED:
			v = m.GetUntyped().GetValue()
		case dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY:
			count, sum := float64(m.GetHistogram().GetSampleCount()), m.GetHistogram().GetSampleSum()
			if fam.GetType() == dto.MetricType_SUMMARY {
				count, sum = float64(m.GetSummary().GetSampleCount()), m.GetSummary().GetSampleSum()
			}
			switch part {
			case "_count":
				v = count
			case "_sum":
				v = sum
			default:
				return 0, fmt.Errorf("a %v: ask for %s_count or %s_sum", fam.GetType(), name, name)
			}
		default:
			return 0, fmt.Errorf("unexpected type %v", fam.GetType())
		}
		found = append(found, v)
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("no sample with these labels")
	case 1:
		return found[0], nil
	}
	return 0, fmt.Errorf("%d samples with these labels, want one", len(found))
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
