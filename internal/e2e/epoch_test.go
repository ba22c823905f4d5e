package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestRedisEmptied empties Redis (FLUSHALL) under a running server: health
// goes NOT_SERVING for a check and the log says what was lost, the store is
// renewed and health SERVING again, a watch resuming from a cursor of the
// lost history is refused as OUT_OF_RANGE (410 over REST), and orders
// checked out afterwards expire on time, also to a watch that was open
// through it all.
func TestRedisEmptied(t *testing.T) {
	r := redistest.Start(t)
	s := startServer(t, map[string]string{"REDIS_URL": r.URL()})
	ctx := context.Background()

	live := s.watch(t, "")
	if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "before", Ttl: ttl(100 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "lost", Ttl: ttl(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	ev := live.next(t, 5*time.Second)
	if ev.GetOrderId() != "before" {
		t.Fatalf("event for %q, want the expiry of before", ev.GetOrderId())
	}
	old := ev.GetCursor()

	// /healthz from the flush on: when it turns 503, and when 200 again.
	type turn struct {
		code int
		at   time.Time
	}
	turns := make(chan turn, 16)
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	go func() {
		last := http.StatusOK
		for pollCtx.Err() == nil {
			req, _ := s.newRequest(pollCtx, "GET", "/healthz", nil)
			if resp, err := s.HTTP.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode != last {
					last = resp.StatusCode
					turns <- turn{resp.StatusCode, time.Now()}
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	flushed := time.Now()
	if err := r.Client(t).FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	wait := func(code int) time.Time {
		t.Helper()
		select {
		case tr := <-turns:
			if tr.code != code {
				t.Fatalf("/healthz turned %d, want %d", tr.code, code)
			}
			return tr.at
		case <-time.After(5 * time.Second):
			t.Fatalf("/healthz did not turn %d within 5s of the FLUSHALL", code)
		}
		return time.Time{}
	}
	down := wait(http.StatusServiceUnavailable)
	up := wait(http.StatusOK)
	stopPoll()
	logs := s.Logs()
	if !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "Redis was emptied") || !strings.Contains(logs, "lost") {
		t.Errorf("no error in the log saying that Redis was emptied and what was lost:\n%s", logs)
	}

	// What Redis lost is gone; a watch from before it cannot resume.
	if _, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "lost"}); err == nil {
		t.Errorf("GetOrder(lost) found the order that FLUSHALL deleted")
	}
	// Bounded: a watch that is accepted stays silent, as it did before
	// the store had an epoch.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream, err := s.Client.WatchExpirations(wctx, &pb.WatchExpirationsRequest{AfterCursor: old})
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.OutOfRange)
	req, err := s.newRequest(wctx, "GET", "/v1/expirations:watch?after_cursor="+url.QueryEscape(old), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if resp.StatusCode != http.StatusOK {
		err = json.NewDecoder(resp.Body).Decode(&body)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone || err != nil || field(body, "code") != float64(codes.OutOfRange) {
		t.Errorf("REST watch after_cursor=%s: %s %v (%v), want 410 with code %d (OUT_OF_RANGE)", old, resp.Status, body, err, codes.OutOfRange)
	}

	// The service goes on: a new order expires on time, to a new watch and
	// to the one that was open through the FLUSHALL.
	fresh := s.watch(t, "")
	const due = 300 * time.Millisecond
	if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "after", Ttl: ttl(due)}); err != nil {
		t.Fatal(err)
	}
	var late time.Duration
	for name, w := range map[string]*watcher{"new watch": fresh, "watch open through the FLUSHALL": live} {
		ev := w.next(t, 5*time.Second)
		late = ev.GetExpiredAt().AsTime().Sub(ev.GetDeadline().AsTime())
		if ev.GetOrderId() != "after" || late < 0 || late > 250*time.Millisecond {
			t.Errorf("%s: %s expired %s after its deadline, want the order after within 250ms", name, ev.GetOrderId(), late)
		}
	}
	result(t, "flush_to_not_serving=%s not_serving_for=%s flush_to_serving=%s lateness_after=%s",
		down.Sub(flushed).Round(time.Millisecond), up.Sub(down).Round(time.Millisecond),
		up.Sub(flushed).Round(time.Millisecond), late.Round(time.Millisecond))
}
