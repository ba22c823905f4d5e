package bench

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestGroupTally: the stage's verdict of "each exactly once" rests on the
// tally telling a first delivery from a repeat, ignoring orders it does not
// track, and counting an order missing until it arrives.
func TestGroupTally(t *testing.T) {
	deadline := time.Now()
	d := func(id string, attempt int32) *pb.ReceivedExpiration {
		return &pb.ReceivedExpiration{AckId: id + "-ack", DeliveryAttempt: attempt,
			Event: &pb.ExpirationEvent{OrderId: id, Deadline: timestamppb.New(deadline), ExpiredAt: timestamppb.New(deadline.Add(time.Millisecond))}}
	}
	tally := newGroupTally("g7-", 3, 2)
	f := &consumerFleet{t: tally}
	tally.delivered(0, d("g7-0", 1), deadline.Add(5*time.Millisecond))
	tally.delivered(1, d("g7-1", 1), deadline.Add(7*time.Millisecond))
	tally.delivered(1, d("g7-0", 2), deadline.Add(time.Second)) // a repeat, redelivered
	tally.delivered(0, d("other-1", 1), deadline)               // not tracked
	tally.delivered(0, d("g7-9", 1), deadline)                  // past the tracked ones

	res := f.result()
	if res.want != 3 || res.got != 2 || res.dups != 1 || tally.doubled != 1 || tally.redelivered != 1 || tally.received != 5 {
		t.Fatalf("got %d/%d, %d repeats, %d doubled, %d redelivered, %d received; want 2/3, 1, 1, 1, 5",
			res.got, res.want, res.dups, tally.doubled, tally.redelivered, tally.received)
	}
	// The missing order counts as later than any wait.
	if res.late.Max != never || res.late.P50 != 7*time.Millisecond {
		t.Fatalf("lateness p50 %s, max %s; want 7ms and never for the missing order", res.late.P50, res.late.Max)
	}
	if got := tally.perConsumer(); got[0] != "3" || got[1] != "2" {
		t.Fatalf("per consumer %v, want [3 2]", got)
	}
	select {
	case <-tally.done:
		t.Fatal("done before every tracked order arrived")
	default:
	}
	tally.delivered(0, d("g7-2", 1), deadline)
	select {
	case <-tally.done:
	default:
		t.Fatal("not done after every tracked order arrived")
	}
	if tally.settled() {
		t.Fatal("settled with no acknowledgement answered")
	}
}
