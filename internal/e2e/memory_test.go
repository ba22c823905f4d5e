package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestRedisFull: once Redis reaches its maxmemory, a checkout is refused
// with RESOURCE_EXHAUSTED over gRPC and 429 over REST, with a message that
// names Redis's memory limit, and leaves no order behind; completing works
// and a pending order still expires to its watchers.
func TestRedisFull(t *testing.T) {
	if testing.Short() {
		t.Skip("Redis filled to its maxmemory: skipped with -short")
	}
	r := redistest.Start(t, "--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
	s := startServer(t, map[string]string{"REDIS_URL": r.URL()})
	ctx := t.Context()
	md := map[string]string{"cart": strings.Repeat("x", 1000)}
	w := s.watch(t, "")
	start := time.Now()

	// Orders due at several times: the first due after Redis is full, as
	// long as the fill takes (a busy machine makes it slower), is the one
	// that must expire on time in a full Redis.
	dues := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second}
	deadlines := map[string]time.Time{}
	for _, d := range dues {
		id := fmt.Sprintf("due-%v", d)
		o, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id, Ttl: ttl(d), Metadata: md})
		if err != nil {
			t.Fatal(err)
		}
		deadlines[id] = o.GetOrder().GetDeadline().AsTime()
	}
	var refused error
	n := 0
	for ; refused == nil; n++ {
		_, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprintf("fill-%d", n), Ttl: ttl(time.Hour), Metadata: md})
		switch {
		case err == nil:
		case status.Code(err) == codes.ResourceExhausted:
			refused = err
		default:
			t.Fatalf("checkout %d: %v; want OK or RESOURCE_EXHAUSTED", n, err)
		}
		if n > 10000 {
			t.Fatalf("%d checkouts of 1 KB taken by a Redis of 3 MB", n)
		}
	}
	full := time.Now()
	watched := ""
	for id, d := range deadlines {
		if d.After(full.Add(500*time.Millisecond)) && (watched == "" || d.Before(deadlines[watched])) {
			watched = id
		}
	}
	if watched == "" {
		t.Fatalf("filling Redis took until %v: every order due was due by then", full)
	}
	if msg := status.Convert(refused).Message(); !strings.Contains(msg, "maxmemory") {
		t.Errorf("gRPC refusal %q does not name Redis's maxmemory", msg)
	}
	code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"rest-refused","ttl":"60s","metadata":{"cart":"`+md["cart"]+`"}}`)
	if msg, _ := body["message"].(string); code != 429 || !strings.Contains(msg, "maxmemory") {
		t.Errorf("REST checkout in a full Redis: %d %v; want 429 with a message naming maxmemory", code, body)
	}
	for _, id := range []string{fmt.Sprintf("fill-%d", n-1), "rest-refused"} {
		if _, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: id}); status.Code(err) != codes.NotFound {
			t.Errorf("GetOrder(%s) after its refused checkout: %v; want NOT_FOUND", id, err)
		}
	}
	if o, err := s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: "fill-0"}); err != nil || o.GetStatus() != pb.OrderStatus_ORDER_STATUS_COMPLETED {
		t.Errorf("CompleteOrder in a full Redis: %v, %v; want it completed", o.GetStatus(), err)
	}
	var late time.Duration
	for {
		ev := w.next(t, 25*time.Second)
		if ev.GetOrderId() != watched {
			continue
		}
		late = ev.GetExpiredAt().AsTime().Sub(ev.GetDeadline().AsTime())
		if late > 250*time.Millisecond {
			t.Errorf("%s, due after Redis was full, expired %v after its deadline; want within 250ms", watched, late)
		}
		break
	}
	result(t, "checkouts_accepted=%d fill=%s refused_grpc=%q rest_status=%d due_order=%s lateness=%s",
		n-1+len(dues), full.Sub(start).Round(time.Millisecond), status.Convert(refused).Message(), code, watched, late.Round(time.Millisecond))
}

// TestEvictionPolicyUnsafe: a Redis switched to allkeys-lru at runtime is
// seen within the check period: health says NOT_SERVING, checkouts are
// refused with FAILED_PRECONDITION (409) saying which setting to change, the
// metric says 1 and the log names the setting, while the order pending
// before still expires on time. Switched back to noeviction, the server is
// SERVING again within a couple of seconds.
func TestEvictionPolicyUnsafe(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the eviction-policy check period: skipped with -short")
	}
	r := redistest.Start(t, "--maxmemory", "64mb", "--maxmemory-policy", "noeviction")
	admin := r.Client(t)
	s := startServer(t, map[string]string{"REDIS_URL": r.URL()})
	ctx := t.Context()
	unsafe := func(v float64) []wantSample {
		return []wantSample{{name: "orderexpiry_redis_eviction_policy_unsafe", value: v}}
	}
	checkMetrics(t, s, unsafe(0))
	w := s.watch(t, "")
	// Due after the change is seen: it is read every 10 s.
	if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "pending", Ttl: ttl(13 * time.Second)}); err != nil {
		t.Fatal(err)
	}

	if err := admin.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	waitHealth(t, s, healthpb.HealthCheckResponse_NOT_SERVING, 12*time.Second)
	seen := time.Since(changed)
	_, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "refused", Ttl: ttl(time.Minute)})
	if msg := status.Convert(err).Message(); status.Code(err) != codes.FailedPrecondition || !strings.Contains(msg, "maxmemory-policy allkeys-lru") || !strings.Contains(msg, "noeviction") {
		t.Errorf("checkout on allkeys-lru: %v; want FAILED_PRECONDITION naming maxmemory-policy allkeys-lru and noeviction", err)
	}
	code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"refused-rest","ttl":"60s"}`)
	if msg, _ := body["message"].(string); code != 409 || !strings.Contains(msg, "maxmemory-policy") {
		t.Errorf("REST checkout on allkeys-lru: %d %v; want 409 naming maxmemory-policy", code, body)
	}
	checkMetrics(t, s, unsafe(1))
	if logs := s.Logs(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "CONFIG SET maxmemory-policy noeviction") {
		t.Errorf("no error line names the setting to change; logs:\n%s", logs)
	}
	ev := w.next(t, 15*time.Second)
	late := ev.GetExpiredAt().AsTime().Sub(ev.GetDeadline().AsTime())
	if ev.GetOrderId() != "pending" || late > 250*time.Millisecond {
		t.Errorf("event %s %v after its deadline; want the pending order within 250ms", ev.GetOrderId(), late)
	}

	if err := admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	fixed := time.Now()
	waitHealth(t, s, healthpb.HealthCheckResponse_SERVING, 3*time.Second)
	back := time.Since(fixed)
	if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "accepted", Ttl: ttl(time.Minute)}); err != nil {
		t.Errorf("checkout on noeviction again: %v", err)
	}
	checkMetrics(t, s, unsafe(0))
	result(t, "unsafe_seen_after=%s serving_again_after=%s pending_order_lateness=%s",
		seen.Round(time.Millisecond), back.Round(time.Millisecond), late.Round(time.Millisecond))
}
