package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// consumer is one ConsumeExpirations stream of a test.
type consumer struct {
	cancel     context.CancelFunc
	deliveries chan *pb.ReceivedExpiration
	done       chan error
}

func (s *server) consume(t *testing.T, group, name string, maxInFlight int32) *consumer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := s.Client.ConsumeExpirations(ctx, &pb.ConsumeExpirationsRequest{GroupId: group, Consumer: name, MaxInFlight: maxInFlight})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	c := &consumer{cancel: cancel, deliveries: make(chan *pb.ReceivedExpiration, 10000), done: make(chan error, 1)}
	go func() {
		for {
			d, err := stream.Recv()
			if err != nil {
				c.done <- err
				return
			}
			c.deliveries <- d
		}
	}()
	return c
}

func (c *consumer) next(t *testing.T, timeout time.Duration) *pb.ReceivedExpiration {
	t.Helper()
	select {
	case d := <-c.deliveries:
		return d
	case err := <-c.done:
		t.Fatalf("consumer stream ended: %v", err)
	case <-time.After(timeout):
		t.Fatalf("no delivery within %s", timeout)
	}
	return nil
}

func ackOne(t *testing.T, s *server, group, ackID string, want pb.AckIdStatus) {
	t.Helper()
	resp, err := s.Client.AcknowledgeExpirations(context.Background(), &pb.AcknowledgeExpirationsRequest{GroupId: group, AckIds: []string{ackID}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetResults()[0].GetStatus(); got != want {
		t.Fatalf("ack %s: %v, want %v", ackID, got, want)
	}
}

// TestGroupsGRPC: a group's consumers over gRPC share the events, each in
// flight at one of them; acks, nacks, redelivery, a closed stream's hand-back,
// dead letters and redrive.
func TestGroupsGRPC(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := context.Background()
		g, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "pay", AckDeadline: durationpb.New(time.Second), MaxDeliveries: 2})
		if err != nil {
			t.Fatal(err)
		}
		if g.GetAckDeadline().AsDuration() != time.Second || g.GetMaxDeliveries() != 2 || g.GetBacklog() != 0 {
			t.Fatalf("created: %v", g)
		}
		c1 := s.consume(t, "pay", "w1", 10)
		c2 := s.consume(t, "pay", "w2", 10)
		for i := range 6 {
			if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("gg-", i), Ttl: ttl(100 * time.Millisecond)}); err != nil {
				t.Fatal(err)
			}
		}
		got := map[string]*pb.ReceivedExpiration{}
		by := map[string]*consumer{}
		for len(got) < 6 {
			var d *pb.ReceivedExpiration
			var from *consumer
			select {
			case d = <-c1.deliveries:
				from = c1
			case d = <-c2.deliveries:
				from = c2
			case <-time.After(5 * time.Second):
				t.Fatalf("%d of 6 delivered", len(got))
			}
			by[d.GetEvent().GetOrderId()] = from
			if got[d.GetEvent().GetOrderId()] != nil {
				t.Fatalf("%s delivered twice while in flight", d.GetEvent().GetOrderId())
			}
			if d.GetDeliveryAttempt() != 1 || d.GetEvent().GetCursor() != "" || d.GetAckId() == "" {
				t.Errorf("delivery %v", d)
			}
			got[d.GetEvent().GetOrderId()] = d
		}
		for i := range 4 {
			ackOne(t, s, "pay", got[fmt.Sprint("gg-", i)].GetAckId(), pb.AckIdStatus_ACK_ID_STATUS_OK)
		}
		ackOne(t, s, "pay", got["gg-0"].GetAckId(), pb.AckIdStatus_ACK_ID_STATUS_NOT_IN_FLIGHT)
		ackOne(t, s, "pay", "0/1-0/1", pb.AckIdStatus_ACK_ID_STATUS_UNKNOWN)
		ackOne(t, s, "pay", "not an ack id", pb.AckIdStatus_ACK_ID_STATUS_UNKNOWN)

		// gg-4 is nacked: delivered again at once, attempt 2. gg-5 is left
		// to its ack deadline.
		resp, err := s.Client.NackExpirations(ctx, &pb.NackExpirationsRequest{GroupId: "pay", AckIds: []string{got["gg-4"].GetAckId()}})
		if err != nil || resp.GetResults()[0].GetStatus() != pb.AckIdStatus_ACK_ID_STATUS_OK {
			t.Fatalf("nack: %v, %v", resp, err)
		}
		nacked := time.Now()
		var again *pb.ReceivedExpiration
		select {
		case again = <-c1.deliveries:
		case again = <-c2.deliveries:
		case <-time.After(900 * time.Millisecond):
			t.Fatal("the nacked event was not delivered again before the ack deadline")
		}
		if again.GetEvent().GetOrderId() != "gg-4" || again.GetDeliveryAttempt() != 2 {
			t.Fatalf("after a nack: %v, want gg-4 attempt 2", again)
		}
		t.Logf("nacked event delivered again %v later", time.Since(nacked).Round(time.Millisecond))

		// Closing a stream hands its deliveries on at once: close the one
		// that has gg-5, and the other gets it well before its ack
		// deadline.
		holder, other := by["gg-5"], c1
		if holder == c1 {
			other = c2
		}
		closed := time.Now()
		holder.cancel()
		d5 := waitFor(t, []*consumer{other}, "gg-5", 5*time.Second)
		if d5 == nil || d5.GetDeliveryAttempt() != 2 {
			t.Fatalf("after its stream closed: %v, want gg-5 attempt 2", d5)
		}
		if wait := time.Since(closed); wait > 700*time.Millisecond {
			t.Errorf("gg-5 came %v after its stream closed; the ack deadline is 1s: it was not handed on at once", wait)
		}
		// gg-4 at attempt 2 is nacked again: max_deliveries is 2, so it
		// becomes a dead letter.
		if _, err := s.Client.NackExpirations(ctx, &pb.NackExpirationsRequest{GroupId: "pay", AckIds: []string{again.GetAckId()}}); err != nil {
			t.Fatal(err)
		}
		ackOne(t, s, "pay", d5.GetAckId(), pb.AckIdStatus_ACK_ID_STATUS_OK)
		var letters *pb.ListDeadLettersResponse
		deadline := time.Now().Add(5 * time.Second)
		for {
			letters, err = s.Client.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{GroupId: "pay"})
			if err != nil {
				t.Fatal(err)
			}
			if len(letters.GetDeadLetters()) == 1 || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(letters.GetDeadLetters()) != 1 || letters.GetDeadLetters()[0].GetEvent().GetOrderId() != "gg-4" || letters.GetDeadLetters()[0].GetDeliveryAttempts() != 2 {
			t.Fatalf("dead letters: %v", letters)
		}
		g, err = s.Client.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: "pay"})
		if err != nil || g.GetDeadLetters() != 1 || g.GetInFlight() != 0 || g.GetBacklog() != 0 {
			t.Fatalf("group: %v, %v", g, err)
		}
		// No stream but the next one takes the redriven event: once the
		// server has ended the last one (a cancel reaches it some time
		// after the client's), or that stream may take the event and hand
		// it on at attempt 2 when it ends.
		other.cancel()
		waitOpen(t, s, "ConsumeExpirations", "server_stream", "none", func(open int) bool { return open == 0 })
		rd, err := s.Client.RedriveDeadLetters(ctx, &pb.RedriveDeadLettersRequest{GroupId: "pay", All: true})
		if err != nil || rd.GetRedriven() != 1 {
			t.Fatalf("redrive: %v, %v", rd, err)
		}
		c4 := s.consume(t, "pay", "w4", 10)
		d4 := c4.next(t, 5*time.Second)
		if d4.GetEvent().GetOrderId() != "gg-4" || d4.GetDeliveryAttempt() != 1 {
			t.Fatalf("after the redrive: %v, want gg-4 attempt 1", d4)
		}
		ackOne(t, s, "pay", d4.GetAckId(), pb.AckIdStatus_ACK_ID_STATUS_OK)

		tests := []struct {
			name string
			call func() error
			want codes.Code
		}{
			{"same settings again", func() error {
				_, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "pay", AckDeadline: durationpb.New(time.Second), MaxDeliveries: 2})
				return err
			}, codes.OK},
			{"other settings", func() error {
				_, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "pay"})
				return err
			}, codes.AlreadyExists},
			{"bad group id", func() error {
				_, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "a b"})
				return err
			}, codes.InvalidArgument},
			{"ack deadline too short", func() error {
				_, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "x", AckDeadline: durationpb.New(time.Millisecond)})
				return err
			}, codes.InvalidArgument},
			{"max deliveries too many", func() error {
				_, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "x", MaxDeliveries: 1000})
				return err
			}, codes.InvalidArgument},
			{"bad start cursor", func() error {
				_, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "x", StartAfterCursor: "abc"})
				return err
			}, codes.InvalidArgument},
			{"unknown group", func() error {
				_, err := s.Client.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: "none"})
				return err
			}, codes.NotFound},
			{"pull of an unknown group", func() error {
				_, err := s.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "none", Wait: durationpb.New(0)})
				return err
			}, codes.NotFound},
			{"max_events past the limit", func() error {
				_, err := s.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "pay", MaxEvents: 100000})
				return err
			}, codes.ResourceExhausted},
			{"negative max_events", func() error {
				_, err := s.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "pay", MaxEvents: -1})
				return err
			}, codes.InvalidArgument},
			{"no ack ids", func() error {
				_, err := s.Client.AcknowledgeExpirations(ctx, &pb.AcknowledgeExpirationsRequest{GroupId: "pay"})
				return err
			}, codes.InvalidArgument},
			{"redrive of nothing named", func() error {
				_, err := s.Client.RedriveDeadLetters(ctx, &pb.RedriveDeadLettersRequest{GroupId: "pay"})
				return err
			}, codes.InvalidArgument},
			{"redrive of a malformed dead letter id", func() error {
				_, err := s.Client.RedriveDeadLetters(ctx, &pb.RedriveDeadLettersRequest{GroupId: "pay", DeadLetterIds: []string{"0/1-0", "nope"}})
				return err
			}, codes.InvalidArgument},
			{"bad dead letter page token", func() error {
				_, err := s.Client.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{GroupId: "pay", PageToken: "nope"})
				return err
			}, codes.InvalidArgument},
			{"consume of an unknown group", func() error {
				stream, err := s.Client.ConsumeExpirations(ctx, &pb.ConsumeExpirationsRequest{GroupId: "none"})
				if err != nil {
					return err
				}
				_, err = stream.Recv()
				return err
			}, codes.NotFound},
			{"max_in_flight past the limit", func() error {
				stream, err := s.Client.ConsumeExpirations(ctx, &pb.ConsumeExpirationsRequest{GroupId: "pay", MaxInFlight: 100000})
				if err != nil {
					return err
				}
				_, err = stream.Recv()
				return err
			}, codes.ResourceExhausted},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				wantCode(t, tt.call(), tt.want)
			})
		}
		if _, err := s.Client.DeleteConsumerGroup(ctx, &pb.DeleteConsumerGroupRequest{GroupId: "pay"}); err != nil {
			t.Fatal(err)
		}
		_, err = s.Client.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: "pay"})
		wantCode(t, err, codes.NotFound)
	})
}

// waitFor returns the delivery of an order to any of the consumers, or nil
// when none comes within timeout.
func waitFor(t *testing.T, cs []*consumer, orderID string, timeout time.Duration) *pb.ReceivedExpiration {
	t.Helper()
	deadline := time.After(timeout)
	for {
		for _, c := range cs {
			select {
			case d := <-c.deliveries:
				if d.GetEvent().GetOrderId() == orderID {
					return d
				}
			default:
			}
		}
		select {
		case <-deadline:
			return nil
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestGroupsREST: the same through the REST port: create, pull (a long
// poll), acknowledge, nack, dead letters, redrive, list and delete.
func TestGroupsREST(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		code, body := s.restCall(t, "POST", "/v1/groups", `{"groupId":"stock","ackDeadline":"2s","maxDeliveries":1}`)
		if code != 200 || body["groupId"] != "stock" || body["maxDeliveries"] != float64(1) || body["ackDeadline"] != "2s" {
			t.Fatalf("create: %d %v", code, body)
		}
		if code, body := s.restCall(t, "POST", "/v1/groups", `{"groupId":"stock","ackDeadline":"5s"}`); code != http.StatusConflict {
			t.Errorf("create with other settings: %d %v, want 409", code, body)
		}
		if code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"rg-1","ttl":"0.2s"}`); code != 200 {
			t.Fatalf("checkout: %d %v", code, body)
		}
		pulled := time.Now()
		code, body = s.restCall(t, "POST", "/v1/groups/stock:pull", `{"maxEvents":10,"wait":"5s"}`)
		recv, _ := body["receivedExpirations"].([]any)
		if code != 200 || len(recv) != 1 {
			t.Fatalf("pull: %d %v", code, body)
		}
		t.Logf("the long poll answered %v after it was made, the order due 200 ms after its checkout", time.Since(pulled).Round(time.Millisecond))
		d := recv[0].(map[string]any)
		if field(d, "event", "orderId") != "rg-1" || d["deliveryAttempt"] != float64(1) {
			t.Fatalf("pulled: %v", d)
		}
		ackID := d["ackId"].(string)
		// A nack with max_deliveries 1 makes it a dead letter, at once:
		// the group shows it so before any pull.
		code, body = s.restCall(t, "POST", "/v1/groups/stock:nack", `{"ackIds":["`+ackID+`"]}`)
		if code != 200 || field(body["results"].([]any)[0].(map[string]any), "status") != "ACK_ID_STATUS_OK" {
			t.Fatalf("nack: %d %v", code, body)
		}
		code, body = s.restCall(t, "GET", "/v1/groups/stock", "")
		if code != 200 || body["inFlight"] != "0" || body["deadLetters"] != "1" || body["backlog"] != "0" || body["oldestUnackedAge"] != nil {
			t.Errorf("group after its last delivery was nacked: %d %v, want in flight 0, dead letters 1, backlog 0, no oldest unacknowledged", code, body)
		}
		if code, body := s.restCall(t, "POST", "/v1/groups/stock:pull", `{"wait":"0.3s"}`); code != 200 || body["receivedExpirations"] != nil && len(body["receivedExpirations"].([]any)) != 0 {
			t.Fatalf("pull after the last delivery was nacked: %d %v, want none", code, body)
		}
		code, body = s.restCall(t, "GET", "/v1/groups/stock/deadLetters", "")
		letters, _ := body["deadLetters"].([]any)
		if code != 200 || len(letters) != 1 {
			t.Fatalf("dead letters: %d %v", code, body)
		}
		id := letters[0].(map[string]any)["deadLetterId"].(string)
		code, body = s.restCall(t, "POST", "/v1/groups/stock:redrive", `{"deadLetterIds":["`+id+`"]}`)
		if code != 200 || body["redriven"] != "1" {
			t.Fatalf("redrive: %d %v", code, body)
		}
		// Until it is pulled again, a redriven event is backlog: no
		// consumer has it.
		code, body = s.restCall(t, "GET", "/v1/groups/stock", "")
		if code != 200 || body["inFlight"] != "0" || body["deadLetters"] != "0" || body["backlog"] != "1" {
			t.Errorf("group after the redrive: %d %v, want in flight 0, dead letters 0, backlog 1", code, body)
		}
		code, body = s.restCall(t, "POST", "/v1/groups/stock:pull", `{"wait":"5s"}`)
		recv, _ = body["receivedExpirations"].([]any)
		if code != 200 || len(recv) != 1 {
			t.Fatalf("pull after the redrive: %d %v", code, body)
		}
		ackID = recv[0].(map[string]any)["ackId"].(string)
		code, body = s.restCall(t, "POST", "/v1/groups/stock:acknowledge", `{"ackIds":["`+ackID+`","`+ackID+`","bogus"]}`)
		if code != 200 {
			t.Fatalf("acknowledge: %d %v", code, body)
		}
		var statuses []any
		for _, r := range body["results"].([]any) {
			statuses = append(statuses, r.(map[string]any)["status"])
		}
		if fmt.Sprint(statuses) != "[ACK_ID_STATUS_OK ACK_ID_STATUS_NOT_IN_FLIGHT ACK_ID_STATUS_UNKNOWN]" {
			t.Errorf("acknowledge statuses: %v", statuses)
		}
		code, body = s.restCall(t, "GET", "/v1/groups/stock", "")
		if code != 200 || body["inFlight"] != "0" || body["deadLetters"] != "0" || body["backlog"] != "0" {
			t.Errorf("group: %d %v", code, body)
		}
		if code, body := s.restCall(t, "GET", "/v1/groups", ""); code != 200 || len(body["consumerGroups"].([]any)) != 1 {
			t.Errorf("list: %d %v", code, body)
		}
		for _, c := range []struct {
			method, path, body string
			status             int
		}{
			{"GET", "/v1/groups/none", "", 404},
			{"POST", "/v1/groups", `{"groupId":"x","ackDeadline":"1h"}`, 400},
			{"POST", "/v1/groups/stock:pull", `{"maxEvents":5000}`, 429},
			{"POST", "/v1/groups/stock:pull", `{"wait":"1h"}`, 400},
			{"POST", "/v1/groups/stock:acknowledge", `{"ackIds":[]}`, 400},
		} {
			if code, body := s.restCall(t, c.method, c.path, c.body); code != c.status {
				t.Errorf("%s %s %s: %d %v, want %d", c.method, c.path, c.body, code, body, c.status)
			}
		}
		if code, body := s.restCall(t, "DELETE", "/v1/groups/stock", ""); code != 200 {
			t.Fatalf("delete: %d %v", code, body)
		}
		if code, _ := s.restCall(t, "GET", "/v1/groups/stock", ""); code != 404 {
			t.Errorf("get after delete: %d", code)
		}
	})
}

// TestGroupsLastDeliveryLapsed: an event whose last delivery is not
// acknowledged within its ack deadline is a dead letter from the deadline
// on, in the group's state, its dead letters and a redrive of all, with no
// pull in between to move it.
func TestGroupsLastDeliveryLapsed(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		if code, body := s.restCall(t, "POST", "/v1/groups", `{"groupId":"audit","ackDeadline":"0.2s","maxDeliveries":1}`); code != 200 {
			t.Fatalf("create: %d %v", code, body)
		}
		if code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"lapse-1","ttl":"0.2s"}`); code != 200 {
			t.Fatalf("checkout: %d %v", code, body)
		}
		code, body := s.restCall(t, "POST", "/v1/groups/audit:pull", `{"wait":"5s"}`)
		if recv, _ := body["receivedExpirations"].([]any); code != 200 || len(recv) != 1 {
			t.Fatalf("pull: %d %v", code, body)
		}
		pulled := time.Now()
		time.Sleep(400 * time.Millisecond) // past the ack deadline: nothing to wait on
		code, body = s.restCall(t, "GET", "/v1/groups/audit", "")
		if code != 200 || body["inFlight"] != "0" || body["deadLetters"] != "1" || body["oldestUnackedAge"] != nil {
			t.Errorf("group %v after the only delivery: %d %v, want in flight 0, dead letters 1, no oldest unacknowledged", time.Since(pulled).Round(time.Millisecond), code, body)
		}
		code, body = s.restCall(t, "GET", "/v1/groups/audit/deadLetters", "")
		if letters, _ := body["deadLetters"].([]any); code != 200 || len(letters) != 1 || field(letters[0].(map[string]any), "event", "orderId") != "lapse-1" {
			t.Errorf("dead letters: %d %v, want lapse-1's", code, body)
		}
		if code, body := s.restCall(t, "POST", "/v1/groups/audit:redrive", `{"all":true}`); code != 200 || body["redriven"] != "1" {
			t.Errorf("redrive of all: %d %v, want 1", code, body)
		}
		code, body = s.restCall(t, "GET", "/v1/groups/audit", "")
		if code != 200 || body["inFlight"] != "0" || body["deadLetters"] != "0" || body["backlog"] != "1" {
			t.Errorf("group after the redrive: %d %v, want backlog 1, in flight 0, dead letters 0", code, body)
		}
	})
}

// TestGroupsStreamRoomAfterAck: a stream at its max_in_flight gets the next
// event as soon as an acknowledgement makes room, not at the next
// redelivery poll (a second, with a 30 s ack deadline).
func TestGroupsStreamRoomAfterAck(t *testing.T) {
	s := startServer(t, nil)
	ctx := context.Background()
	if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "one"}); err != nil {
		t.Fatal(err)
	}
	c := s.consume(t, "one", "w", 1)
	for i := range 2 {
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("room-", i), Ttl: ttl(50 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	first := c.next(t, 5*time.Second)
	time.Sleep(200 * time.Millisecond) // the second is logged, and waits for room
	acked := time.Now()
	ackOne(t, s, "one", first.GetAckId(), pb.AckIdStatus_ACK_ID_STATUS_OK)
	second := c.next(t, 5*time.Second)
	if wait := time.Since(acked); wait > 500*time.Millisecond {
		t.Errorf("the second event came %v after the ack made room; want at once", wait)
	}
	if second.GetEvent().GetOrderId() == first.GetEvent().GetOrderId() {
		t.Errorf("the same event twice: %v", second)
	}
}
