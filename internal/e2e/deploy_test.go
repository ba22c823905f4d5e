package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/deploycheck"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// madeByPrometheus are the series a query may read that Prometheus makes
// itself rather than scrapes.
var madeByPrometheus = []string{"up"}

// TestDeployQueriesUseExportedMetrics: every metric the alerting rules
// (deploy/prometheus/alerts.yaml) and the Grafana dashboard
// (deploy/grafana/dashboard.json) read is one a running server exports. The
// server runs on Redis with a maxmemory, a pull group whose consumer
// acknowledges some expirations and holds one past its deadline, and a push
// group whose endpoint fails, so that every family has samples; and the
// metrics the alerts were added for say what happened.
func TestDeployQueriesUseExportedMetrics(t *testing.T) {
	const maxmemory = 64 << 20
	r := redistest.Start(t, "--maxmemory", "64mb", "--maxmemory-policy", "noeviction")
	rcv := startPushReceiver(t)
	s := startServer(t, map[string]string{"REDIS_URL": r.URL()}, pushFlags...)
	ctx := context.Background()
	watch := s.watch(t, "")
	if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "pay", AckDeadline: durationpb.New(time.Second), MaxDeliveries: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "hooks", MaxDeliveries: 2, AckDeadline: durationpb.New(time.Second),
		PushConfig: &pb.PushConfig{Url: rcv.url("/fail"), Secret: pushSecret}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"dep-1", "dep-2", "dep-3"} {
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id, Ttl: ttl(100 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	watch.collect(t, 3, 5*time.Second)

	pull := func() []*pb.ReceivedExpiration {
		t.Helper()
		res, err := s.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "pay", Consumer: "c1", MaxEvents: 10, Wait: durationpb.New(3 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetReceivedExpirations()
	}
	got := pull()
	if len(got) != 3 {
		t.Fatalf("pulled %d expirations, want 3", len(got))
	}
	if _, err := s.Client.AcknowledgeExpirations(ctx, &pb.AcknowledgeExpirationsRequest{GroupId: "pay", AckIds: []string{got[0].GetAckId(), got[1].GetAckId()}}); err != nil {
		t.Fatal(err)
	}
	// The third comes back after its ack deadline: a redelivery.
	if again := pull(); len(again) != 1 || again[0].GetDeliveryAttempt() != 2 {
		t.Fatalf("pulled again %v, want the third expiration's second delivery", again)
	}

	checkMetrics(t, s, []wantSample{
		{name: "orderexpiry_serving", value: 1},
		{name: "orderexpiry_redis_maxmemory_bytes", labels: map[string]string{"redis": r.Addr}, value: maxmemory},
		{name: "orderexpiry_redis_memory_used_bytes", labels: map[string]string{"redis": r.Addr}, value: 100_000, atLeast: true},
		{name: "orderexpiry_group_oldest_unacked_age_seconds", labels: map[string]string{"group": "pay"}, value: 1, atLeast: true},
		{name: "orderexpiry_group_in_flight", labels: map[string]string{"group": "pay"}, value: 1},
		{name: "orderexpiry_group_redeliveries_total", labels: map[string]string{"group": "pay"}, value: 1},
		{name: "orderexpiry_push_deliveries_total", labels: map[string]string{"group": "hooks", "outcome": "failed"}, value: 1, atLeast: true},
	})
	// The push group's expirations end as dead letters (2 deliveries, each
	// refused by the endpoint).
	waitUntil(t, 15*time.Second, "dead letters in the push group", func() bool {
		v, err := sampleValue(s.scrape(t), "orderexpiry_group_dead_letters", map[string]string{"group": "hooks"})
		return err == nil && v > 0
	})

	exported := exportedNames(s.scrape(t))
	queries, err := deploycheck.AlertRules("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	panels, err := deploycheck.DashboardQueries("../../deploy/grafana/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	queries = append(queries, panels...)
	if len(queries) < 20 {
		t.Fatalf("%d queries in the alerts and the dashboard", len(queries))
	}
	for _, q := range queries {
		names, err := deploycheck.MetricNames(q.Expr)
		if err != nil {
			t.Errorf("%s: %v", q.Where, err)
		}
		for _, n := range names {
			if !exported[n] && !slices.Contains(madeByPrometheus, n) {
				t.Errorf("%s reads %s, which the server does not export", q.Where, n)
			}
		}
	}
}

// exportedNames are the series names of the scraped families: a
// histogram's _bucket, _sum and _count, a summary's _sum and _count.
func exportedNames(fams map[string]*dto.MetricFamily) map[string]bool {
	out := map[string]bool{}
	for name, f := range fams {
		if len(f.GetMetric()) == 0 {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			out[name+"_sum"], out[name+"_count"] = true, true
		default:
			out[name] = true
		}
	}
	return out
}
