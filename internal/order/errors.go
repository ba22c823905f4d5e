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

// Error is an error with a Kind and a message meant for the caller.
type Error struct {
	Kind Kind
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

// Errorf returns an *Error of the given kind.
func Errorf(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// Unavailable wraps a store fault that retrying may cure.
func Unavailable(cause error) error {
	return &Error{Kind: KindUnavailable, Msg: "the order store is unavailable; retry later", Err: cause}
}

// KindOf returns the Kind of err, or KindInternal when it carries none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// NotFound is the error for an id with no order.
func NotFound(id string) error {
	return Errorf(KindNotFound, "order %q not found (never checked out, or closed longer ago than the retention period)", id)
}

// NotPending is the error for completing or cancelling (to) an order that is
// closed already.
func NotPending(o Order, to Status) error {
	verb := "complete"
	switch to {
	case StatusCancelled:
		verb = "cancel"
	case StatusPending:
		return Errorf(KindFailedPrecondition, "cannot reschedule order %q: it is %s since %s; only a pending order before its deadline can be rescheduled",
			o.ID, o.Status, o.ClosedAt.UTC().Format(time.RFC3339Nano))
	}
	return Errorf(KindFailedPrecondition, "cannot %s order %q: it is %s since %s; only a pending order before its deadline can be %s",
		verb, o.ID, o.Status, o.ClosedAt.UTC().Format(time.RFC3339Nano), to)
}

// DeadlineMismatch is the error for a reschedule whose expected deadline is
// not the order's.
func DeadlineMismatch(o Order, expected time.Time) error {
	return Errorf(KindAborted, "order %q has deadline %s, not the expected %s: another change came first; read the order and retry",
		o.ID, o.Deadline.UTC().Format(time.RFC3339Nano), expected.UTC().Format(time.RFC3339Nano))
}

// BadNewDeadline is the error for a reschedule to a deadline that is not
// after now, or further than the maximum ttl.
func BadNewDeadline(at, now time.Time, maxTTL time.Duration) error {
	if !at.After(now) {
		return Errorf(KindInvalid, "deadline %s is not after now (%s); give a later one, or a ttl",
			at.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	}
	return Errorf(KindInvalid, "deadline %s is more than the maximum ttl of %s from now (%s)",
		at.UTC().Format(time.RFC3339Nano), FormatDuration(maxTTL), now.UTC().Format(time.RFC3339Nano))
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
				o.AskedAt.UTC().Format(time.RFC3339Nano), at.UTC().Format(time.RFC3339Nano)))
		}
	case !o.AskedAt.IsZero():
		diffs = append(diffs, fmt.Sprintf("it was checked out with deadline %s, this asks for a ttl of %s",
			o.AskedAt.UTC().Format(time.RFC3339Nano), FormatDuration(it.TTL)))
	case !at.IsZero():
		diffs = append(diffs, fmt.Sprintf("it was checked out with a ttl of %s, this asks for deadline %s",
			FormatDuration(o.AskedTTL), at.UTC().Format(time.RFC3339Nano)))
	case o.AskedTTL != it.TTL.Truncate(time.Millisecond):
		diffs = append(diffs, fmt.Sprintf("it was checked out with a ttl of %s, this asks for %s", FormatDuration(o.AskedTTL), FormatDuration(it.TTL)))
	}
	if len(diffs) == 0 {
		return nil
	}
	return Errorf(KindAlreadyExists, "order %q is already pending, checked out by another request: %s; repeat the same request to read it, or use another order id",
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
