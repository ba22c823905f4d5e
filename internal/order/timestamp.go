package order

import "time"

// FormatTime writes t as the API's JSON writes a google.protobuf.Timestamp
// (RFC 3339 in UTC, with 0, 3, 6 or 9 fractional digits, the fewest that
// hold it), so that a time in a message reads as the same time in a
// response: "2026-12-07T06:45:39.320Z", not RFC3339Nano's ".32Z".
func FormatTime(t time.Time) string {
	t = t.UTC()
	switch ns := t.Nanosecond(); {
	case ns == 0:
		return t.Format("2006-01-02T15:04:05Z")
	case ns%1e6 == 0:
		return t.Format("2006-01-02T15:04:05.000Z")
	case ns%1e3 == 0:
		return t.Format("2006-01-02T15:04:05.000000Z")
	default:
		return t.Format("2006-01-02T15:04:05.000000000Z")
	}
}
