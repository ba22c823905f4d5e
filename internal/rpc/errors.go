package rpc

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

var kindCodes = map[order.Kind]codes.Code{
	order.KindInvalid:            codes.InvalidArgument,
	order.KindNotFound:           codes.NotFound,
	order.KindFailedPrecondition: codes.FailedPrecondition,
	order.KindOutOfRange:         codes.OutOfRange,
	order.KindUnavailable:        codes.Unavailable,
	order.KindResourceExhausted:  codes.ResourceExhausted,
	order.KindAborted:            codes.Aborted,
	order.KindAlreadyExists:      codes.AlreadyExists,
}

// status translates an error into a gRPC status: a domain error keeps its
// message, the end of the caller's context its own code, and anything else
// becomes Internal with the detail logged here and never sent.
func (s *Service) status(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	// A call whose own deadline passed is told so, whatever the store made
	// of the work that deadline cut short (a Redis call or a wait for its
	// partition's batch is "unavailable" to the store).
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, "the call's deadline passed")
	}
	var oe *order.Error
	if errors.As(err, &oe) {
		if c, ok := kindCodes[oe.Kind]; ok {
			if oe.Err != nil {
				s.log.DebugContext(ctx, "call failed", "code", c, "err", oe.Err)
			}
			return status.Error(c, oe.Msg)
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "the call was cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "the call's deadline passed")
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status, e.g. from a failed Send
	}
	s.log.ErrorContext(ctx, "internal error", slog.Any("err", err))
	return status.Error(codes.Internal, "internal error")
}

// renameField rewrites the field a domain error names, for a call whose
// field has another name than the one the domain's check knows.
func renameField(err error, from, to string) error {
	var oe *order.Error
	if !errors.As(err, &oe) {
		return err
	}
	c := *oe
	c.Msg = strings.ReplaceAll(c.Msg, from, to)
	return &c
}
