package rpc

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// TestTimeFields: the ttl and deadline of a checkout, a reschedule and a
// bulk change are read by one pair of helpers, which refuse what no store
// could keep with INVALID_ARGUMENT and a message that says what to give.
func TestTimeFields(t *testing.T) {
	s := &Service{limits: order.Limits{DefaultTTL: 15 * time.Minute, MaxTTL: time.Hour}}
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if got, err := deadlineOf(timestamppb.New(at)); err != nil || !got.Equal(at) {
		t.Errorf("deadlineOf(%s) = %v, %v; want it back", at, got, err)
	}
	if got, err := s.ttlOf(durationpb.New(1500 * time.Microsecond)); err != nil || got != 2*time.Millisecond {
		t.Errorf("ttlOf(1.5ms) = %v, %v; want 2ms (rounded up to the millisecond)", got, err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"deadline at the epoch", second(deadlineOf(timestamppb.New(time.Unix(0, 0)))), "is not after now; give a later one, or a ttl"},
		{"deadline before the epoch", second(deadlineOf(timestamppb.New(time.Unix(-60, 0)))), "1969-12-31T23:59:00Z is not after now"},
		{"deadline out of range", second(deadlineOf(&timestamppb.Timestamp{Nanos: -1})), "deadline is not a valid timestamp"},
		{"deadline nil", second(deadlineOf(nil)), "deadline is not a valid timestamp"},
		{"ttl out of range", second(s.ttlOf(&durationpb.Duration{Seconds: 1, Nanos: -1})), "ttl is not a valid duration"},
		{"ttl zero", second(s.ttlOf(durationpb.New(0))), "ttl must be more than zero (got 0s)"},
		{"ttl past the maximum", second(s.ttlOf(durationpb.New(2 * time.Hour))), "ttl 2h is more than the maximum of 1h"},
	} {
		if order.KindOf(tc.err) != order.KindInvalid || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: %v, want an invalid-argument error saying %q", tc.name, tc.err, tc.want)
		}
	}
}

func second[T any](_ T, err error) error { return err }
