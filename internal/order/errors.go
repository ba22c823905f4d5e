package order

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Kind classifies an error by what the caller can do about it. The transport
// layers map each kind to their own codes in one place.
type Kind int

// The kinds of error the service reports to callers.
const (
	// KindInternal is a fault of the service; its detail is logged, not sent.
	KindInternal Kind = iota
	// KindInvalid: the request is malformed; fixing it is up to the caller.
	KindInvalid
	// KindNotFound: no such order, or it closed longer ago than retention.
	KindNotFound
	// KindFailedPrecondition: the order is not in a state that allows this.
	KindFailedPrecondition
	// KindOutOfRange: a cursor points before what the event log retains.
	KindOutOfRange
	// KindUnavailable: the store cannot be reached; retrying later may work.
	KindUnavailable
	// KindResourceExhausted: a limit was reached (for example a watcher that
	// fell too far behind).
	KindResourceExhausted
	// KindAborted: the call lost a race with another change (for example a
	// reschedule whose expected deadline no longer holds); read and retry.
	KindAborted
	// KindAlreadyExists: something by that name exists with other settings.
	KindAlreadyExists
)

// ErrorReason names the cause of an error in a few stable words, in
// UPPER_SNAKE_CASE: clients branch on it instead of on the message, which
// may be reworded. Each reason belongs to one Kind (see reasonKinds);
// docs/api.md lists them all, and a test holds the list to this file.
type ErrorReason string

// The reasons the service gives. The first of each kind is the kind's
// generic reason, given to an error made without a reason of its own.
const (
	ReasonInternal ErrorReason = "INTERNAL"

	ReasonInvalidArgument       ErrorReason = "INVALID_ARGUMENT"
	ReasonMalformedRequest      ErrorReason = "MALFORMED_REQUEST"
	ReasonInvalidID             ErrorReason = "INVALID_ID"
	ReasonInvalidTTL            ErrorReason = "INVALID_TTL"
	ReasonInvalidDeadline       ErrorReason = "INVALID_DEADLINE"
	ReasonInvalidMetadata       ErrorReason = "INVALID_METADATA"
	ReasonInvalidCursor         ErrorReason = "INVALID_CURSOR"
	ReasonInvalidFilter         ErrorReason = "INVALID_FILTER"
	ReasonInvalidPageToken      ErrorReason = "INVALID_PAGE_TOKEN"
	ReasonInvalidPushConfig     ErrorReason = "INVALID_PUSH_CONFIG"
	ReasonPushDisabled          ErrorReason = "PUSH_DISABLED"
	ReasonPushHostNotAllowed    ErrorReason = "PUSH_HOST_NOT_ALLOWED"
	ReasonPushHTTPNotAllowed    ErrorReason = "PUSH_HTTP_NOT_ALLOWED"
	ReasonPushPrivateNotAllowed ErrorReason = "PUSH_PRIVATE_NOT_ALLOWED"

	ReasonNotFound          ErrorReason = "NOT_FOUND"
	ReasonOrderNotFound     ErrorReason = "ORDER_NOT_FOUND"
	ReasonGroupNotFound     ErrorReason = "GROUP_NOT_FOUND"
	ReasonOperationNotFound ErrorReason = "OPERATION_NOT_FOUND"

	ReasonFailedPrecondition ErrorReason = "FAILED_PRECONDITION"
	ReasonOrderClosed        ErrorReason = "ORDER_CLOSED"
	ReasonPushGroup          ErrorReason = "PUSH_GROUP"
	ReasonGroupIncomplete    ErrorReason = "GROUP_INCOMPLETE"
	ReasonStoreUnsafe        ErrorReason = "STORE_UNSAFE"

	ReasonOutOfRange    ErrorReason = "OUT_OF_RANGE"
	ReasonCursorExpired ErrorReason = "CURSOR_EXPIRED"
	ReasonCursorUnknown ErrorReason = "CURSOR_UNKNOWN"

	ReasonUnavailable      ErrorReason = "UNAVAILABLE"
	ReasonStoreUnavailable ErrorReason = "STORE_UNAVAILABLE"
	ReasonWriteUnconfirmed ErrorReason = "WRITE_UNCONFIRMED"
	ReasonShuttingDown     ErrorReason = "SHUTTING_DOWN"

	ReasonResourceExhausted ErrorReason = "RESOURCE_EXHAUSTED"
	ReasonStoreFull         ErrorReason = "STORE_FULL"
	ReasonTooManyWatchers   ErrorReason = "TOO_MANY_WATCHERS"
	ReasonTooManyGroups     ErrorReason = "TOO_MANY_GROUPS"
	ReasonTooManyStreams    ErrorReason = "TOO_MANY_STREAMS"
	ReasonTooManyConsumers  ErrorReason = "TOO_MANY_CONSUMERS"
	ReasonInFlightLimit     ErrorReason = "IN_FLIGHT_LIMIT"

	ReasonAborted         ErrorReason = "ABORTED"
	ReasonDeadlineChanged ErrorReason = "DEADLINE_CHANGED"

	ReasonAlreadyExists ErrorReason = "ALREADY_EXISTS"
	ReasonOrderConflict ErrorReason = "ORDER_CONFLICT"
	ReasonGroupExists   ErrorReason = "GROUP_EXISTS"
)

// reasonKinds gives each reason its kind: the one source of the set of
// reasons (Reasons lists it).
var reasonKinds = map[ErrorReason]Kind{
	ReasonInternal: KindInternal,

	ReasonInvalidArgument: KindInvalid, ReasonMalformedRequest: KindInvalid, ReasonInvalidID: KindInvalid,
	ReasonInvalidTTL: KindInvalid, ReasonInvalidDeadline: KindInvalid, ReasonInvalidMetadata: KindInvalid,
	ReasonInvalidCursor: KindInvalid, ReasonInvalidFilter: KindInvalid, ReasonInvalidPageToken: KindInvalid,
	ReasonInvalidPushConfig: KindInvalid, ReasonPushDisabled: KindInvalid, ReasonPushHostNotAllowed: KindInvalid,
	ReasonPushHTTPNotAllowed: KindInvalid, ReasonPushPrivateNotAllowed: KindInvalid,

	ReasonNotFound: KindNotFound, ReasonOrderNotFound: KindNotFound, ReasonGroupNotFound: KindNotFound,
	ReasonOperationNotFound: KindNotFound,

	ReasonFailedPrecondition: KindFailedPrecondition, ReasonOrderClosed: KindFailedPrecondition,
	ReasonPushGroup: KindFailedPrecondition, ReasonGroupIncomplete: KindFailedPrecondition,
	ReasonStoreUnsafe: KindFailedPrecondition,

	ReasonOutOfRange: KindOutOfRange, ReasonCursorExpired: KindOutOfRange, ReasonCursorUnknown: KindOutOfRange,

	ReasonUnavailable: KindUnavailable, ReasonStoreUnavailable: KindUnavailable,
	ReasonWriteUnconfirmed: KindUnavailable, ReasonShuttingDown: KindUnavailable,

	ReasonResourceExhausted: KindResourceExhausted, ReasonStoreFull: KindResourceExhausted,
	ReasonTooManyWatchers: KindResourceExhausted, ReasonTooManyGroups: KindResourceExhausted,
	ReasonTooManyStreams: KindResourceExhausted, ReasonTooManyConsumers: KindResourceExhausted,
	ReasonInFlightLimit: KindResourceExhausted,

	ReasonAborted: KindAborted, ReasonDeadlineChanged: KindAborted,

	ReasonAlreadyExists: KindAlreadyExists, ReasonOrderConflict: KindAlreadyExists, ReasonGroupExists: KindAlreadyExists,
}

// kindReasons is the generic reason of each kind.
var kindReasons = map[Kind]ErrorReason{
	KindInternal:           ReasonInternal,
	KindInvalid:            ReasonInvalidArgument,
	KindNotFound:           ReasonNotFound,
	KindFailedPrecondition: ReasonFailedPrecondition,
	KindOutOfRange:         ReasonOutOfRange,
	KindUnavailable:        ReasonUnavailable,
	KindResourceExhausted:  ReasonResourceExhausted,
	KindAborted:            ReasonAborted,
	KindAlreadyExists:      ReasonAlreadyExists,
}

// Reasons returns every reason, sorted.
func Reasons() []ErrorReason {
	rs := make([]ErrorReason, 0, len(reasonKinds))
	for r := range reasonKinds {
		rs = append(rs, r)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i] < rs[j] })
	return rs
}

// KindOfReason returns the kind a reason belongs to, KindInternal for one
// not in the set.
func KindOfReason(r ErrorReason) Kind { return reasonKinds[r] }

// Error is an error with a Kind and a message meant for the caller.
type Error struct {
	Kind Kind
	// Reason says what went wrong in stable words, for programs; empty
	// means the kind's generic reason (see ReasonOf).
	Reason ErrorReason
	// Field is the request field the error is about, as the API names it
	// (snake_case, with a path for a nested or repeated one:
	// "push_config.url", "requests[2].ttl"); empty when it concerns no one
	// field.
	Field string
	// Msg says what went wrong and, where it can, what to fix.
	Msg string
	// Err is the underlying cause, for logs; it is never sent to callers.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of the given kind, with the kind's generic
// reason and no field.
func Errorf(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// Fail returns an *Error for a reason, of the reason's kind, about a
// request field (empty: none).
func Fail(reason ErrorReason, field, format string, args ...any) error {
	return &Error{Kind: reasonKinds[reason], Reason: reason, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// WithField returns err about field, when err is an *Error about no field
// yet; any other err is returned as it is. It is for a check shared by
// calls whose fields are named differently: its message names no field.
func WithField(err error, field string) error {
	var e *Error
	if !errors.As(err, &e) || e.Field != "" {
		return err
	}
	c := *e
	c.Field = field
	return &c
}

// Unavailable wraps a store fault that retrying may cure.
func Unavailable(cause error) error {
	return &Error{Kind: KindUnavailable, Reason: ReasonStoreUnavailable, Msg: "the order store is unavailable; retry later", Err: cause}
}

// KindOf returns the Kind of err, or KindInternal when it carries none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// ReasonOf returns the reason of err: its own, the generic reason of its
// kind when it has none, ReasonInternal when err is no *Error.
func ReasonOf(err error) ErrorReason {
	var e *Error
	if !errors.As(err, &e) {
		return ReasonInternal
	}
	if e.Reason != "" {
		return e.Reason
	}
	return kindReasons[e.Kind]
}

// NotFound is the error for an id with no order.
func NotFound(id string) error {
	return Fail(ReasonOrderNotFound, "order_id", "order %q not found (never checked out, or closed longer ago than the retention period)", id)
}

// NotPending is the error for completing or cancelling (to) an order that is
// closed already.
func NotPending(o Order, to Status) error {
	verb := "complete"
	switch to {
	case StatusCancelled:
		verb = "cancel"
	case StatusPending:
		return Fail(ReasonOrderClosed, "", "cannot reschedule order %q: it is %s since %s; only a pending order before its deadline can be rescheduled",
			o.ID, o.Status, FormatTime(o.ClosedAt))
	}
	return Fail(ReasonOrderClosed, "", "cannot %s order %q: it is %s since %s; only a pending order before its deadline can be %s",
		verb, o.ID, o.Status, FormatTime(o.ClosedAt), to)
}

// DeadlineMismatch is the error for a reschedule whose expected deadline is
// not the order's.
func DeadlineMismatch(o Order, expected time.Time) error {
	return Fail(ReasonDeadlineChanged, "expected_deadline", "order %q has deadline %s, not the expected %s: another change came first; read the order and retry",
		o.ID, FormatTime(o.Deadline), FormatTime(expected))
}

// BadNewDeadline is the error for a reschedule to a deadline that is not
// after now, or further than the maximum ttl.
func BadNewDeadline(at, now time.Time, maxTTL time.Duration) error {
	if !at.After(now) {
		return Fail(ReasonInvalidDeadline, "deadline", "deadline %s is not after now (%s); give a later one, or a ttl",
			FormatTime(at), FormatTime(now))
	}
	return Fail(ReasonInvalidDeadline, "deadline", "deadline %s is more than the maximum ttl of %s from now (%s)",
		FormatTime(at), FormatDuration(maxTTL), FormatTime(now))
}

// CheckoutConflict says whether a checkout item repeats the request that
// created the pending order o: nil when it does (the checkout answers the
// order, created false), else a KindAlreadyExists error naming what
// differs. Only the same request is a safe retry, as with Stripe's
// idempotency keys: a checkout that asks for other metadata or another ttl
// or deadline under a pending id is a mistake (two carts under one id, a
// reused id) that a silent success would hide. A ttl is compared as asked,
// not as the deadline it gave, so that a retry later in time is still the
// same request. An order whose request was not recorded (created by an
// older version) is compared by its metadata only.
func CheckoutConflict(o Order, it CheckoutItem) error {
	var diffs []string
	if keys := metadataDiff(o.Metadata, it.Metadata); len(keys) > 0 {
		diffs = append(diffs, "metadata differs at "+keys)
	}
	at := it.At.Truncate(time.Millisecond)
	switch {
	case o.AskedTTL == 0 && o.AskedAt.IsZero():
		// Not recorded: nothing to compare.
	case !o.AskedAt.IsZero() && !at.IsZero():
		if !o.AskedAt.Equal(at) {
			diffs = append(diffs, fmt.Sprintf("it was checked out with deadline %s, this asks for deadline %s",
				FormatTime(o.AskedAt), FormatTime(at)))
		}
	case !o.AskedAt.IsZero():
		diffs = append(diffs, fmt.Sprintf("it was checked out with deadline %s, this asks for a ttl of %s",
			FormatTime(o.AskedAt), FormatDuration(it.TTL)))
	case !at.IsZero():
		diffs = append(diffs, fmt.Sprintf("it was checked out with a ttl of %s, this asks for deadline %s",
			FormatDuration(o.AskedTTL), FormatTime(at)))
	case o.AskedTTL != it.TTL.Truncate(time.Millisecond):
		diffs = append(diffs, fmt.Sprintf("it was checked out with a ttl of %s, this asks for %s", FormatDuration(o.AskedTTL), FormatDuration(it.TTL)))
	}
	if len(diffs) == 0 {
		return nil
	}
	return Fail(ReasonOrderConflict, "", "order %q is already pending, checked out by another request: %s; repeat the same request to read it, or use another order id",
		o.ID, strings.Join(diffs, "; "))
}

// metadataDiff names the keys whose values differ between a and b, sorted
// and clipped, or "" when they are equal. Values are not shown: they may
// be long, and they are the caller's.
func metadataDiff(a, b map[string]string) string {
	var keys []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			keys = append(keys, strconv.Quote(Clip(k)))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, strconv.Quote(Clip(k)))
		}
	}
	if len(keys) == 0 {
		return ""
	}
	sort.Strings(keys)
	const most = 5
	if len(keys) > most {
		return "keys " + strings.Join(keys[:most], ", ") + fmt.Sprintf(" and %d more", len(keys)-most)
	}
	if len(keys) == 1 {
		return "key " + keys[0]
	}
	return "keys " + strings.Join(keys, ", ")
}
