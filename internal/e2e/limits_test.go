package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestLimits: past -max-watchers a watch is refused with
// RESOURCE_EXHAUSTED (429) until one closes; a request over
// -max-request-bytes and metadata over -max-metadata-entries are refused
// with a message naming the limit, and write nothing.
func TestLimits(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil, "-max-watchers=2", "-max-request-bytes=2048", "-max-metadata-entries=2")
	ctx := context.Background()

	t.Run("watchers", func(t *testing.T) {
		first := s.watch(t, "")
		second := s.restWatch(t, "")

		err := tryWatch(s, time.Second)
		wantCode(t, err, codes.ResourceExhausted)
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "max-watchers") {
			t.Fatalf("message %q does not name the limit", msg)
		}
		code, _, body, lines := openNDJSON(t, s.HTTP, s.URL("/v1/expirations:watch"), "")
		if code == 200 {
			l := lines.next(t)
			lines.cancel()
			body, _ = json.Marshal(l) // the error line, if it was refused after all
		}
		if e := jsonError(body); code != 429 || e.Code != int(codes.ResourceExhausted) || !strings.Contains(e.Message, "max-watchers") {
			// Errorf: the checks below hold or fail on their own.
			t.Errorf("REST watch past the limit: %d %s, want 429 naming max-watchers", code, body)
		}

		// Both watches still work.
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "lim-watch", Ttl: ttl(50 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		if ev := first.next(t, 5*time.Second); ev.GetOrderId() != "lim-watch" {
			t.Fatalf("event %v", ev)
		}
		if l := second.next(t); l["orderId"] != "lim-watch" {
			t.Fatalf("line %v", l)
		}

		// Once one closes, a new one is let in (the server notices the
		// close a moment later).
		first.cancel()
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := tryWatch(s, 300*time.Millisecond)
			if err == nil {
				break
			}
			if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
				t.Fatalf("a watch after one of two closed: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		second.cancel()
		// And with both closed, a REST watch is let in again.
		deadline = time.Now().Add(5 * time.Second)
		for {
			code, _, body, lines := openNDJSON(t, s.HTTP, s.URL("/v1/expirations:watch"), "")
			if code == 200 {
				lines.cancel()
				break
			}
			if code != 429 || time.Now().After(deadline) {
				t.Fatalf("a REST watch after both closed: %d %s", code, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	// Two entries of the longest value allowed: a valid order, but a
	// message over 2048 bytes.
	big := map[string]string{"a": strings.Repeat("x", 1024), "b": strings.Repeat("y", 1024)}
	bigJSON, err := json.Marshal(big)
	if err != nil {
		t.Fatal(err)
	}
	three := map[string]string{"a": "1", "b": "2", "c": "3"}
	tests := []struct {
		name    string
		id      string
		md      map[string]string
		body    string // the same over REST
		code    codes.Code
		status  int
		mention string
	}{
		{"request over max-request-bytes", "lim-big", big, `{"orderId":"lim-big-rest","metadata":` + string(bigJSON) + `}`,
			codes.ResourceExhausted, 400, "2048"},
		{"metadata over max-metadata-entries", "lim-three", three, `{"orderId":"lim-three-rest","metadata":{"a":"1","b":"2","c":"3"}}`,
			codes.InvalidArgument, 400, "metadata"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: tc.id, Metadata: tc.md})
			wantCode(t, err, tc.code)
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tc.mention) {
				t.Fatalf("gRPC message %q does not name %q", msg, tc.mention)
			}
			code, _, body := httpCall(t, s.HTTP, "POST", s.URL("/v1/orders"), "", tc.body)
			if e := jsonError(body); code != tc.status || e.Code != int(codes.InvalidArgument) || !strings.Contains(e.Message, tc.mention) {
				t.Fatalf("REST: %d %s, want %d with a message naming %q", code, body, tc.status, tc.mention)
			}
			for _, id := range []string{tc.id, tc.id + "-rest"} {
				_, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: id})
				wantCode(t, err, codes.NotFound)
			}
		})
	}
	// Just under the limits is fine.
	if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "lim-ok", Metadata: map[string]string{"a": strings.Repeat("x", 900), "b": "2"}}); err != nil {
		t.Fatalf("a checkout within the limits: %v", err)
	}
	if code, body := s.restCall(t, "POST", "/v1/orders", fmt.Sprintf(`{"orderId":"lim-ok-rest","metadata":{"a":%q,"b":"2"}}`, strings.Repeat("x", 900))); code != 200 {
		t.Fatalf("a REST checkout within the limits: %d %v", code, body)
	}
}

// tryWatch opens a gRPC watch and returns nil if it is still open after
// d (then closes it), or the error it ended with.
func tryWatch(s *server, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	stream, err := s.Client.WatchExpirations(ctx, &pb.WatchExpirationsRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) == codes.DeadlineExceeded {
		return nil
	}
	if err == nil {
		return fmt.Errorf("unexpected event on a new live watch")
	}
	return err
}

// jsonError decodes a REST error body.
func jsonError(body []byte) (e struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}) {
	_ = json.Unmarshal(body, &e)
	return e
}
