package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestGroupsFileAfterFlush: two replicas run with a groups file that
// declares a pull group and a push group. FLUSHALL under them: the epoch
// log line names the groups lost, the replicas create them again, and the
// consumer (which opens its stream again) and the push endpoint receive the
// expirations after the flush.
func TestGroupsFileAfterFlush(t *testing.T) {
	faultTest(t)
	r := redistest.Start(t)
	rcv := startPushReceiver(t)
	file := filepath.Join(t.TempDir(), "groups.yaml")
	yaml := fmt.Sprintf(`# the groups every replica keeps
groups:
  - group_id: pay
    ack_deadline: 5s
    max_deliveries: 3
  - group_id: hook
    push_config:
      url: %q
      secret: %q
`, rcv.url("/gf"), pushSecret)
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"REDIS_URL": r.URL()}
	flags := append([]string{"-groups-file", file}, pushFlags...)
	a, b := startServer(t, env, flags...), startServer(t, env, flags...)

	waitGroup := func(id string, timeout time.Duration) *pb.ConsumerGroup {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			g, err := b.Client.GetConsumerGroup(context.Background(), &pb.GetConsumerGroupRequest{GroupId: id})
			if err == nil {
				return g
			}
			if time.Now().After(deadline) {
				t.Fatalf("group %s: %v %s after the start or the flush", id, err, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// fromFile waits for the file's groups, as the file says them.
	fromFile := func(when string, timeout time.Duration) {
		t.Helper()
		if g := waitGroup("pay", timeout); g.GetAckDeadline().AsDuration() != 5*time.Second || g.GetMaxDeliveries() != 3 {
			t.Errorf("group pay from the file %s: %v", when, g)
		}
		if g := waitGroup("hook", timeout); g.GetPushConfig().GetUrl() != rcv.url("/gf") {
			t.Errorf("group hook from the file %s: %v", when, g)
		}
	}
	fromFile("at the start", 5*time.Second)

	g := newGFGroup("pay")
	c := startGFConsumer(g, "pay-0", gfKeeps, roundRobin(a, b), 100)
	t.Cleanup(func() { c.stop() })
	received := func(id string, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			ds, _ := g.snapshot()
			got := false
			for _, d := range ds {
				got = got || d.orderID == id
			}
			pushed := len(rcv.byID("/gf")) > 0 && pushedOrder(rcv, "/gf", id)
			if got && pushed {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: delivered to the consumer %v, pushed %v, within %s", id, got, pushed, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if _, err := a.Client.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: "gf-before", Ttl: ttl(100 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	received("gf-before", 10*time.Second)
	// Each replica learns the store's groups at its health check, once a
	// second: the flush comes after one that saw them.
	time.Sleep(1500 * time.Millisecond)

	if err := r.Client(t).FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	flushed := time.Now()
	fromFile("after the flush", 10*time.Second)
	back := time.Since(flushed)
	for name, s := range map[string]*server{"a": a, "b": b} {
		if logs := s.Logs(); !strings.Contains(logs, "groups_lost=hook,pay") {
			t.Errorf("replica %s: no epoch log line names the groups lost (groups_lost=hook,pay):\n%s", name, logs)
		}
	}
	// The store serves again, and so do the groups: a checkout after the
	// flush reaches the consumer and the endpoint.
	for {
		_, err := a.Client.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: "gf-after", Ttl: ttl(100 * time.Millisecond)})
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || time.Since(flushed) > 10*time.Second {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	received("gf-after", 15*time.Second)
	result(t, "groups_back_after_flush=%s", back.Round(time.Millisecond))
}

// pushedOrder says whether the receiver got an expiration of id at path.
func pushedOrder(r *pushReceiver, path, id string) bool {
	for _, as := range r.byID(path) {
		for _, a := range as {
			if a.event.GetOrderId() == id && a.answered/100 == 2 {
				return true
			}
		}
	}
	return false
}
