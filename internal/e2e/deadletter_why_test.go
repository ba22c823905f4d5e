package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestDeadLetterSaysWhy: through the REST and gRPC ports, a dead letter
// says why its last delivery failed (the nack's reason, or "ack deadline
// passed"), with its attempts and their times; a nack reason too long or
// not one line is refused with what to fix, and the delivery it named is
// still in flight.
func TestDeadLetterSaysWhy(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		if code, body := s.restCall(t, "POST", "/v1/groups", `{"groupId":"why","ackDeadline":"0.5s","maxDeliveries":1}`); code != 200 {
			t.Fatalf("create: %d %v", code, body)
		}
		for _, id := range []string{"why-nacked", "why-lapsed"} {
			if code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"`+id+`","ttl":"0.1s"}`); code != 200 {
				t.Fatalf("checkout: %d %v", code, body)
			}
		}
		before := time.Now()
		ackIDs := map[string]string{}
		for deadline := time.Now().Add(5 * time.Second); len(ackIDs) < 2 && time.Now().Before(deadline); {
			code, body := s.restCall(t, "POST", "/v1/groups/why:pull", `{"wait":"2s","maxEvents":2}`)
			if code != 200 {
				t.Fatalf("pull: %d %v", code, body)
			}
			recv, _ := body["receivedExpirations"].([]any)
			for _, r := range recv {
				m := r.(map[string]any)
				ackIDs[field(m, "event", "orderId").(string)] = m["ackId"].(string)
			}
		}
		pulled := time.Now()
		if len(ackIDs) != 2 {
			t.Fatalf("pulled %v, want both orders", ackIDs)
		}
		nacked := ackIDs["why-nacked"]
		for _, bad := range []struct{ reason, says string }{
			{strings.Repeat("x", 257), "at most 256"},
			{"line one\\nline two", "control character"},
		} {
			code, body := s.restCall(t, "POST", "/v1/groups/why:nack", `{"ackIds":["`+nacked+`"],"reason":"`+bad.reason+`"}`)
			if code != http.StatusBadRequest || !strings.Contains(body["message"].(string), bad.says) {
				t.Errorf("nack with reason %.20q: %d %v; want 400 saying %q", bad.reason, code, body, bad.says)
			}
		}
		code, body := s.restCall(t, "POST", "/v1/groups/why:nack", `{"ackIds":["`+nacked+`"],"reason":"card declined"}`)
		if results, _ := body["results"].([]any); code != 200 || len(results) != 1 || results[0].(map[string]any)["status"] != "ACK_ID_STATUS_OK" {
			t.Fatalf("nack with a reason after the refused ones: %d %v; want the delivery still in flight, handed back", code, body)
		}
		nackedAt := time.Now()
		time.Sleep(time.Until(pulled.Add(700 * time.Millisecond))) // past the ack deadline: nothing to wait on

		code, body = s.restCall(t, "GET", "/v1/groups/why/deadLetters", "")
		letters, _ := body["deadLetters"].([]any)
		if code != 200 || len(letters) != 2 {
			t.Fatalf("dead letters: %d %v, want two", code, body)
		}
		for _, l := range letters {
			m := l.(map[string]any)
			id := field(m, "event", "orderId")
			want := map[any]string{"why-nacked": "card declined", "why-lapsed": "ack deadline passed"}[id]
			if m["lastFailure"] != want || m["deliveryAttempts"] != float64(1) {
				t.Errorf("REST dead letter of %v: %v; want lastFailure %q after 1 attempt", id, m, want)
			}
			for _, f := range []string{"firstDeliveryTime", "lastDeliveryTime", "lastFailureTime"} {
				if _, ok := m[f].(string); !ok {
					t.Errorf("REST dead letter of %v has no %s: %v", id, f, m)
				}
			}
		}

		resp, err := s.Client.ListDeadLetters(context.Background(), &pb.ListDeadLettersRequest{GroupId: "why"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetDeadLetters()) != 2 {
			t.Fatalf("gRPC dead letters: %v, want two", resp)
		}
		slack := 50 * time.Millisecond
		for _, l := range resp.GetDeadLetters() {
			first, last, failed := l.GetFirstDeliveryTime().AsTime(), l.GetLastDeliveryTime().AsTime(), l.GetLastFailureTime().AsTime()
			if first.Before(before.Add(-slack)) || first.After(pulled.Add(slack)) || !last.Equal(first) {
				t.Errorf("%s: delivered first %v, last %v; want one delivery between %v and %v", l.GetEvent().GetOrderId(), first, last, before, pulled)
			}
			switch l.GetEvent().GetOrderId() {
			case "why-nacked":
				if failed.Before(pulled.Add(-slack)) || failed.After(nackedAt.Add(slack)) {
					t.Errorf("why-nacked failed at %v, want at its nack, between %v and %v", failed, pulled, nackedAt)
				}
			case "why-lapsed":
				if !failed.Equal(last.Add(500 * time.Millisecond)) {
					t.Errorf("why-lapsed failed at %v, want its delivery %v plus the ack deadline", failed, last)
				}
			}
		}
		_, err = s.Client.NackExpirations(context.Background(), &pb.NackExpirationsRequest{GroupId: "why", AckIds: []string{nacked}, Reason: "bad\x00"})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("gRPC nack with a NUL in its reason: %v; want InvalidArgument", err)
		}
	})
}

// TestPushDeadLetterSaysWhy: a push group's dead letter says what the
// endpoint answered its last attempt: here 503, on every attempt.
func TestPushDeadLetterSaysWhy(t *testing.T) {
	test := func(t *testing.T, s *server) {
		ctx := context.Background()
		rcv := startPushReceiver(t)
		if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "busy", AckDeadline: durationpb.New(time.Second), MaxDeliveries: 2,
			PushConfig: &pb.PushConfig{Url: rcv.url("/unavailable"), Secret: pushSecret}}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "busy-1", Ttl: ttl(100 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); pushDeadLetters(t, s, "busy") < 1; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no dead letter after 20s; the endpoint got %v", rcv.byID("/unavailable"))
			}
		}
		resp, err := s.Client.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{GroupId: "busy"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetDeadLetters()) != 1 {
			t.Fatalf("dead letters %v, want one", resp)
		}
		l := resp.GetDeadLetters()[0]
		if l.GetLastFailure() != "HTTP 503 Service Unavailable" || l.GetDeliveryAttempts() != 2 {
			t.Errorf("dead letter says %q after %d attempts; want %q after 2", l.GetLastFailure(), l.GetDeliveryAttempts(), "HTTP 503 Service Unavailable")
		}
		first, last, failed := l.GetFirstDeliveryTime().AsTime(), l.GetLastDeliveryTime().AsTime(), l.GetLastFailureTime().AsTime()
		if first.Before(start) || !first.Before(last) || failed.Before(last) || failed.After(time.Now()) {
			t.Errorf("attempts' times: first %v, last %v, failed %v; want them in order after %v", first, last, failed, start)
		}
		var answered []int
		for _, as := range rcv.byID("/unavailable") {
			for _, a := range as {
				answered = append(answered, a.answered)
			}
		}
		if len(answered) != 2 || answered[0] != 503 || answered[1] != 503 {
			t.Errorf("the endpoint answered %v, want 503 twice", answered)
		}
	}
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		test(t, startServer(t, nil, pushFlags...))
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		r := redistest.Start(t)
		test(t, startServer(t, map[string]string{"REDIS_URL": r.URL()}, pushFlags...))
	})
}
