package rpc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// TestStatusOfAPassedDeadline: a store error caused by the caller's own
// deadline (the store reports a Redis call cut short as unavailable) reaches
// the caller as DEADLINE_EXCEEDED, and the same error within the deadline
// as UNAVAILABLE.
func TestStatusOfAPassedDeadline(t *testing.T) {
	s := &Service{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	unavailable := &order.Error{Kind: order.KindUnavailable, Msg: "the order store is unavailable; retry later", Err: context.DeadlineExceeded}

	live, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if got := status.Code(s.statusOf(live, unavailable).Err()); got != codes.Unavailable {
		t.Errorf("within the deadline: %v, want Unavailable", got)
	}
	passed, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if got := status.Code(s.statusOf(passed, unavailable).Err()); got != codes.DeadlineExceeded {
		t.Errorf("after the deadline: %v, want DeadlineExceeded", got)
	}
	if got := status.Code(s.statusOf(passed, errors.New("boom")).Err()); got != codes.DeadlineExceeded {
		t.Errorf("any error after the deadline: %v, want DeadlineExceeded", got)
	}
}
