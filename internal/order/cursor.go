package order

import (
	"strconv"
	"strings"
	"time"
)

// Offset is a position in one partition of the expiration log: the event's
// time in milliseconds and a sequence number within that millisecond. It has
// the form of a Redis stream id ("1732170000000-0") so that both stores use
// the same offsets. The zero Offset is the position before every event. The
// API's cursor is a Cursor, one Offset per partition; with one partition
// its text is an Offset's.
type Offset struct {
	Ms  uint64
	Seq uint64
}

// ParseOffset reads the text form of an Offset; its error names after_cursor.
func ParseOffset(s string) (Offset, error) { return parseOffset("after_cursor", s) }

// parseOffset is ParseOffset with an error about field.
func parseOffset(field, s string) (Offset, error) {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok || ms == "" || seq == "" || len(s) > 41 {
		return Offset{}, Fail(ReasonInvalidCursor, field, "%s %q is not a cursor: pass the cursor field of a received event, like \"1732170000000-0\"", field, Clip(s))
	}
	m, err1 := strconv.ParseUint(ms, 10, 64)
	q, err2 := strconv.ParseUint(seq, 10, 64)
	if err1 != nil || err2 != nil {
		return Offset{}, Fail(ReasonInvalidCursor, field, "%s %q is not a cursor: pass the cursor field of a received event, like \"1732170000000-0\"", field, Clip(s))
	}
	return Offset{Ms: m, Seq: q}, nil
}

// String returns the text form, "<ms>-<seq>".
func (c Offset) String() string {
	return strconv.FormatUint(c.Ms, 10) + "-" + strconv.FormatUint(c.Seq, 10)
}

// IsZero reports whether c is the position before every event.
func (c Offset) IsZero() bool { return c == Offset{} }

// Less reports whether c comes before d in the log.
func (c Offset) Less(d Offset) bool {
	return c.Ms < d.Ms || (c.Ms == d.Ms && c.Seq < d.Seq)
}

// Next returns the offset that follows c within the same millisecond.
func (c Offset) Next() Offset { return Offset{Ms: c.Ms, Seq: c.Seq + 1} }

// Clip shortens s for quoting in an error message, so that a huge input is
// not echoed whole.
func Clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// CheckOffset says whether a watch may resume after c, an offset of a
// cursor, given the store's clock and retention: an offset older than
// retention may have lost events to trimming, and one ahead of the clock
// comes from another log.
func CheckOffset(c Offset, nowMs, retentionMs uint64) error {
	if c.IsZero() {
		return nil
	}
	if c.Ms > nowMs {
		return Fail(ReasonCursorUnknown, "", "cursor %s is ahead of this event log (it is later than the store's clock); it does not come from this service's log", c)
	}
	if nowMs > retentionMs && c.Ms < nowMs-retentionMs {
		return Fail(ReasonCursorExpired, "", "cursor %s is older than the retention period (%s), so events after it may be gone; start again without a cursor", c, FormatDuration(time.Duration(retentionMs)*time.Millisecond))
	}
	return nil
}

// Cursor is a position in the whole expiration log, the API's cursor: one
// Offset per partition of the store. The API's fields cursor, after_cursor,
// start_after_cursor and a group's position all hold one. Each partition's events are in order; events of
// different partitions have no order between them, so a watcher's cursor
// is where it is in each of them. Its text form is the partitions' offsets
// joined by commas, in partition order; with one partition (one Redis, or the
// memory store) that is a plain cursor such as "1732170000000-0".
type Cursor []Offset

// MaxPartitions bounds the partitions of a log, and so of a Cursor.
const MaxPartitions = 1024

// ParseCursor reads the text form of a Cursor. Whether it has as many
// parts as the log has partitions is for the log to say. Its error is
// about field, the request field that held s.
func ParseCursor(field, s string) (Cursor, error) {
	parts := strings.Split(s, ",")
	if len(parts) > MaxPartitions {
		return nil, Fail(ReasonInvalidCursor, field, "%s is not a cursor: it has more than %d parts; pass the cursor field of a received event", field, MaxPartitions)
	}
	p := make(Cursor, len(parts))
	for i, part := range parts {
		c, err := parseOffset(field, part)
		if err != nil {
			if len(parts) == 1 {
				return nil, err
			}
			return nil, Fail(ReasonInvalidCursor, field, "%s %q is not a cursor: part %d, %q, is not of the form \"1732170000000-0\"; pass the cursor field of a received event", field, Clip(s), i+1, Clip(part))
		}
		p[i] = c
	}
	return p, nil
}

// CheckParts says whether p has one part per partition of a log of n
// partitions. The message quotes p clipped: a cursor can be 43 KB long. It
// names no field: the caller's request knows it (see WithField).
func (p Cursor) CheckParts(n int) error {
	if len(p) != n {
		return Fail(ReasonInvalidCursor, "", "cursor %q has %d part(s), but this service's expiration log has %d partition(s): it does not come from this service; pass the cursor field of a received event", Clip(p.String()), len(p), n)
	}
	return nil
}

// String returns the text form. Every event of a watch carries one, so it
// is built in one buffer: on a cluster's 64 partitions, the string of each
// offset was 8% of the service's CPU while events flowed (benchmark 6's
// profile).
func (p Cursor) String() string {
	b := make([]byte, 0, len(p)*24)
	for i, c := range p {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, c.Ms, 10)
		b = append(b, '-')
		b = strconv.AppendUint(b, c.Seq, 10)
	}
	return string(b)
}

// Clone returns a copy that shares no memory with p.
func (p Cursor) Clone() Cursor { return append(Cursor(nil), p...) }

// Behind reports whether ev comes after p in its partition, that is, whether
// a watcher at p has yet to see it.
func (p Cursor) Behind(ev Event) bool { return p[ev.Partition].Less(ev.Offset) }

// EventID is an event's identity: its partition and its offset there, which
// no other event of the log has. Its text form, "<partition>/<ms>-<seq>", is
// how the API names one event, under three names:
//
//   - a dead letter's id (dead_letter_id) is the id of the event the group
//     gave up on;
//   - an ack id (AckID) is the id of the event delivered followed by
//     "/<attempt>": it names one delivery of the event, and a later
//     delivery of the same event has another;
//   - a push's webhook-id is "<group>_" followed by the id (push.WebhookID):
//     the same for every attempt, so that a receiver can drop a repeat.
//
// An EventID is not a Cursor: a cursor is a position in every partition,
// what a watcher passes to resume after the event; an EventID names the one
// event.
type EventID struct {
	Partition int
	Offset    Offset
}

// ID returns the event's identity.
func (e Event) ID() EventID { return EventID{Partition: e.Partition, Offset: e.Offset} }

// String returns the text form that ParseEventID reads.
func (id EventID) String() string {
	return strconv.Itoa(id.Partition) + "/" + id.Offset.String()
}

// ParseEventID reads the text form of an EventID; ok is false for text that
// is not one, such as a partition out of range or not in canonical decimal.
func ParseEventID(s string) (id EventID, ok bool) {
	p, cs, found := strings.Cut(s, "/")
	if !found {
		return EventID{}, false
	}
	part, err := strconv.Atoi(p)
	if err != nil || part < 0 || part >= MaxPartitions || strconv.Itoa(part) != p {
		return EventID{}, false
	}
	c, err := ParseOffset(cs)
	if err != nil {
		return EventID{}, false
	}
	return EventID{Partition: part, Offset: c}, true
}
