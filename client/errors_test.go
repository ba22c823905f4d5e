package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderexpiry/orderexpiry/client"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestErrorHelpers: the helpers tell the service's errors apart by code,
// reason and field, against a real server, through an error the caller
// wrapped too; an error that is not the service's has no reason.
func TestErrorHelpers(t *testing.T) {
	s := startServer(t, nil, "-max-in-flight=10")
	c := dial(t, s.GRPCAddr, client.Options{Insecure: true})
	ctx := t.Context()
	if _, err := c.Checkout(ctx, &pb.CheckoutRequest{OrderId: "h-1", Ttl: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "h-g"}); err != nil {
		t.Fatal(err)
	}
	call := func(err error) error { return fmt.Errorf("wrapped by the caller: %w", err) }
	for _, tt := range []struct {
		name   string
		err    error
		is     func(error) bool
		reason string
		field  string // the one field violation; "" for none
	}{
		{"unknown order", call(second(c.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "h-none"}))), client.IsNotFound, "ORDER_NOT_FOUND", ""},
		{"bad ttl", call(second(c.Checkout(ctx, &pb.CheckoutRequest{OrderId: "h-2", Ttl: durationpb.New(0)}))), client.IsInvalid, "INVALID_TTL", "ttl"},
		{"bad id", second(c.CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: "a/b"})), client.IsInvalid, "INVALID_ID", "order_id"},
		{"conflicting checkout", second(c.Checkout(ctx, &pb.CheckoutRequest{OrderId: "h-1", Ttl: durationpb.New(2 * time.Hour)})), client.IsAlreadyExists, "ORDER_CONFLICT", ""},
		{"moved deadline", second(c.RescheduleOrder(ctx, &pb.RescheduleOrderRequest{OrderId: "h-1", NewDeadline: &pb.RescheduleOrderRequest_Ttl{Ttl: durationpb.New(time.Minute)},
			ExpectedDeadline: timestamppb.New(time.Now())})), client.IsAborted, "DEADLINE_CHANGED", ""},
		{"closed order", cancelTwice(ctx, c), client.IsFailedPrecondition, "ORDER_CLOSED", ""},
		{"past the in-flight limit", second(c.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "h-g", MaxEvents: 11})), client.IsResourceExhausted, "IN_FLIGHT_LIMIT", ""},
	} {
		if !tt.is(tt.err) {
			t.Errorf("%s: %v: the helper says no", tt.name, tt.err)
		}
		if got := client.Reason(tt.err); got != tt.reason {
			t.Errorf("%s: Reason(%v) = %q, want %q", tt.name, tt.err, got, tt.reason)
		}
		v := client.FieldViolations(tt.err)
		switch {
		case tt.field == "" && len(v) != 0:
			t.Errorf("%s: FieldViolations = %v, want none", tt.name, v)
		case tt.field != "" && (len(v) != 1 || v[0].GetField() != tt.field || v[0].GetDescription() == ""):
			t.Errorf("%s: FieldViolations = %v, want one of %s", tt.name, v, tt.field)
		}
	}
	if info := client.ErrorInfo(second(c.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "h-g", MaxEvents: 11}))); info.GetMetadata()["setting"] != "-max-in-flight" {
		t.Errorf("ErrorInfo past the in-flight limit = %v, want metadata setting -max-in-flight", info)
	}
	other := errors.New("not the service's")
	if client.IsNotFound(other) || client.IsInvalid(nil) || client.Reason(other) != "" || client.FieldViolations(other) != nil || client.ErrorInfo(nil) != nil {
		t.Error("the helpers found something in an error that is not the service's")
	}
}

func second[T any](_ T, err error) error { return err }

// cancelTwice cancels an order, and returns the error of cancelling it
// again.
func cancelTwice(ctx context.Context, c *client.Client) error {
	if _, err := c.Checkout(ctx, &pb.CheckoutRequest{OrderId: "h-3"}); err != nil {
		return err
	}
	if _, err := c.CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: "h-3"}); err != nil {
		return err
	}
	_, err := c.CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: "h-3"})
	return err
}
