package rpc

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// ErrorDomain is the domain of the google.rpc.ErrorInfo that every domain
// error carries: with it, a reason names one cause (AIP-193).
const ErrorDomain = "orderexpiry.dev"

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

// Settings name, by reason, the server setting an operator changes to
// lift the refusal: the domain's messages say "raise the limit" or "allow
// the host", and the status adds the setting's name, in the message and
// in ErrorInfo's metadata ("setting"). The server fills it in with its
// flags' names (see server.errorSettings), which the domain must not know.
type Settings map[order.ErrorReason]string

// UnaryInterceptors are the interceptors the service's unary methods need,
// first to last, after any other: unaryErrors, the one place where domain
// errors become statuses, and decodeUnary. NewServer installs them; a
// caller that serves the methods another way (the gateway's in-process
// calls) must run them too.
func (s *Service) UnaryInterceptors() []grpc.UnaryServerInterceptor {
	return []grpc.UnaryServerInterceptor{s.unaryErrors, decodeUnary}
}

// StreamInterceptors are UnaryInterceptors for streams.
func (s *Service) StreamInterceptors() []grpc.StreamServerInterceptor {
	return []grpc.StreamServerInterceptor{s.streamErrors, decodeStream}
}

// unaryErrors is the interceptor that turns the error a method returns
// into its status (see statusOf), for every unary method: the methods
// return domain errors as they are.
func (s *Service) unaryErrors(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		return nil, s.statusOf(ctx, err).Err()
	}
	return resp, nil
}

// streamErrors is unaryErrors for streams.
func (s *Service) streamErrors(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := handler(srv, ss); err != nil {
		return s.statusOf(ss.Context(), err).Err()
	}
	return nil
}

// statusOf translates an error into a gRPC status: a domain error keeps its
// message and gets details (google.rpc.ErrorInfo with its reason and, for an
// invalid request about a field, google.rpc.BadRequest naming the field),
// the end of the caller's context its own code, and anything else becomes
// Internal with the detail logged here and never sent.
func (s *Service) statusOf(ctx context.Context, err error) *status.Status {
	// A call whose own deadline passed is told so, whatever the store made
	// of the work that deadline cut short (a Redis call or a wait for its
	// partition's batch is "unavailable" to the store).
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return status.New(codes.DeadlineExceeded, "the call's deadline passed")
	}
	var oe *order.Error
	if errors.As(err, &oe) {
		if c, ok := kindCodes[oe.Kind]; ok {
			if oe.Err != nil {
				s.log.DebugContext(ctx, "call failed", "code", c, "err", oe.Err)
			}
			return s.detailed(c, oe)
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "the call was cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "the call's deadline passed")
	}
	if st, ok := status.FromError(err); ok {
		return st // already a status, e.g. from a failed Send
	}
	s.log.ErrorContext(ctx, "internal error", slog.Any("err", err))
	return status.New(codes.Internal, "internal error")
}

// detailed is the status of a domain error that is not internal.
func (s *Service) detailed(c codes.Code, oe *order.Error) *status.Status {
	reason := order.ReasonOf(oe)
	msg := oe.Msg
	info := &errdetails.ErrorInfo{Reason: string(reason), Domain: ErrorDomain}
	if oe.Field != "" {
		info.Metadata = map[string]string{"field": oe.Field}
	}
	if setting := s.settings[reason]; setting != "" {
		msg += " (" + setting + ")"
		if info.Metadata == nil {
			info.Metadata = map[string]string{}
		}
		info.Metadata["setting"] = setting
	}
	details := []protoadapt.MessageV1{info}
	if oe.Kind == order.KindInvalid && oe.Field != "" {
		details = append(details, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{
			Field: oe.Field, Description: msg, Reason: string(reason),
		}}})
	}
	st, err := status.New(c, msg).WithDetails(details...)
	if err != nil {
		return status.New(c, msg) // only a detail that does not marshal; none does
	}
	return st
}
