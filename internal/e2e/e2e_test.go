package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/google/go-cmp/cmp"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// backends runs a test against the server on each store: the embedded one
// and a real redis-server started for the test.
func backends(t *testing.T, test func(t *testing.T, start func(t *testing.T) *server)) {
	backendsWith(t, serverOptions{}, test)
}

// backendsWith is backends for servers started with opts.
func backendsWith(t *testing.T, opts serverOptions, test func(t *testing.T, start func(t *testing.T) *server)) {
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		test(t, func(t *testing.T) *server { return startServerWith(t, opts, nil) })
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		test(t, func(t *testing.T) *server {
			r := redistest.Start(t)
			return startServerWith(t, opts, map[string]string{"REDIS_URL": r.URL()})
		})
	})
}

func ttl(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("got %v (%v), want %v", got, err, want)
	}
}

// TestLifecycleGRPC: checkout → watch → expire → GetOrder EXPIRED; complete;
// cancel; retries; through the gRPC port.
func TestLifecycleGRPC(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := context.Background()
		w := s.watch(t, "")

		md := map[string]string{"customer": "c-42", "note": "gift wrap"}
		res, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "ord-1", Ttl: ttl(300 * time.Millisecond), Metadata: md})
		if err != nil {
			t.Fatal(err)
		}
		o := res.GetOrder()
		if !res.GetCreated() || o.GetStatus() != pb.OrderStatus_ORDER_STATUS_PENDING {
			t.Fatalf("checkout: %v", res)
		}
		if d := o.GetDeadline().AsTime().Sub(o.GetCreatedAt().AsTime()); d != 300*time.Millisecond {
			t.Fatalf("deadline - created_at = %s, want 300ms", d)
		}
		if r := o.GetTtlRemaining().AsDuration(); r <= 0 || r > 300*time.Millisecond {
			t.Fatalf("ttl_remaining = %s", r)
		}
		// A retry of the same request changes nothing; another request
		// under the pending id is refused, and changes nothing either.
		_, err = s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "ord-1", Ttl: ttl(time.Hour), Metadata: md})
		wantCode(t, err, codes.AlreadyExists)
		again, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "ord-1", Ttl: ttl(300 * time.Millisecond), Metadata: md})
		if err != nil {
			t.Fatal(err)
		}
		if again.GetCreated() || !again.GetOrder().GetDeadline().AsTime().Equal(o.GetDeadline().AsTime()) ||
			!cmp.Equal(again.GetOrder().GetMetadata(), md) {
			t.Fatalf("retry changed the order: %v", again)
		}

		ev := w.next(t, 5*time.Second)
		want := &pb.ExpirationEvent{OrderId: "ord-1", Deadline: o.GetDeadline(), Metadata: md}
		if diff := cmp.Diff(want, ev, protocmp.Transform(), protocmp.IgnoreFields(&pb.ExpirationEvent{}, "cursor", "expired_at")); diff != "" {
			t.Fatalf("event (-want +got):\n%s", diff)
		}
		if late := ev.GetExpiredAt().AsTime().Sub(ev.GetDeadline().AsTime()); late < 0 || late > time.Second {
			t.Fatalf("expired_at - deadline = %s", late)
		}
		got, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "ord-1"})
		if err != nil {
			t.Fatal(err)
		}
		if got.GetStatus() != pb.OrderStatus_ORDER_STATUS_EXPIRED || !got.GetClosedAt().AsTime().Equal(ev.GetExpiredAt().AsTime()) || got.GetTtlRemaining() != nil {
			t.Fatalf("after expiry: %v", got)
		}
		_, err = s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: "ord-1"})
		wantCode(t, err, codes.FailedPrecondition)

		// Completed and cancelled orders never expire.
		for _, id := range []string{"ord-2", "ord-3"} {
			if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id, Ttl: ttl(300 * time.Millisecond)}); err != nil {
				t.Fatal(err)
			}
		}
		done, err := s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: "ord-2"})
		if err != nil || done.GetStatus() != pb.OrderStatus_ORDER_STATUS_COMPLETED || done.GetClosedAt() == nil {
			t.Fatalf("complete: %v, %v", done, err)
		}
		gone, err := s.Client.CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: "ord-3"})
		if err != nil || gone.GetStatus() != pb.OrderStatus_ORDER_STATUS_CANCELLED {
			t.Fatalf("cancel: %v, %v", gone, err)
		}
		_, err = s.Client.CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: "ord-2"})
		wantCode(t, err, codes.FailedPrecondition)
		_, err = s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: "ord-3"})
		wantCode(t, err, codes.FailedPrecondition)
		_, err = s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: "nobody"})
		wantCode(t, err, codes.NotFound)
		_, err = s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "nobody"})
		wantCode(t, err, codes.NotFound)
		w.quiet(t, 600*time.Millisecond)

		// A closed id can be checked out again.
		re, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "ord-2", Ttl: ttl(100 * time.Millisecond)})
		if err != nil || !re.GetCreated() || re.GetOrder().GetStatus() != pb.OrderStatus_ORDER_STATUS_PENDING {
			t.Fatalf("re-checkout: %v, %v", re, err)
		}
		if ev := w.next(t, 5*time.Second); ev.GetOrderId() != "ord-2" {
			t.Fatalf("event for %q, want ord-2", ev.GetOrderId())
		}
		w.quiet(t, 300*time.Millisecond)
	})
}

// TestBadInputGRPC: each invalid request gets INVALID_ARGUMENT naming the
// field, and writes nothing.
func TestBadInputGRPC(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := context.Background()
		many := map[string]string{}
		for i := range 40 {
			many[fmt.Sprint("k", i)] = "v"
		}
		tests := []struct {
			name    string
			req     *pb.CheckoutRequest
			mention string
		}{
			{"empty id", &pb.CheckoutRequest{}, "order_id"},
			{"long id", &pb.CheckoutRequest{OrderId: strings.Repeat("x", 129)}, "order_id"},
			{"non-printable id", &pb.CheckoutRequest{OrderId: "a\x01b"}, "order_id"},
			{"colon in id", &pb.CheckoutRequest{OrderId: "a:b"}, "order_id"},
			{"slash in id", &pb.CheckoutRequest{OrderId: "a/b"}, "order_id"},
			{"brace in id", &pb.CheckoutRequest{OrderId: "a{b}"}, "order_id"},
			{"space in id", &pb.CheckoutRequest{OrderId: "a b"}, "order_id"},
			{"zero ttl", &pb.CheckoutRequest{OrderId: "bad-1", Ttl: ttl(0)}, "ttl"},
			{"negative ttl", &pb.CheckoutRequest{OrderId: "bad-2", Ttl: ttl(-time.Second)}, "ttl"},
			{"ttl above max", &pb.CheckoutRequest{OrderId: "bad-3", Ttl: ttl(1000 * time.Hour)}, "ttl"},
			{"too many metadata entries", &pb.CheckoutRequest{OrderId: "bad-4", Metadata: many}, "metadata"},
			{"metadata value too long", &pb.CheckoutRequest{OrderId: "bad-5", Metadata: map[string]string{"k": strings.Repeat("v", 2000)}}, "metadata"},
			{"empty metadata key", &pb.CheckoutRequest{OrderId: "bad-6", Metadata: map[string]string{"": "v"}}, "metadata"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_, err := s.Client.Checkout(ctx, tc.req)
				wantCode(t, err, codes.InvalidArgument)
				if msg := status.Convert(err).Message(); !strings.Contains(msg, tc.mention) {
					t.Fatalf("message %q does not name %q", msg, tc.mention)
				}
				if tc.req.GetOrderId() != "" && !strings.ContainsAny(tc.req.GetOrderId(), ":/{} \x01") && len(tc.req.GetOrderId()) <= 128 {
					_, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: tc.req.GetOrderId()})
					wantCode(t, err, codes.NotFound)
				}
			})
		}
		_, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "a:b"})
		wantCode(t, err, codes.InvalidArgument)
		for _, c := range []string{"nope", "1-", "-1", "x-1", "1-2-3"} {
			stream, err := s.Client.WatchExpirations(ctx, &pb.WatchExpirationsRequest{AfterCursor: c})
			if err == nil {
				_, err = stream.Recv()
			}
			wantCode(t, err, codes.InvalidArgument)
		}
		for _, c := range []string{"1-0", fmt.Sprintf("%d-0", time.Now().Add(time.Hour).UnixMilli())} {
			stream, err := s.Client.WatchExpirations(ctx, &pb.WatchExpirationsRequest{AfterCursor: c})
			if err == nil {
				_, err = stream.Recv()
			}
			wantCode(t, err, codes.OutOfRange)
		}
	})
}

// TestREST drives the same life cycle through the REST port, with the
// newline-delimited JSON watch, and checks each error's HTTP status.
func TestREST(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		lines := s.restWatch(t, "")

		code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"r-1","ttl":"0.3s","metadata":{"customer":"c-7"}}`)
		if code != 200 || body["created"] != true || field(body, "order", "status") != "ORDER_STATUS_PENDING" {
			t.Fatalf("checkout: %d %v", code, body)
		}
		code, body = s.restCall(t, "POST", "/v1/orders", `{"order_id":"r-1","ttl":"0.3s","metadata":{"customer":"c-7"}}`)
		if code != 200 || body["created"] != false {
			t.Fatalf("retry: %d %v", code, body)
		}
		code, body = s.restCall(t, "POST", "/v1/orders", `{"order_id":"r-1","ttl":"30s"}`)
		if code != 409 {
			t.Fatalf("another request under the pending id: %d %v, want 409", code, body)
		}
		ev := lines.next(t)
		if ev["orderId"] != "r-1" || field(ev, "metadata", "customer") != "c-7" || ev["cursor"] == "" {
			t.Fatalf("event line: %v", ev)
		}
		code, body = s.restCall(t, "GET", "/v1/orders/r-1", "")
		if code != 200 || body["status"] != "ORDER_STATUS_EXPIRED" || body["closedAt"] == nil {
			t.Fatalf("get: %d %v", code, body)
		}

		for _, op := range []string{"complete", "cancel"} {
			id := "r-" + op
			if code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"`+id+`","ttl":"60s"}`); code != 200 {
				t.Fatalf("checkout: %d %v", code, body)
			}
			code, body := s.restCall(t, "POST", "/v1/orders/"+id+":"+op, "")
			if want := map[string]string{"complete": "ORDER_STATUS_COMPLETED", "cancel": "ORDER_STATUS_CANCELLED"}[op]; code != 200 || body["status"] != want {
				t.Fatalf("%s: %d %v", op, code, body)
			}
		}

		cursor := ev["cursor"].(string)
		tests := []struct {
			name, method, path, body string
			status                   int
			mention                  string
		}{
			{"not JSON", "POST", "/v1/orders", `{"orderId":`, 400, "request body"},
			{"unknown field", "POST", "/v1/orders", `{"orderId":"x-1","colour":"red"}`, 400, "colour"},
			{"wrong type", "POST", "/v1/orders", `{"orderId":"x-1","ttl":5}`, 400, `field "ttl"`},
			{"empty id", "POST", "/v1/orders", `{}`, 400, "order_id"},
			{"long id", "POST", "/v1/orders", `{"orderId":"` + strings.Repeat("y", 200) + `"}`, 400, "order_id"},
			{"zero ttl", "POST", "/v1/orders", `{"orderId":"x-2","ttl":"0s"}`, 400, "ttl"},
			{"negative ttl", "POST", "/v1/orders", `{"orderId":"x-3","ttl":"-5s"}`, 400, "ttl"},
			{"ttl above max", "POST", "/v1/orders", `{"orderId":"x-4","ttl":"9999999s"}`, 400, "ttl"},
			{"bad id in path", "GET", "/v1/orders/a%20b", "", 400, "order_id"},
			{"id in path not UTF-8", "GET", "/v1/orders/%FF", "", 400, "order_id"},
			{"id in path not UTF-8, complete", "POST", "/v1/orders/%FF:complete", "", 400, "order_id"},
			{"unknown order", "GET", "/v1/orders/none-such", "", 404, "not found"},
			{"complete unknown", "POST", "/v1/orders/none-such:complete", "", 404, "not found"},
			{"complete expired", "POST", "/v1/orders/r-1:complete", "", 409, "expired"},
			{"cancel completed", "POST", "/v1/orders/r-complete:cancel", "", 409, "completed"},
			{"bad cursor", "GET", "/v1/expirations:watch?after_cursor=abc", "", 400, "after_cursor"},
			{"unknown watch parameter", "GET", "/v1/expirations:watch?aftercursor=" + cursor, "", 400, "aftercursor"},
			{"cursor past retention", "GET", "/v1/expirations:watch?after_cursor=5-0", "", 410, "retention"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				code, body := s.restCall(t, tc.method, tc.path, tc.body)
				msg, _ := body["message"].(string)
				if code != tc.status || !strings.Contains(msg, tc.mention) {
					t.Fatalf("got %d %v, want %d with a message naming %q", code, body, tc.status, tc.mention)
				}
			})
		}
		for _, id := range []string{"x-1", "x-2", "x-3", "x-4"} {
			if code, _ := s.restCall(t, "GET", "/v1/orders/"+id, ""); code != 404 {
				t.Fatalf("%s was written by a rejected checkout (GET says %d)", id, code)
			}
		}

		code, body = s.restCall(t, "GET", "/healthz", "")
		if code != 200 || body["status"] != "SERVING" {
			t.Fatalf("healthz: %d %v", code, body)
		}
	})
}

// ndjson reads the lines of a REST watch.
type ndjson struct {
	lines  chan map[string]any
	cancel context.CancelFunc
}

// restWatch opens GET /v1/expirations:watch and waits for its status line,
// which the server sends as soon as it accepts the watch.
func (s *server) restWatch(t *testing.T, after string) *ndjson {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	url := "http://" + s.HTTPAddr + "/v1/expirations:watch"
	if after != "" {
		url += "?after_cursor=" + after
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("watch: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	return readNDJSON(resp.Body, cancel)
}

// readNDJSON reads the lines of a watch's body as they come, each decoded
// as a JSON object (or kept whole under "unparsable").
func readNDJSON(body io.ReadCloser, cancel context.CancelFunc) *ndjson {
	n := &ndjson{lines: make(chan map[string]any, 10000), cancel: cancel}
	go func() {
		defer body.Close()
		defer close(n.lines)
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"unparsable": sc.Text()}
			}
			n.lines <- m
		}
	}()
	return n
}

func (n *ndjson) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case m, ok := <-n.lines:
		if !ok {
			t.Fatal("watch ended")
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no line within 5s")
	}
	return nil
}

func field(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

// TestResumeAfterCursor: a watcher that goes away and comes back with the
// cursor of the last event it saw receives every expiration it missed, in
// order, once, and then the live ones.
func TestResumeAfterCursor(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := context.Background()
		checkout := func(from, to int) {
			for i := from; i < to; i++ {
				if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("res-", i), Ttl: ttl(time.Duration(50+i) * time.Millisecond)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		w := s.watch(t, "")
		checkout(0, 5)
		first := w.collect(t, 5, 5*time.Second)
		w.cancel()
		resume := first[2].GetCursor()

		checkout(5, 25) // expire while nobody watches
		deadline := time.Now().Add(5 * time.Second)
		for {
			o, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "res-24"})
			if err != nil {
				t.Fatal(err)
			}
			if o.GetStatus() == pb.OrderStatus_ORDER_STATUS_EXPIRED {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("res-24 did not expire")
			}
			time.Sleep(20 * time.Millisecond)
		}

		back := s.watch(t, resume)
		rest := back.collect(t, 22, 5*time.Second) // res-3 … res-24
		checkout(25, 28)
		rest = append(rest, back.collect(t, 3, 5*time.Second)...)
		back.quiet(t, 200*time.Millisecond)
		var ids []string
		prev := resume
		for _, ev := range rest {
			ids = append(ids, ev.GetOrderId())
			if !cursorLess(prev, ev.GetCursor()) {
				t.Fatalf("cursor %s does not follow %s", ev.GetCursor(), prev)
			}
			prev = ev.GetCursor()
		}
		var want []string
		for i := 3; i < 28; i++ {
			want = append(want, fmt.Sprint("res-", i))
		}
		if diff := cmp.Diff(want, ids); diff != "" {
			t.Fatalf("resumed events (-want +got):\n%s", diff)
		}

		// The same through REST, from the same cursor.
		lines := s.restWatch(t, resume)
		for i := 3; i < 28; i++ {
			if l := lines.next(t); l["orderId"] != fmt.Sprint("res-", i) {
				t.Fatalf("REST replay line %d: %v", i, l)
			}
		}
	})
}

func cursorLess(a, b string) bool {
	var am, as, bm, bs uint64
	fmt.Sscanf(a, "%d-%d", &am, &as)
	fmt.Sscanf(b, "%d-%d", &bm, &bs)
	return am < bm || (am == bm && as < bs)
}

// TestCompleteRacesExpiry: many orders are completed right at their
// deadline while the server expires them; each ends exactly one way. Both
// sides of the race must be reached: a completion accepted shortly before
// its deadline and one refused shortly after, or the test proves nothing.
func TestCompleteRacesExpiry(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := context.Background()
		w := s.watch(t, "")
		const n = 400
		// The calls are aimed to reach the service from 2*band before their
		// order's deadline to band after it: on a busy machine, calls are
		// late rather than early. The test wants a completion accepted
		// within band before its deadline, and one refused within band of
		// it.
		const band = 15 * time.Millisecond
		// Each call is sent half a round trip ahead of when it is to reach
		// the service, measured with calls that change nothing.
		var trips []time.Duration
		for range 21 {
			sent := time.Now()
			_, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "race-none"})
			wantCode(t, err, codes.NotFound)
			trips = append(trips, time.Since(sent))
		}
		sort.Slice(trips, func(i, j int) bool { return trips[i] < trips[j] })
		lead := trips[len(trips)/2] / 2
		// One BatchCheckout: one call, over long before the first
		// deadline 3s away even on a busy machine (400 calls one after
		// another took 4 to 5 s at a load average of 20). The deadlines
		// 5ms apart: a burst of them would keep the service (in this
		// process) too busy to answer the calls on time.
		batch := &pb.BatchCheckoutRequest{}
		for i := range n {
			batch.Requests = append(batch.Requests, &pb.CheckoutRequest{OrderId: fmt.Sprint("race-", i), Ttl: ttl(3*time.Second + time.Duration(i)*5*time.Millisecond)})
		}
		resp, err := s.Client.BatchCheckout(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		deadlines := make([]time.Time, n)
		for i, r := range resp.GetResults() {
			if !r.GetCheckout().GetCreated() {
				t.Fatalf("checkout of race-%d: %v", i, r)
			}
			deadlines[i] = r.GetCheckout().GetOrder().GetDeadline().AsTime()
		}
		if time.Until(deadlines[0]) < band {
			t.Fatalf("the checkouts took %s, past the first deadline: the calls would be late", time.Since(deadlines[0].Add(-3*time.Second)))
		}
		completed := make([]bool, n)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failures []string
		// The completions the service accepted within band before their
		// deadline (by the order's closed_at), and those it refused within
		// band of it (by when they were sent).
		var nearAccepted, nearRefused int
		// A goroutine for each call: one that waited for the call before
		// would be late.
		for i := range n {
			wg.Go(func() {
				aim := deadlines[i].Add(time.Duration(i%46-30) * band / 15)
				time.Sleep(time.Until(aim.Add(-lead)))
				sent := time.Now()
				res, err := s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: fmt.Sprint("race-", i)})
				mu.Lock()
				defer mu.Unlock()
				switch status.Code(err) {
				case codes.OK:
					completed[i] = true
					if deadlines[i].Sub(res.GetClosedAt().AsTime()) <= band {
						nearAccepted++
					}
				case codes.FailedPrecondition:
					if sent.Sub(deadlines[i]).Abs() <= band {
						nearRefused++
					}
				default:
					failures = append(failures, fmt.Sprint("race-", i, ": ", err))
				}
			})
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("unexpected errors: %v", failures)
		}
		wantExpired := 0
		for _, c := range completed {
			if !c {
				wantExpired++
			}
		}
		t.Logf("%d completed, %d expired; round trip %s; within %s of the deadline: %d accepted, %d refused", n-wantExpired, wantExpired, 2*lead, band, nearAccepted, nearRefused)
		if nearAccepted == 0 || nearRefused == 0 {
			t.Fatalf("one side of the race was not reached: %d completions accepted within %s before their deadline, %d refused within %s of it; want some of each",
				nearAccepted, band, nearRefused, band)
		}
		events := w.collect(t, wantExpired, 10*time.Second)
		w.quiet(t, 500*time.Millisecond)
		seen := map[string]bool{}
		for _, ev := range events {
			id := ev.GetOrderId()
			var i int
			fmt.Sscanf(id, "race-%d", &i)
			if seen[id] {
				t.Fatalf("%s expired twice", id)
			}
			seen[id] = true
			if completed[i] {
				t.Fatalf("%s was completed and also expired", id)
			}
		}
		for i := range n {
			o, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: fmt.Sprint("race-", i)})
			if err != nil {
				t.Fatal(err)
			}
			want := pb.OrderStatus_ORDER_STATUS_EXPIRED
			if completed[i] {
				want = pb.OrderStatus_ORDER_STATUS_COMPLETED
			}
			if o.GetStatus() != want {
				t.Fatalf("race-%d is %v, want %v", i, o.GetStatus(), want)
			}
		}
	})
}

// TestTwoReplicasExactlyOnce: two servers on one Redis both receive every
// expired event, yet each expiration is emitted once, and watchers on
// either replica see every one of them once.
func TestTwoReplicasExactlyOnce(t *testing.T) {
	r := redistest.Start(t)
	env := map[string]string{"REDIS_URL": r.URL()}
	a, b := startServer(t, env), startServer(t, env)
	wa, wb := a.watch(t, ""), b.watch(t, "")
	ctx := context.Background()
	const n = 600
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("rep-", i), Ttl: ttl(time.Duration(300+i) * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	for name, w := range map[string]*watcher{"a": wa, "b": wb} {
		events := w.collect(t, n, 15*time.Second)
		w.quiet(t, 300*time.Millisecond)
		ids := map[string]int{}
		for _, ev := range events {
			ids[ev.GetOrderId()]++
		}
		if len(ids) != n {
			t.Fatalf("watcher on %s saw %d distinct orders, want %d", name, len(ids), n)
		}
	}
	// The log holds each expiration once: a watch from its start replays
	// n events, of n orders, and no more.
	replay := a.watch(t, "0-0")
	logged := map[string]int{}
	for _, ev := range replay.collect(t, n, 15*time.Second) {
		logged[ev.GetOrderId()]++
	}
	replay.quiet(t, 300*time.Millisecond)
	if len(logged) != n {
		t.Fatalf("the log replays %d events of %d distinct orders for %d expirations", n, len(logged), n)
	}
	// Each expiration was claimed once, by one replica or the other; and
	// both replicas were subscribed to Redis's expired-key events, so that
	// both were woken for every one of them.
	claimed := 0.0
	for _, s := range []*server{a, b} {
		checkMetrics(t, s, []wantSample{{name: "orderexpiry_subscriber_connected", value: 1}})
		v, err := sampleValue(s.scrape(t), "orderexpiry_orders_closed_total", map[string]string{"outcome": "expired"})
		if err != nil {
			t.Fatal(err)
		}
		claimed += v
	}
	if claimed != n {
		t.Fatalf("the replicas counted %g expirations claimed, want %d", claimed, n)
	}
}

// TestGracefulStop: SIGTERM ends open watches cleanly with a cursor to
// resume from, and the process exits 0 within the bound.
func TestGracefulStop(t *testing.T) {
	backendsWith(t, serverOptions{Process: true}, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := context.Background()
		w := s.watch(t, "")
		lines := s.restWatch(t, "")
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "bye", Ttl: ttl(50 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		ev := w.next(t, 5*time.Second)
		lines.next(t)

		begin := time.Now()
		if !s.Stop(syscall.SIGTERM) {
			t.Fatal("the server did not stop within 15s of SIGTERM")
		}
		if code := s.ExitCode(); code != 0 {
			t.Fatalf("exit code %d after SIGTERM", code)
		}
		t.Logf("stopped in %s", time.Since(begin).Round(time.Millisecond))
		select {
		case err := <-w.done:
			wantCode(t, err, codes.Unavailable)
			if !strings.Contains(status.Convert(err).Message(), "after_cursor="+ev.GetCursor()) {
				t.Fatalf("end of watch does not give the cursor to resume from: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the gRPC watch did not end")
		}
		last := lines.next(t)
		if field(last, "error", "status") != "UNAVAILABLE" {
			t.Fatalf("last REST line: %v", last)
		}
		if _, ok := <-lines.lines; ok {
			t.Fatal("the REST watch went on after its error line")
		}
	})
}

// TestReflectionAndHealth: grpcurl's view of the server.
func TestReflectionAndHealth(t *testing.T) {
	s := startServer(t, nil)
	ctx := context.Background()
	h, err := healthpb.NewHealthClient(s.Conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "orderexpiry.v1.OrderService"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	stream, err := rpb.NewServerReflectionClient(s.Conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	sort.Strings(names)
	want := []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection", "orderexpiry.v1.OrderService"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Fatalf("services (-want +got):\n%s", diff)
	}
}

// TestRedisDown: while Redis is unreachable calls fail fast with
// UNAVAILABLE and health says NOT_SERVING.
func TestRedisDown(t *testing.T) {
	r := redistest.Start(t)
	s := startServer(t, map[string]string{"REDIS_URL": r.URL()})
	ctx := context.Background()
	hc := healthpb.NewHealthClient(s.Conn)
	r.Kill()

	start := time.Now()
	_, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "down-1"})
	wantCode(t, err, codes.Unavailable)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Checkout took %s to fail", took)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		h, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && h.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health still %v, %v 5s after Redis went away", h, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := s.restCall(t, "GET", "/healthz", ""); code != 503 {
		t.Fatalf("healthz: %d %v", code, body)
	}
	// Alive all the same: the liveness probe does not restart it, and the
	// alert on orderexpiry_serving fires.
	if code, body := s.restCall(t, "GET", "/livez", ""); code != 200 {
		t.Fatalf("livez: %d %v", code, body)
	}
	checkMetrics(t, s, []wantSample{{name: "orderexpiry_serving", value: 0}})
	if code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"down-2"}`); code != 503 {
		t.Fatalf("checkout over REST: %d %v", code, body)
	}
}

// TestKeyspaceEventsEnabled: the server turns on the expired-key events it
// needs and keeps the flags that were set before.
func TestKeyspaceEventsEnabled(t *testing.T) {
	r := redistest.Start(t, "--notify-keyspace-events", "Kg")
	startServer(t, map[string]string{"REDIS_URL": r.URL()})
	deadline := time.Now().Add(5 * time.Second)
	for {
		cfg, err := r.Client(t).ConfigGet(context.Background(), "notify-keyspace-events").Result()
		if err != nil {
			t.Fatal(err)
		}
		f := cfg["notify-keyspace-events"]
		if strings.ContainsRune(f, 'E') && strings.ContainsRune(f, 'x') {
			if !strings.ContainsRune(f, 'K') || !strings.ContainsRune(f, 'g') {
				t.Fatalf("notify-keyspace-events %q lost flags that were set", f)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("notify-keyspace-events is %q", f)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
