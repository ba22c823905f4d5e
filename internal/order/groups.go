package order

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Group is a consumer group: a named, durable subscription to the
// expiration log. Every expiration after the group's start reaches it;
// within the group each event is in flight at one consumer at a time, until
// it is acknowledged, handed back, redelivered after its ack deadline, or
// given up as a dead letter after MaxDeliveries deliveries.
type Group struct {
	ID string
	// AckDeadline is how long a consumer has to acknowledge a delivery
	// before the event is delivered again.
	AckDeadline time.Duration
	// MaxDeliveries is how many deliveries an event gets; one that is not
	// acknowledged after that many becomes a dead letter.
	MaxDeliveries int
	CreatedAt     time.Time
	// Push, when its URL is set, makes the group a push group: the
	// service's replicas deliver its events to that endpoint.
	Push PushConfig
}

// SameSettings says whether two groups were asked for with the same
// settings: creating a group again with them answers the existing one.
func (g Group) SameSettings(o Group) bool {
	return g.ID == o.ID && g.AckDeadline == o.AckDeadline && g.MaxDeliveries == o.MaxDeliveries && g.Push == o.Push
}

// OwnRedeliveryDelay is how much later an event whose ack deadline lapsed
// at a consumer is due to that same consumer than to the others. The others
// get the first chance at it: otherwise the consumer that let it lapse is as
// likely as any to take it back the moment it is due, and one stuck
// consumer takes its own events back, deadline after deadline, until they
// are dead letters, while the others could have handled them. It is half
// the ack deadline, at most 2s: every consumer's stream looks for due
// redeliveries at least every second. An event handed back (a nack) is due
// to every consumer alike.
func (g Group) OwnRedeliveryDelay() time.Duration {
	return min(g.AckDeadline/2, 2*time.Second)
}

// RedeliveryPoll is how often a consumer looks for the group's due
// redeliveries: an event is delivered again at most this long after its
// ack deadline or its nack's retry_after.
func (g Group) RedeliveryPoll() time.Duration {
	return min(max(g.AckDeadline/4, 50*time.Millisecond), time.Second)
}

// GroupState is where a group is in the log.
type GroupState struct {
	// Position is the last event delivered to the group, per partition:
	// the cursor the API shows as the group's position.
	Position Cursor
	// Backlog counts the events no consumer has: those after Position,
	// not delivered yet, and the dead letters put back (Redrive), not
	// delivered again yet.
	Backlog int64
	// InFlight counts the events delivered and neither acknowledged nor
	// dead-lettered, redeliveries due included. An event whose last
	// delivery lapsed is a dead letter, not in flight.
	InFlight int64
	// DeadLetters counts the events the group gave up on.
	DeadLetters int64
	// OldestUnacked is when the oldest event that the group has neither
	// acknowledged nor dead-lettered was logged; zero when there is none.
	OldestUnacked time.Time
}

// Delivery is an event handed to a consumer of a group.
type Delivery struct {
	// AckID names this delivery for AcknowledgeExpirations and
	// NackExpirations.
	AckID AckID
	Event Event
}

// AckID names one delivery of an event: the event's EventID and the
// delivery's attempt (1 for the first). Its text form is
// "<partition>/<ms>-<seq>/<attempt>", the event id's followed by the
// attempt.
type AckID struct {
	EventID
	Attempt int
}

// String returns the text form that ParseAckID reads.
func (a AckID) String() string {
	return a.EventID.String() + "/" + strconv.Itoa(a.Attempt)
}

// ParseAckID reads an ack id; ok is false for text that is not one.
func ParseAckID(s string) (AckID, bool) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return AckID{}, false
	}
	id, ok := ParseEventID(s[:i])
	a := s[i+1:]
	attempt, err := strconv.Atoi(a)
	if !ok || err != nil || attempt < 1 || strconv.Itoa(attempt) != a {
		return AckID{}, false
	}
	return AckID{EventID: id, Attempt: attempt}, true
}

// AckStatus is what became of one ack id of an acknowledgement or a nack.
type AckStatus int

// The outcomes of acknowledging (or handing back) one delivery.
const (
	// AckDone: acknowledged (or handed back, for a nack).
	AckDone AckStatus = iota
	// AckUnknown: not the ack id of an event delivered to this group.
	AckUnknown
	// AckNotInFlight: the event was acknowledged or dead-lettered already.
	AckNotInFlight
	// AckExpired: the delivery's ack deadline passed, or the event was
	// delivered again since; the later delivery's ack id counts.
	AckExpired
)

var ackStatusNames = [...]string{"done", "unknown", "not in flight", "expired"}

func (s AckStatus) String() string {
	if s < 0 || int(s) >= len(ackStatusNames) {
		return fmt.Sprintf("AckStatus(%d)", int(s))
	}
	return ackStatusNames[s]
}

// DeadLetter is an event a group gave up on after its deliveries.
type DeadLetter struct {
	// ID names the dead letter for Redrive: it is the event's id, Event.ID(),
	// whose text is "<partition>/<ms>-<seq>".
	ID EventID
	// Attempts is how many times the event was delivered.
	Attempts int
	Event    Event
	// FirstDelivered and LastDelivered are when its first and last
	// deliveries were made; zero when the store does not know (a dead
	// letter buried before the store kept them).
	FirstDelivered, LastDelivered time.Time
	// Reason says why the last delivery failed: the nack's reason (for a
	// push group, the endpoint's HTTP status or the error), or
	// ReasonAckDeadline when it was neither acknowledged nor handed back.
	Reason string
	// FailedAt is when the last delivery failed: the nack, or the ack
	// deadline that passed.
	FailedAt time.Time
}

// ReasonAckDeadline is a dead letter's reason when its last delivery's ack
// deadline passed.
const ReasonAckDeadline = "ack deadline passed"

// ReasonNacked is a dead letter's reason when its last delivery was handed
// back without a reason.
const ReasonNacked = "nacked"

// ReasonStreamClosed is a dead letter's reason when its last delivery was
// handed back because the stream that held it closed.
const ReasonStreamClosed = "the consumer's stream closed"

// MaxNackReason is the longest nack reason in bytes: a reason is kept with
// each entry in flight, so it is short.
const MaxNackReason = 256

// ValidateNackReason checks a nack's reason: at most MaxNackReason bytes
// of UTF-8 text with no control characters (it is shown in tables and
// logs).
func ValidateNackReason(r string) error {
	if len(r) > MaxNackReason {
		return Fail(ReasonInvalidArgument, "reason", "reason has %d bytes; give at most %d", len(r), MaxNackReason)
	}
	if !utf8.ValidString(r) {
		return Fail(ReasonInvalidArgument, "reason", "reason is not valid UTF-8")
	}
	if i := strings.IndexFunc(r, unicode.IsControl); i >= 0 {
		return Fail(ReasonInvalidArgument, "reason", "reason has a control character at byte %d; give one line of text", i)
	}
	return nil
}

// FailureReason is the reason a dead letter shows for a nack with reason r.
func FailureReason(r string) string {
	if r == "" {
		return ReasonNacked
	}
	return r
}

// GroupNotFound is the error for a group id with no group.
func GroupNotFound(id string) error {
	return Fail(ReasonGroupNotFound, "group_id", "consumer group %q not found; create it first", id)
}

// GroupExists is the error for creating a group that exists with other
// settings; it names the settings that differ.
func GroupExists(old, asked Group) error {
	var diffs []string
	if old.AckDeadline != asked.AckDeadline {
		diffs = append(diffs, fmt.Sprintf("ack_deadline %s, not %s", FormatDuration(old.AckDeadline), FormatDuration(asked.AckDeadline)))
	}
	if old.MaxDeliveries != asked.MaxDeliveries {
		diffs = append(diffs, fmt.Sprintf("max_deliveries %d, not %d", old.MaxDeliveries, asked.MaxDeliveries))
	}
	diffs = append(diffs, old.Push.diff(asked.Push)...)
	return Fail(ReasonGroupExists, "group_id", "consumer group %q exists with other settings (%s); ask for its settings, or delete it first",
		old.ID, strings.Join(diffs, "; "))
}

// DefaultMaxGroupConsumers is how many consumers may hold deliveries of a
// group at once when the store is not told otherwise.
const DefaultMaxGroupConsumers = 1000

// TooManyConsumers is the error for a consumer name that holds nothing
// asking for events of a group whose limit of consumers holding deliveries
// is reached.
func TooManyConsumers(group string, limit int) error {
	return Fail(ReasonTooManyConsumers, "consumer", "consumer group %q has %d consumers holding deliveries, the most it may have; a new consumer name is taken once one of them settles its deliveries or lets them lapse: reuse the names of consumers that are gone, or raise the limit", group, limit)
}

// BadPageToken is the error for a page token of a list that it did not give.
func BadPageToken(token string) error {
	return Fail(ReasonInvalidPageToken, "page_token", "page_token %q is not a page token of this list; pass the next_page_token of the page before, or none for the first page", Clip(token))
}

// GroupStore is the part of the store contract that keeps consumer groups.
// Every error is an *Error, as Store's are.
type GroupStore interface {
	// CreateGroup creates a group whose first events are those after
	// start: nil starts after the log's last event now; a position of zero
	// cursors starts from all that is retained. A group of that id with the
	// same settings (SameSettings) is answered as it is, created false;
	// with other settings it is KindAlreadyExists. Past maxGroups groups,
	// KindResourceExhausted; a start older than retention, KindOutOfRange.
	CreateGroup(ctx context.Context, g Group, start Cursor, maxGroups int) (Group, bool, error)
	// Group returns a group and its state; KindNotFound for none.
	Group(ctx context.Context, id string) (Group, GroupState, error)
	// Groups returns every group, by id.
	Groups(ctx context.Context) ([]Group, error)
	// DeleteGroup deletes a group, its deliveries and dead letters;
	// KindNotFound for none.
	DeleteGroup(ctx context.Context, id string) error

	// Deliver hands up to max events to a consumer of a group, without
	// waiting: first the redeliveries that are due (an ack deadline passed,
	// or a nack's retry_after), oldest first, each with its attempt one
	// higher; then events after the group's position. An event whose last
	// delivery (the MaxDeliveries-th) lapsed is a dead letter from its ack
	// deadline on, in Group, DeadLetters and Redrive too, and never
	// delivered again until redriven. An event whose ack
	// deadline lapsed at this same consumer is due to it only
	// Group.OwnRedeliveryDelay later. It returns none when nothing is due.
	// A consumer that holds no delivery and finds no redelivery due is
	// refused, KindResourceExhausted (TooManyConsumers), while the store's
	// limit of consumers holding deliveries of the group is reached (on a
	// partitioned store, of a partition); only consumers that hold
	// deliveries are kept, so that a name that pulled once costs nothing.
	Deliver(ctx context.Context, group, consumer string, max int) ([]Delivery, error)
	// Ack acknowledges deliveries: an acknowledged event is never
	// delivered again. It reports each id's outcome, in order.
	Ack(ctx context.Context, group string, ids []AckID) ([]AckStatus, error)
	// Nack hands deliveries back, to be delivered again after retryAfter
	// (at most the group's ack deadline) to any consumer, the one that
	// nacked them too, with the same outcomes as Ack. A nacked delivery
	// that was the event's last makes it a dead letter at once; reason
	// (ValidateNackReason) is what its DeadLetter says then.
	Nack(ctx context.Context, group string, ids []AckID, retryAfter time.Duration, reason string) ([]AckStatus, error)
	// Release hands deliveries back as though they had not been made: due
	// at once to any consumer, their attempt not counted, so that a
	// delivery cut short by its holder (a replica that stops, a push
	// request cancelled) never makes a dead letter; the outcomes are Ack's.
	Release(ctx context.Context, group string, ids []AckID) ([]AckStatus, error)
	// DeadLetters lists a group's dead letters, oldest first, up to limit,
	// each with its attempts, their times and why the last failed,
	// after the page token (empty: from the first); next is the token of
	// the next page, empty after the last. KindInvalid for a bad token.
	DeadLetters(ctx context.Context, group, pageToken string, limit int) (letters []DeadLetter, next string, err error)
	// Redrive puts dead letters back to be delivered at once, with their
	// attempts counted from zero again: those named by ids (unknown ones
	// are skipped), or all when ids is empty. It returns how many it put
	// back.
	Redrive(ctx context.Context, group string, ids []string) (int, error)
}

// PartitionDeliverer is what a store with many partitions offers beside
// Deliver: delivering from one partition only, the one whose log just grew.
type PartitionDeliverer interface {
	DeliverPartition(ctx context.Context, partition int, group, consumer string, max int) ([]Delivery, error)
}

// DeliverChanged hands a consumer up to max events: from the partitions
// in changed when the store is a PartitionDeliverer and all is false, with
// Deliver from every partition otherwise. A consumer woken by a grown log
// then asks only the partitions that grew.
func DeliverChanged(ctx context.Context, gs GroupStore, group, consumer string, all bool, changed []int, max int) ([]Delivery, error) {
	pd, ok := gs.(PartitionDeliverer)
	if all || !ok {
		return gs.Deliver(ctx, group, consumer, max)
	}
	var out []Delivery
	for _, p := range changed {
		ds, err := pd.DeliverPartition(ctx, p, group, consumer, max-len(out))
		out = append(out, ds...)
		if err != nil || len(out) == max {
			return out, err
		}
	}
	return out, nil
}

// Moved returns the partitions whose offset moved from a to b, or nil when
// it cannot tell (a position not known yet).
func Moved(a, b Cursor) []int {
	if len(a) != len(b) {
		return nil
	}
	var out []int
	for p := range b {
		if a[p] != b[p] {
			out = append(out, p)
		}
	}
	return out
}

// CleanReason makes s a valid nack reason (ValidateNackReason): control
// characters become spaces, bad UTF-8 goes, and the text is cut to
// MaxNackReason bytes on a character's boundary, ending "…" when cut. It is
// for reasons the service writes from errors it did not choose the text of.
func CleanReason(s string) string {
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) <= MaxNackReason {
		return s
	}
	const ellipsis = "…"
	cut := MaxNackReason - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}
