package e2e

// Hostile push endpoints: each test stands up a webhook endpoint on
// loopback that answers as an attacker's would (headers without end, no
// answer at all) and checks, through the public ports, that a push group's
// memory, the other groups and the replica's stop stay within their
// bounds.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// hugeHeaderEndpoint answers every request with 200 and then about 9 MB of
// headers, as fast as the service reads them. It counts the requests it
// answered.
func hugeHeaderEndpoint(t *testing.T) (url string, answered *atomic.Int64) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var pad strings.Builder
	line := "X-Pad: " + strings.Repeat("p", 1000) + "\r\n"
	for pad.Len() < 9<<20 {
		pad.WriteString(line)
	}
	headers := []byte("HTTP/1.1 200 OK\r\n" + pad.String() + "Content-Length: 0\r\n\r\n")
	answered = &atomic.Int64{}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = lis.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				for {
					req, err := http.ReadRequest(r)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					answered.Add(1)
					if _, err := conn.Write(headers); err != nil {
						return
					}
				}
			})
		}
	})
	return "http://" + lis.Addr().String() + "/hook", answered
}

// TestHostilePushHeaders: an endpoint that answers 200 followed by 9 MB of
// headers, pushed to by two groups of max_concurrency 100, costs the
// server a bounded few MB, not the 9 MB per request in flight (2 GB) it
// once did; its answers fail the attempts, which are retried.
func TestHostilePushHeaders(t *testing.T) {
	if testing.Short() {
		t.Skip("9 MB of push response headers: skipped with -short")
	}
	t.Parallel()
	url, answered := hugeHeaderEndpoint(t)
	s := startProcess(t, nil, pushFlags...)
	ctx := context.Background()
	for _, id := range []string{"huge-a", "huge-b"} {
		if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: id, AckDeadline: durationpb.New(20 * time.Second), MaxDeliveries: 100,
			PushConfig: &pb.PushConfig{Url: url, Secret: pushSecret, MaxConcurrency: 100, Timeout: durationpb.New(10 * time.Second)}}); err != nil {
			t.Fatal(err)
		}
	}
	rssBefore := s.procStatus(t, "VmRSS")
	for i := range 200 {
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("huge-", i), Ttl: ttl(time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	peak := 0
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		peak = max(peak, s.procStatus(t, "VmRSS"))
	}
	hwm := s.procStatus(t, "VmHWM")
	if answered.Load() < 200 {
		t.Fatalf("the endpoint answered %d requests in 8s, want at least 200 (one per event and group)", answered.Load())
	}
	fams := s.scrape(t)
	acked, _ := sampleValue(fams, "orderexpiry_push_deliveries_total", map[string]string{"group": "huge-a", "outcome": "acked"})
	if acked != 0 {
		t.Errorf("%v attempts acknowledged by an answer whose headers pass the limit; want none", acked)
	}
	if failed, err := sampleValue(fams, "orderexpiry_push_deliveries_total", map[string]string{"group": "huge-a", "outcome": "unreachable"}); err != nil || failed == 0 {
		t.Errorf("attempts counted unreachable (headers past the limit): %v, %v; want some", failed, err)
	}
	result(t, "requests_answered=%d rss_before_mb=%d rss_peak_mb=%d vmhwm_mb=%d", answered.Load(), rssBefore>>10, peak>>10, hwm>>10)
	// 200 requests in flight with 16 KiB of headers each, and the
	// transport's buffers: some 20 MB over the start (100 MB allowed; the
	// race detector's shadow memory multiplies it), far under 9 MB each.
	limit := 100
	if raceEnabled {
		limit = 400
	}
	if grown := hwm - rssBefore; grown > limit<<10 {
		t.Errorf("the server grew by %d MB (VmHWM %d MB, %d MB before) against an endpoint answering 9 MB of headers; want under %d MB", grown>>10, hwm>>10, rssBefore>>10, limit)
	}
}

// hangingEndpoint holds every request open until the request is cancelled
// or the test ends. It counts the requests open, and those cancelled by the
// service (their connection closed).
type hangingEndpoint struct {
	url       string
	open      atomic.Int64
	cancelled atomic.Int64
	// answer, once closed, makes the endpoint answer 204 at once.
	answer   chan struct{}
	answered atomic.Int64
}

func startHangingEndpoint(t *testing.T) *hangingEndpoint {
	t.Helper()
	h := &hangingEndpoint{answer: make(chan struct{})}
	done := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h.open.Add(1)
		defer h.open.Add(-1)
		select {
		case <-h.answer:
			h.answered.Add(1)
			w.WriteHeader(http.StatusNoContent)
		case <-r.Context().Done():
			h.cancelled.Add(1)
		case <-done:
		}
	})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		close(done)
		_ = srv.Close()
	})
	h.url = "http://" + lis.Addr().String() + "/hook"
	return h
}

// TestHostilePushDeleteHung: deleting a push group whose endpoint hangs
// cancels its requests at once and never delays another group: a group
// created right after gets its first request within a couple of polls of
// the group list, not after the hung requests time out.
func TestHostilePushDeleteHung(t *testing.T) {
	t.Parallel()
	hung := startHangingEndpoint(t)
	good := startPushReceiver(t)
	s := startServer(t, nil, pushFlags...)
	ctx := context.Background()
	if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "hung", AckDeadline: durationpb.New(60 * time.Second), MaxDeliveries: 5,
		PushConfig: &pb.PushConfig{Url: hung.url, Secret: pushSecret, MaxConcurrency: 10, Timeout: durationpb.New(30 * time.Second)}}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("hung-", i), Ttl: ttl(time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "10 requests open at the hanging endpoint", func() bool { return hung.open.Load() == 10 })

	if _, err := s.Client.DeleteConsumerGroup(ctx, &pb.DeleteConsumerGroupRequest{GroupId: "hung"}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	time.Sleep(1500 * time.Millisecond) // the deliverer has seen the deletion
	if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "fresh", AckDeadline: durationpb.New(10 * time.Second),
		PushConfig: &pb.PushConfig{Url: good.url("/ok"), Secret: pushSecret}}); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "fresh-1", Ttl: ttl(time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	for good.acked("/ok") < 1 {
		if time.Since(created) > 40*time.Second {
			t.Fatal("the new group's endpoint got nothing within 40s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	delay := time.Since(created)
	waitUntil(t, 5*time.Second, "the deleted group's requests cancelled", func() bool { return hung.open.Load() == 0 })
	result(t, "first_push_of_new_group_after=%s deleted_group_requests_cancelled=%d/10 within=%s",
		delay.Round(time.Millisecond), hung.cancelled.Load(), time.Since(deleted).Round(time.Millisecond))
	// Two polls of the group list (1 s each) and the request: far under
	// the hung requests' 30 s timeout.
	if delay > 5*time.Second {
		t.Errorf("the group created after deleting a hung one got its first request %s later; want within 5s", delay)
	}
}

// TestHostilePushStop: SIGTERM while every push request hangs stops the
// process within -shutdown-timeout; the requests are cancelled and their
// events handed back uncounted, so that none is a dead letter (the group
// allows one delivery) and the next replica delivers them all.
func TestHostilePushStop(t *testing.T) {
	if testing.Short() {
		t.Skip("SIGTERM under hung push requests: skipped with -short")
	}
	t.Parallel()
	const shutdown = 3 * time.Second
	r := redistest.Start(t)
	env := map[string]string{"REDIS_URL": r.URL()}
	hung := startHangingEndpoint(t)
	flags := append([]string{"-shutdown-timeout", shutdown.String()}, pushFlags...)
	s := startProcess(t, env, flags...)
	ctx := context.Background()
	if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "stop", AckDeadline: durationpb.New(60 * time.Second), MaxDeliveries: 1,
		PushConfig: &pb.PushConfig{Url: hung.url, Secret: pushSecret, MaxConcurrency: 10, Timeout: durationpb.New(30 * time.Second)}}); err != nil {
		t.Fatal(err)
	}
	const n = 5
	for i := range n {
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("stop-", i), Ttl: ttl(time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "5 requests open at the hanging endpoint", func() bool { return hung.open.Load() == n })

	stopped := time.Now()
	if err := syscall.Kill(s.PID(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.proc.Exited():
	case <-time.After(90 * time.Second):
		t.Fatal("the server had not exited 90s after SIGTERM")
	}
	took := time.Since(stopped)
	result(t, "stop_took=%s shutdown_timeout=%s requests_cancelled=%d/%d", took.Round(time.Millisecond), shutdown, hung.cancelled.Load(), n)
	if took > shutdown+time.Second {
		t.Errorf("the stop took %s with -shutdown-timeout %s", took, shutdown)
	}

	// The next replica: the endpoint answers now.
	close(hung.answer)
	next := startServer(t, env, pushFlags...)
	waitUntil(t, 20*time.Second, "every event delivered by the next replica", func() bool { return hung.answered.Load() >= n })
	g, err := next.Client.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: "stop"})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the group settled", func() bool {
		g, err = next.Client.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: "stop"})
		return err == nil && g.GetInFlight() == 0 && g.GetBacklog() == 0
	})
	if g.GetDeadLetters() != 0 {
		t.Errorf("%d dead letters after the stop; want none: an attempt cut short by a stop is not counted", g.GetDeadLetters())
	}
}
