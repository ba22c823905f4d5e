package order

import (
	"strconv"
	"strings"
	"time"
)

// Cursor is a position in the expiration log: the event's time in
// milliseconds and a sequence number within that millisecond. It has the
// form of a Redis stream id ("1732170000000-0") so that both stores use the
// same cursors. The zero Cursor is the position before every event.
type Cursor struct {
	Ms  uint64
	Seq uint64
}

// ParseCursor reads the text form of a Cursor.
func ParseCursor(s string) (Cursor, error) {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok || ms == "" || seq == "" || len(s) > 41 {
		return Cursor{}, Errorf(KindInvalid, "after_cursor %q is not a cursor: pass the cursor field of a received event, like \"1732170000000-0\"", clip(s))
	}
	m, err1 := strconv.ParseUint(ms, 10, 64)
	q, err2 := strconv.ParseUint(seq, 10, 64)
	if err1 != nil || err2 != nil {
		return Cursor{}, Errorf(KindInvalid, "after_cursor %q is not a cursor: pass the cursor field of a received event, like \"1732170000000-0\"", clip(s))
	}
	return Cursor{Ms: m, Seq: q}, nil
}

// String returns the text form, "<ms>-<seq>".
func (c Cursor) String() string {
	return strconv.FormatUint(c.Ms, 10) + "-" + strconv.FormatUint(c.Seq, 10)
}

// IsZero reports whether c is the position before every event.
func (c Cursor) IsZero() bool { return c == Cursor{} }

// Less reports whether c comes before d in the log.
func (c Cursor) Less(d Cursor) bool {
	return c.Ms < d.Ms || (c.Ms == d.Ms && c.Seq < d.Seq)
}

// Next returns the cursor that follows c within the same millisecond.
func (c Cursor) Next() Cursor { return Cursor{Ms: c.Ms, Seq: c.Seq + 1} }

// clip shortens s for quoting in an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// CheckCursor says whether a watch may resume after c, given the store's
// clock and retention: a cursor older than retention may have lost events to
// trimming, and one ahead of the clock comes from another log.
func CheckCursor(c Cursor, nowMs, retentionMs uint64) error {
	if c.IsZero() {
		return nil
	}
	if c.Ms > nowMs {
		return Errorf(KindOutOfRange, "after_cursor %s is ahead of this event log (it is later than the store's clock); it does not come from this service's log", c)
	}
	if nowMs > retentionMs && c.Ms < nowMs-retentionMs {
		return Errorf(KindOutOfRange, "after_cursor %s is older than the retention period (%s), so events after it may be gone; start a new watch without after_cursor", c, time.Duration(retentionMs)*time.Millisecond)
	}
	return nil
}
