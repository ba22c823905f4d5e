package gateway

import (
	"slices"
	"time"
	"unicode/utf8"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// appendEventJSON appends ev as the watch's protojson marshalling writes it
// (EmitDefaultValues, JSON field names, fields in declaration order, map
// keys sorted, timestamps in RFC 3339 with 0, 3, 6 or 9 fractional
// digits), without protojson's reflection: in a burst of 100,000
// expirations within a second, protojson was 40% of the service's CPU
// (benchmark 1b's profile). It returns false for what it does not write
// as protojson would (a string that is not UTF-8, a missing or invalid
// timestamp); the caller then uses protojson, which fails as before.
// TestEventJSONMatchesProtojson holds it to protojson's output.
func appendEventJSON(b []byte, ev *pb.ExpirationEvent) ([]byte, bool) {
	deadline, expired := ev.GetDeadline(), ev.GetExpiredAt()
	if deadline.CheckValid() != nil || expired.CheckValid() != nil {
		return b, false
	}
	ok := true
	str := func(s string) {
		var good bool
		b, good = appendJSONString(b, s)
		ok = ok && good
	}
	b = append(b, `{"cursor":`...)
	str(ev.GetCursor())
	b = append(b, `,"orderId":`...)
	str(ev.GetOrderId())
	b = append(b, `,"deadline":`...)
	b = appendJSONTime(b, deadline.AsTime())
	b = append(b, `,"expiredAt":`...)
	b = appendJSONTime(b, expired.AsTime())
	b = append(b, `,"metadata":{`...)
	md := ev.GetMetadata()
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		str(k)
		b = append(b, ':')
		str(md[k])
	}
	b = append(b, "}}"...)
	return b, ok
}

// appendJSONTime appends t as protojson writes a Timestamp.
func appendJSONTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	layout := "2006-01-02T15:04:05.000000000Z"
	switch ns := t.Nanosecond(); {
	case ns == 0:
		layout = "2006-01-02T15:04:05Z"
	case ns%1e6 == 0:
		layout = "2006-01-02T15:04:05.000Z"
	case ns%1e3 == 0:
		layout = "2006-01-02T15:04:05.000000Z"
	}
	b = append(b, '"')
	b = t.AppendFormat(b, layout)
	return append(b, '"')
}

// appendJSONString appends s quoted as protojson quotes a string: only '"',
// '\\' and control characters escaped; false when s is not UTF-8.
func appendJSONString(b []byte, s string) ([]byte, bool) {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				return b, false
			}
			i += n
			continue
		}
		if c >= ' ' && c != '"' && c != '\\' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"'), true
}
