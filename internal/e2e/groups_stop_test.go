package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestGroupsGracefulStop: SIGTERM ends consume streams and long pulls at
// once, as it ends watches, instead of waiting out the shutdown timeout.
// Each stream, over gRPC and REST, ends UNAVAILABLE after handing its
// unacknowledged deliveries back to the group: on Redis another replica
// gets them again at once, with attempt 2, not after their ack deadline.
// Each pull, over gRPC and REST, answers what it has (nothing).
func TestGroupsGracefulStop(t *testing.T) {
	const shutdownTimeout = 10 * time.Second
	for _, backend := range []string{"memory", "redis"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			if backend == "redis" {
				env["REDIS_URL"] = redistest.Start(t).URL()
			}
			s := startProcess(t, env, "-shutdown-timeout", shutdownTimeout.String())
			ctx := context.Background()
			// The ack deadline is longer than the test: only a hand-back
			// makes the events ready again while it runs.
			if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "stop", AckDeadline: durationpb.New(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			c := s.consume(t, "stop", "x", 10)
			rc := restConsume(t, s, "stop", "y")
			const n = 4
			for i := range n {
				if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("stop-", i), Ttl: ttl(50 * time.Millisecond)}); err != nil {
					t.Fatal(err)
				}
			}
			// The two streams share the events; neither acknowledges any.
			held := map[string]bool{}
			viaREST := 0
			for len(held) < n {
				select {
				case d := <-c.deliveries:
					held[d.GetEvent().GetOrderId()] = true
				case l := <-rc.lines:
					id, _ := field(l, "event", "orderId").(string)
					if id == "" {
						t.Fatalf("REST consume line %v", l)
					}
					held[id] = true
					viaREST++
				case err := <-c.done:
					t.Fatalf("the gRPC stream ended: %v", err)
				case <-time.After(5 * time.Second):
					t.Fatalf("%d of %d events delivered: %v", len(held), n, held)
				}
			}

			t.Logf("%d of the %d events held by the gRPC stream, %d by the REST one", n-viaREST, n, viaREST)

			// Two pulls wait for events that will not come before the
			// stop: one over gRPC, one over REST.
			pulls := make(chan string, 2)
			go func() {
				resp, err := s.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "stop", Wait: durationpb.New(30 * time.Second)})
				pulls <- fmt.Sprintf("gRPC pull: %d events, %v", len(resp.GetReceivedExpirations()), err)
			}()
			go func() {
				pulls <- "REST pull: " + restPull(s, "stop", `{"wait":"30s"}`)
			}()
			waitOpen(t, s, "PullExpirations", "unary", "at least 2", func(open int) bool { return open >= 2 })

			begin := time.Now()
			if !s.Stop(syscall.SIGTERM) {
				t.Fatal("the server did not stop within 15s of SIGTERM")
			}
			took := time.Since(begin)
			t.Logf("stopped in %s", took.Round(time.Millisecond))
			if code := s.ExitCode(); code != 0 {
				t.Fatalf("exit code %d after SIGTERM", code)
			}
			if took > shutdownTimeout/3 {
				t.Errorf("the stop took %s with a consume stream and pulls open; want well under the shutdown timeout of %s", took.Round(time.Millisecond), shutdownTimeout)
			}
			if strings.Contains(s.Logs(), "did not stop in time") || strings.Contains(s.Logs(), "could not hand") {
				t.Errorf("the stop cut calls or lost a hand-back:\n%s", s.Logs())
			}
			select {
			case err := <-c.done:
				wantCode(t, err, codes.Unavailable)
				if msg := status.Convert(err).Message(); msg != "the server is shutting down; reconnect" {
					t.Errorf("the stream ended with %q", msg)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the consume stream did not end")
			}
			last := rc.next(t)
			if field(last, "error", "status") != "UNAVAILABLE" || field(last, "error", "message") != "the server is shutting down; reconnect" {
				t.Errorf("last REST consume line: %v", last)
			}
			if l, ok := <-rc.lines; ok {
				t.Errorf("the REST consume stream went on after its error line: %v", l)
			}
			for range 2 {
				select {
				case got := <-pulls:
					if !strings.HasSuffix(got, "0 events, <nil>") {
						t.Errorf("%s; want an answer with 0 events", got)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("a pull got no answer")
				}
			}

			if backend != "redis" {
				return // the memory store's events end with its process
			}
			// Another replica of the same Redis gets the stream's events at
			// once, as second attempts.
			b := startServer(t, env)
			resp, err := b.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "stop", Wait: durationpb.New(0)})
			if err != nil {
				t.Fatal(err)
			}
			again := map[string]bool{}
			for _, d := range resp.GetReceivedExpirations() {
				if d.GetDeliveryAttempt() != 2 {
					t.Errorf("delivered again as attempt %d, want 2: %v", d.GetDeliveryAttempt(), d)
				}
				again[d.GetEvent().GetOrderId()] = true
			}
			if !maps.Equal(again, held) {
				g, _ := b.Client.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: "stop"})
				t.Fatalf("another replica got %v at once, want the stream's %v; the group: %v", again, held, g)
			}
		})
	}
}

// restConsume opens GET /v1/groups/{group}/expirations:consume as consumer
// and reads its lines.
func restConsume(t *testing.T, s *server, group, consumer string) *ndjson {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := s.newRequest(ctx, "GET", "/v1/groups/"+group+"/expirations:consume?consumer="+consumer, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("consume: %s", resp.Status)
	}
	return readNDJSON(resp.Body, cancel)
}

// restPull pulls over REST and describes the answer as the gRPC pull's
// goroutine does.
func restPull(s *server, group, body string) string {
	req, err := s.newRequest(context.Background(), "POST", "/v1/groups/"+group+":pull", strings.NewReader(body))
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err.Error()
	}
	var out struct {
		ReceivedExpirations []json.RawMessage `json:"receivedExpirations"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &out) != nil {
		return fmt.Sprintf("HTTP %d %s", resp.StatusCode, raw)
	}
	return fmt.Sprintf("%d events, <nil>", len(out.ReceivedExpirations))
}

// waitOpen waits until the calls of method (of grpc_type typ) open on s,
// by its metrics (calls started and not handled yet), are as ok wants
// (want says so).
func waitOpen(t *testing.T, s *server, method, typ, want string, ok func(open int) bool) {
	t.Helper()
	labels := map[string]string{"grpc_service": "orderexpiry.v1.OrderService", "grpc_method": method, "grpc_type": typ}
	deadline := time.Now().Add(5 * time.Second)
	for {
		fams := s.scrape(t)
		started, _ := sampleValue(fams, "grpc_server_started_total", labels)
		handled := 0.0
		if fam := fams["grpc_server_handled_total"]; fam != nil {
			for _, m := range fam.GetMetric() {
				if hasLabels(m, labels) {
					handled += m.GetCounter().GetValue()
				}
			}
		}
		if ok(int(started - handled)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%g %s calls open after 5s, want %s", started-handled, method, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
