package e2e

// The sequential model of one order id that the linearizability test checks
// its histories against with porcupine. See linearizability_test.go for the
// workload that records the histories.

import (
	"fmt"
	"math"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// linSkew is how far the model lets Redis's clock, by which deadlines are
// set and come due, stand from the test's clock, by which calls are timed.
// Both are this machine's clock, so the allowance covers the millisecond
// deadlines are rounded to and the time a call spends between the test
// reading the clock and the script reading Redis's.
const linSkew = 50 * time.Millisecond

// linKind is the call an operation made.
type linKind int

const (
	linCheckout linKind = iota
	linGet
	linComplete
	linCancel
	linReschedule
)

func (k linKind) String() string {
	return [...]string{"checkout", "get", "complete", "cancel", "reschedule"}[k]
}

// linInput is an operation's call: what was asked, and the window of wall
// clock time (unix ms, widened by linSkew) within which it took effect, if
// it did. Hi is math.MaxInt64 for a call whose outcome is unknown: it may
// take effect at any time after it was made, or never.
type linInput struct {
	Kind linKind
	ID   string
	// Token is the metadata a checkout attaches ("gen"): unique to the
	// call, so that every response and expiration event names the
	// generation of the order under the id that it shows.
	Token string
	// TTL is the ttl of a checkout or of a reschedule by ttl, in ms.
	TTL int64
	// At is the new deadline of a reschedule to a deadline (unix ms), 0
	// for a reschedule by ttl.
	At int64
	// Expected is a reschedule's expected_deadline (unix ms), 0 for none.
	Expected int64
	Lo, Hi   int64
}

// linOutput is an operation's outcome: unknown (an error that may or may not
// have applied), or a status code and, for OK, the order it answered.
type linOutput struct {
	Unknown  bool
	Code     codes.Code
	Created  bool
	Status   pb.OrderStatus
	Deadline int64 // unix ms
	Token    string
}

// linState is the model's state of one order id: its last order's status,
// generation and deadline. The deadline is the truth: a PENDING order is
// expired from its deadline on, whether or not anything observed it; the
// model makes that step when an operation observes it. After an unknown
// checkout or reschedule by ttl that may have applied, the deadline is not
// known until a response shows it: Deadline is 0 then and MinDeadline is the
// earliest it can be.
type linState struct {
	Status      pb.OrderStatus // ORDER_STATUS_UNSPECIFIED: no order under the id yet
	Token       string
	Deadline    int64
	MinDeadline int64
}

const (
	pending   = pb.OrderStatus_ORDER_STATUS_PENDING
	expired   = pb.OrderStatus_ORDER_STATUS_EXPIRED
	completed = pb.OrderStatus_ORDER_STATUS_COMPLETED
	cancelled = pb.OrderStatus_ORDER_STATUS_CANCELLED
)

// linModel is the order model, partitioned by order id.
var linModel = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byID := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			id := op.Input.(linInput).ID
			if _, ok := byID[id]; !ok {
				order = append(order, id)
			}
			byID[id] = append(byID[id], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, id := range order {
			out = append(out, byID[id])
		}
		return out
	},
	Init: func() []any { return []any{linState{}} },
	Step: func(state, input, output any) []any {
		var out []any
		for _, s := range linStep(state.(linState), input.(linInput), output.(linOutput)) {
			out = append(out, s)
		}
		return out
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		call := fmt.Sprintf("%s(%s", in.Kind, in.ID)
		switch {
		case in.Kind == linCheckout:
			call += fmt.Sprintf(", ttl=%dms, gen=%s", in.TTL, in.Token)
		case in.Kind == linReschedule && in.At != 0:
			call += fmt.Sprintf(", at=%d", in.At)
		case in.Kind == linReschedule:
			call += fmt.Sprintf(", ttl=%dms", in.TTL)
		}
		if in.Expected != 0 {
			call += fmt.Sprintf(", expected=%d", in.Expected)
		}
		call += ")"
		switch {
		case out.Unknown:
			return call + " -> unknown"
		case out.Code != codes.OK:
			return call + " -> " + out.Code.String()
		}
		shown := fmt.Sprintf("%s -> %s gen=%s deadline=%d", call, out.Status, out.Token, out.Deadline)
		if in.Kind == linCheckout {
			shown += fmt.Sprintf(" created=%v", out.Created)
		}
		return shown
	},
	DescribeState: func(state any) string {
		s := state.(linState)
		if s.Deadline == 0 && s.Status != pb.OrderStatus_ORDER_STATUS_UNSPECIFIED {
			return fmt.Sprintf("%s gen=%s deadline>=%d", s.Status, s.Token, s.MinDeadline)
		}
		return fmt.Sprintf("%s gen=%s deadline=%d", s.Status, s.Token, s.Deadline)
	},
}

// linStep returns the states the order can be in after the operation, none
// when the operation's outcome is impossible from s.
func linStep(s linState, in linInput, out linOutput) []linState {
	if out.Unknown {
		next := []linState{s} // it never took effect
		for _, a := range linAt(s, in) {
			next = append(next, linApplied(a, in)...)
		}
		return next
	}
	var next []linState
	for _, a := range linAt(s, in) {
		next = append(next, linDefinite(a, in, out)...)
	}
	return next
}

// linAt returns the states s can be in at some time within the operation's
// window: a PENDING order is still pending before its deadline and expired
// from it on.
func linAt(s linState, in linInput) []linState {
	if s.Status != pending {
		return []linState{s}
	}
	e := s
	e.Status = expired
	if s.Deadline == 0 {
		if s.MinDeadline <= in.Hi {
			return []linState{s, e}
		}
		return []linState{s}
	}
	var out []linState
	if s.Deadline > in.Lo {
		out = append(out, s)
	}
	if s.Deadline <= in.Hi {
		out = append(out, e)
	}
	return out
}

// linShows reports whether a response that shows the order as out does
// shows it as a is (pending and not due, or closed), and returns a with the
// deadline it showed.
func linShows(a linState, in linInput, out linOutput) (linState, bool) {
	if out.Status != a.Status || out.Token != a.Token {
		return a, false
	}
	if a.Deadline != 0 {
		return a, out.Deadline == a.Deadline
	}
	if out.Deadline < a.MinDeadline ||
		(a.Status == pending && out.Deadline <= in.Lo) ||
		(a.Status == expired && out.Deadline > in.Hi) {
		return a, false
	}
	a.Deadline, a.MinDeadline = out.Deadline, 0
	return a, true
}

// linSetAt reports whether a deadline set as now+ttl by the operation could
// have been set within its window.
func linSetAt(in linInput, deadline int64) bool {
	t := deadline - in.TTL
	return t >= in.Lo && t <= in.Hi
}

// linDefinite returns the state after an operation with a known outcome
// out took effect on a (as linAt gives it), none when out is impossible.
func linDefinite(a linState, in linInput, out linOutput) []linState {
	one := func(s linState, ok bool) []linState {
		if !ok {
			return nil
		}
		return []linState{s}
	}
	missing := a.Status == pb.OrderStatus_ORDER_STATUS_UNSPECIFIED
	switch in.Kind {
	case linCheckout:
		if a.Status == pending {
			// Every checkout of the test carries its own gen token in its
			// metadata: under a pending id it is another request, refused
			// (ALREADY_EXISTS), and it changes nothing.
			return one(a, out.Code == codes.AlreadyExists)
		}
		if out.Code != codes.OK {
			return nil
		}
		// No order, or a closed one: a new order under the id.
		ok := out.Created && out.Status == pending && out.Token == in.Token && linSetAt(in, out.Deadline)
		return one(linState{Status: pending, Token: in.Token, Deadline: out.Deadline}, ok)
	case linGet:
		if missing {
			return one(a, out.Code == codes.NotFound)
		}
		if out.Code != codes.OK {
			return nil
		}
		return one(linShows(a, in, out))
	case linComplete, linCancel:
		switch {
		case missing:
			return one(a, out.Code == codes.NotFound)
		case a.Status != pending:
			return one(a, out.Code == codes.FailedPrecondition)
		case out.Code != codes.OK:
			return nil
		}
		closed := a
		closed.Status = completed
		if in.Kind == linCancel {
			closed.Status = cancelled
		}
		return one(linShows(closed, in, out))
	case linReschedule:
		switch {
		case missing:
			return one(a, out.Code == codes.NotFound)
		case a.Status != pending:
			return one(a, out.Code == codes.FailedPrecondition)
		}
		// The deadline it had: known, or, when unknown and expected is
		// given, either the expected one or another.
		var next []linState
		for _, b := range linExpected(a, in) {
			switch {
			case in.Expected != 0 && b.Deadline != in.Expected:
				if out.Code == codes.Aborted {
					next = append(next, b)
				}
			case out.Code == codes.InvalidArgument:
				// A new deadline not after now: possible only for a
				// deadline that some time in the window reached.
				if in.At != 0 && in.At <= in.Hi {
					next = append(next, b)
				}
			case out.Code == codes.OK:
				ok := out.Status == pending && out.Token == b.Token
				if in.At != 0 {
					ok = ok && out.Deadline == in.At
				} else {
					ok = ok && linSetAt(in, out.Deadline)
				}
				if ok {
					next = append(next, linState{Status: pending, Token: b.Token, Deadline: out.Deadline})
				}
			}
		}
		return next
	}
	return nil
}

// linExpected splits a pending order whose deadline is unknown by a
// reschedule's expected deadline: it had that one, or another.
func linExpected(a linState, in linInput) []linState {
	if a.Deadline != 0 || in.Expected == 0 {
		return []linState{a}
	}
	other := a
	if in.Expected < a.MinDeadline || in.Expected <= in.Lo {
		return []linState{other}
	}
	known := a
	known.Deadline, known.MinDeadline = in.Expected, 0
	return []linState{known, other}
}

// linApplied returns the states after an operation with an unknown outcome
// took effect on a, whichever outcome it had.
func linApplied(a linState, in linInput) []linState {
	switch in.Kind {
	case linCheckout:
		if a.Status == pending {
			return []linState{a}
		}
		return []linState{{Status: pending, Token: in.Token, MinDeadline: in.Lo + in.TTL}}
	case linComplete, linCancel:
		if a.Status != pending {
			return []linState{a}
		}
		closed := a
		closed.Status = completed
		if in.Kind == linCancel {
			closed.Status = cancelled
		}
		return []linState{closed}
	case linReschedule:
		if a.Status != pending || (a.Deadline != 0 && in.Expected != 0 && a.Deadline != in.Expected) {
			return []linState{a}
		}
		moved := linState{Status: pending, Token: a.Token, Deadline: in.At}
		if in.At == 0 {
			moved.MinDeadline = in.Lo + in.TTL
		}
		return []linState{a, moved}
	}
	return []linState{a}
}

// linWindow is the window of an operation made from call to ret (ret zero
// for an unknown outcome), widened by linSkew, in unix ms.
func linWindow(call, ret time.Time) (lo, hi int64) {
	lo = call.Add(-linSkew).UnixMilli()
	if ret.IsZero() {
		return lo, math.MaxInt64
	}
	return lo, ret.Add(linSkew).UnixMilli()
}
