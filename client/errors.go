package client

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the domain of the google.rpc.ErrorInfo the service puts in
// the details of its errors; Reason reads the reason of that domain only.
const ErrorDomain = "orderexpiry.dev"

// IsNotFound reports whether err says that what a call named does not
// exist: an order never checked out or closed longer ago than the
// retention, a consumer group, an operation.
func IsNotFound(err error) bool { return status.Code(err) == codes.NotFound }

// IsInvalid reports whether err refuses the request as it was written
// (INVALID_ARGUMENT); FieldViolations says which fields to fix.
func IsInvalid(err error) bool { return status.Code(err) == codes.InvalidArgument }

// IsFailedPrecondition reports whether err refuses a call that the state
// of things does not allow, such as completing an order already closed
// (reason ORDER_CLOSED).
func IsFailedPrecondition(err error) bool { return status.Code(err) == codes.FailedPrecondition }

// IsAborted reports whether err says that another change came first (a
// reschedule whose expected_deadline no longer holds): read and retry.
func IsAborted(err error) bool { return status.Code(err) == codes.Aborted }

// IsAlreadyExists reports whether err refuses to create what exists with
// other settings: an order pending under the id for another request, a
// consumer group.
func IsAlreadyExists(err error) bool { return status.Code(err) == codes.AlreadyExists }

// IsOutOfRange reports whether err refuses a cursor that the expiration
// log cannot resume from: start again without one.
func IsOutOfRange(err error) bool { return status.Code(err) == codes.OutOfRange }

// IsResourceExhausted reports whether err says that a limit was reached
// (watchers, groups, consumers, Redis's memory); Reason says which.
func IsResourceExhausted(err error) bool { return status.Code(err) == codes.ResourceExhausted }

// IsUnavailable reports whether err says that the service or its store
// cannot serve now; retrying later may work.
func IsUnavailable(err error) bool { return status.Code(err) == codes.Unavailable }

// Reason returns the reason the service gave for err, such as
// "ORDER_NOT_FOUND" or "INVALID_TTL" (docs/api.md lists them), or "" for
// an error that carries none: one that did not come from the service, or a
// status such as DEADLINE_EXCEEDED made by gRPC itself.
func Reason(err error) string { return ErrorInfo(err).GetReason() }

// ErrorInfo returns the google.rpc.ErrorInfo of ErrorDomain in err's
// details, or nil. Besides the reason, its metadata may name the request
// field ("field") and the server setting that lifts a limit ("setting").
func ErrorInfo(err error) *errdetails.ErrorInfo {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info
		}
	}
	return nil
}

// FieldViolations returns the fields an INVALID_ARGUMENT error says to
// fix, each with its path in the request as the proto names it
// ("order_id", "push_config.url", "requests[2].ttl") and what is wrong with
// it; nil for an error that names no field.
func FieldViolations(err error) []*errdetails.BadRequest_FieldViolation {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return nil
	}
	var out []*errdetails.BadRequest_FieldViolation
	for _, d := range st.Details() {
		if bad, ok := d.(*errdetails.BadRequest); ok {
			out = append(out, bad.GetFieldViolations()...)
		}
	}
	return out
}
