package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestLogRewind restarts Redis from a copy of its data taken before the
// last expirations, as a crash with appendfsync everysec (or a restore
// from a backup) does: the log loses its tail, and the orders of the lost
// expirations are pending again, past their deadline. They expire again,
// with new cursors; the live watchers on both replicas and the group,
// which had them, receive none of them twice, and nothing is lost: every
// order reaches every watcher and the group once, the orders that were
// pending at the crash included, and a new watch reads each order once in
// the log.
func TestLogRewind(t *testing.T) {
	faultTest(t)
	r := redistest.Start(t)
	env := map[string]string{"REDIS_URL": r.URL()}
	a, b := startServer(t, env), startServer(t, env)
	fa, fb := follow(t, func() *server { return a }, "0-0"), follow(t, func() *server { return b }, "0-0")
	if _, err := a.Client.CreateConsumerGroup(context.Background(), &pb.CreateConsumerGroupRequest{GroupId: "rw", AckDeadline: durationpb.New(5 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	g := newGFGroup("rw")
	c := startGFConsumer(g, "rw-0", gfKeeps, func() *server { return a }, 100)
	t.Cleanup(func() { c.stop() })

	// kept: expire before the copy is taken. lost: expire after it, before
	// the crash. later: pending at the crash, due after the restart.
	const each = 100
	kept := schedule{first: time.Now().Add(time.Second), step: 5 * time.Millisecond}
	lost := schedule{first: kept.due(each).Add(3 * time.Second), step: 5 * time.Millisecond}
	later := schedule{first: lost.due(each).Add(5 * time.Second), step: 5 * time.Millisecond}
	var acked []string
	for _, batch := range []struct {
		prefix string
		s      schedule
	}{{"kept-", kept}, {"lost-", lost}, {"later-", later}} {
		acked = append(acked, checkoutAll(t, roundRobin(a, b), ids(batch.prefix, each), batch.s.due)...)
	}

	// The copy: the kept orders expired, delivered to the group and
	// acknowledged; the lost and later ones pending.
	fa.waitFor(t, each, 10*time.Second)
	fb.waitFor(t, each, 10*time.Second)
	waitSettled(t, a, "rw", 10*time.Second)
	if time.Now().After(lost.due(0)) {
		t.Fatalf("the copy came after the first lost order was due: the machine is too slow for this schedule")
	}
	admin := r.Client(t)
	if err := admin.Save(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	dump := filepath.Join(r.Dir(), "dump.rdb")
	old, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}

	// The lost orders expire, reach everyone, and are acknowledged.
	fa.waitFor(t, 2*each, 10*time.Second)
	fb.waitFor(t, 2*each, 10*time.Second)
	waitSettled(t, a, "rw", 10*time.Second)
	if time.Now().After(later.due(0)) {
		t.Fatalf("the crash came after the first later order was due: the machine is too slow for this schedule")
	}

	// Redis restarts from the copy.
	r.Kill()
	if err := os.WriteFile(dump, old, 0o644); err != nil {
		t.Fatal(err)
	}
	r.Restart(t)
	restarted := time.Now()
	log := readLog(t, roundRobin(a, b), acked, 20*time.Second)
	fa.waitFor(t, 3*each, 20*time.Second)
	fb.waitFor(t, 3*each, 20*time.Second)
	time.Sleep(time.Second) // repeats, were any sent, would come by now
	waitSettled(t, a, "rw", 10*time.Second)

	// The log lost the lost orders' first expirations and holds their
	// second ones: each order once.
	l := tally(acked, log)
	reemitted := 0
	for _, e := range log {
		if len(e.orderID) > 5 && e.orderID[:5] == "lost-" {
			reemitted++
		}
	}
	if l.Lost > 0 || l.Doubled > 0 || reemitted != each {
		t.Errorf("after the restart the log holds %d events: %d orders lost, %d doubled, %d of the %d lost expirations logged again", l.Events, l.Lost, l.Doubled, reemitted, each)
	}
	for name, f := range map[string]*follower{"a": fa, "b": fb} {
		seen := map[string]int{}
		for _, ev := range f.received() {
			seen[ev.GetOrderId()]++
		}
		for _, id := range acked {
			if seen[id] != 1 {
				t.Errorf("the watcher on replica %s received %s %d times, want once", name, id, seen[id])
			}
		}
	}
	// Both replicas noticed that the log went back.
	for name, s := range map[string]*server{"a": a, "b": b} {
		if !strings.Contains(s.Logs(), "the expiration log went back") {
			t.Errorf("replica %s did not log that the expiration log went back", name)
		}
		if n := s.gauge(t, "orderexpiry_log_rewinds_total"); n != 1 {
			t.Errorf("replica %s: orderexpiry_log_rewinds_total = %d, want 1", name, n)
		}
		// Its watcher skipped the 100 repeats; replica a's group too.
		if n := s.gauge(t, "orderexpiry_expiration_repeats_skipped_total"); n < each {
			t.Errorf("replica %s: orderexpiry_expiration_repeats_skipped_total = %d, want %d or more", name, n, each)
		}
	}
	ds, _ := g.snapshot()
	delivered := map[string]int{}
	for _, d := range ds {
		delivered[d.orderID]++
	}
	for _, id := range acked {
		if delivered[id] != 1 {
			t.Errorf("the group was delivered %s %d times, want once", id, delivered[id])
		}
	}
	result(t, "orders=%d log_events=%d reemitted=%d lost=%d doubled=%d group_deliveries=%d watcher_a=%d watcher_b=%d settled_after_restart=%s",
		len(acked), l.Events, reemitted, l.Lost, l.Doubled, len(ds), len(fa.received()), len(fb.received()), time.Since(restarted).Round(time.Millisecond))
}

// waitSettled waits until a group has no backlog and nothing in flight.
func waitSettled(t *testing.T, s *server, group string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		g, err := s.Client.GetConsumerGroup(context.Background(), &pb.GetConsumerGroupRequest{GroupId: group})
		if err == nil && g.GetBacklog() == 0 && g.GetInFlight() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s did not settle within %s: %v %v", group, timeout, g, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
