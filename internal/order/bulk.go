package order

import "time"

// BulkChange is what a bulk operation does to each pending order it
// matches: cancel it, or give it a new deadline (a TTL from the moment of
// the change, an absolute At, or its deadline moved by Shift, later or
// earlier). A new deadline must be after now and at most MaxTTL from now at
// the moment of the change; an order for which it is not counts as failed.
type BulkChange struct {
	Cancel bool
	TTL    time.Duration
	At     time.Time
	Shift  time.Duration
	MaxTTL time.Duration
}

// NewDeadline returns the deadline the change gives an order due at d, at
// the store's now, and whether it is allowed (after now, within MaxTTL).
func (c BulkChange) NewDeadline(d, now time.Time) (time.Time, bool) {
	var nd time.Time
	switch {
	case !c.At.IsZero():
		nd = c.At.Truncate(time.Millisecond)
	case c.Shift != 0:
		nd = d.Add(c.Shift.Truncate(time.Millisecond))
	default:
		nd = now.Add(c.TTL.Truncate(time.Millisecond))
	}
	return nd, nd.After(now) && !nd.After(now.Add(c.MaxTTL))
}

// OpState is where a bulk operation is.
type OpState int

// The states of a bulk operation: running until every matching order was
// dealt with (succeeded), a cancellation stopped it, or it could not go on
// (failed, with an error).
const (
	OpRunning OpState = iota + 1
	OpSucceeded
	OpCancelled
	OpFailed
)

var opStateNames = map[OpState]string{OpRunning: "running", OpSucceeded: "succeeded", OpCancelled: "cancelled", OpFailed: "failed"}

func (s OpState) String() string { return opStateNames[s] }

// ParseOpState is the inverse of String; 0 for anything else.
func ParseOpState(s string) OpState {
	for k, v := range opStateNames {
		if v == s {
			return k
		}
	}
	return 0
}

// Progress counts what a bulk operation did. Matched counts the pending
// orders the filter matched when the operation looked; each of them ends
// in exactly one of the other three counts once the operation is done:
// Changed (rescheduled or cancelled by it), Skipped (closed or due by the
// time the operation came to it, or no longer matching after another
// change: it expired, or was completed, cancelled or rescheduled away,
// not by the operation) or Failed (the change was not allowed for it: a new
// deadline not after now or past the maximum ttl). A dry run only counts
// Matched.
type Progress struct {
	Matched, Changed, Skipped, Failed int64
}

// Add adds q to p.
func (p *Progress) Add(q Progress) {
	p.Matched += q.Matched
	p.Changed += q.Changed
	p.Skipped += q.Skipped
	p.Failed += q.Failed
}

// Operation is a bulk change of the pending orders a filter matches, run by
// the service to its end whoever started it: a long-running operation.
type Operation struct {
	ID     string
	Filter string
	Change BulkChange
	// DryRun operations only count the orders the filter matches.
	DryRun   bool
	State    OpState
	Progress Progress
	// Error says why a failed operation stopped.
	Error   string
	Created time.Time
	Updated time.Time
	// Ended is when it succeeded, was cancelled or failed; zero while
	// running.
	Ended time.Time
}

// Done reports whether the operation has ended.
func (o Operation) Done() bool { return o.State != OpRunning }

// OperationNotFound is the error for an unknown operation id.
func OperationNotFound(id string) error {
	return Fail(ReasonOperationNotFound, "name", "operation %q not found (never started, or ended longer ago than the retention period)", id)
}

// ValidateBulkChange checks a bulk change's request: exactly one of
// cancel, ttl, deadline or shift.
func ValidateBulkChange(c BulkChange) error {
	n := 0
	for _, set := range []bool{c.Cancel, c.TTL != 0, !c.At.IsZero(), c.Shift != 0} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return Errorf(KindInvalid, "give the change: cancel, ttl (a new ttl from the moment of the change), deadline, or shift (a duration added to each deadline)")
	case n > 1:
		return Errorf(KindInvalid, "give one change only: cancel, ttl, deadline or shift")
	case c.TTL < 0:
		return Fail(ReasonInvalidTTL, "ttl", "ttl must be more than zero (got %s)", FormatDuration(c.TTL))
	case c.TTL > c.MaxTTL:
		return Fail(ReasonInvalidTTL, "ttl", "ttl %s is more than the maximum of %s", FormatDuration(c.TTL), FormatDuration(c.MaxTTL))
	case c.Shift < -c.MaxTTL || c.Shift > c.MaxTTL:
		return Fail(ReasonInvalidArgument, "shift", "shift %s is more than the maximum ttl of %s either way", FormatDuration(c.Shift), FormatDuration(c.MaxTTL))
	}
	return nil
}

// String describes the change, for logs.
func (c BulkChange) String() string {
	switch {
	case c.Cancel:
		return "cancel"
	case !c.At.IsZero():
		return "deadline " + FormatTime(c.At)
	case c.Shift != 0:
		return "shift " + FormatDuration(c.Shift)
	}
	return "ttl " + FormatDuration(c.TTL)
}
