package gateway

import (
	"math/bits"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// Marshal encodes the answers of the busiest calls, an Order and a
// CheckoutResponse, and the events of a watch by hand, and every other
// message with protojson. Encoding through protoreflect was about a sixth of
// the CPU of a REST Checkout or GetOrder, and 40% of the service's when a
// REST watcher received 100,000 expirations within a second (benchmark 1b);
// this writes the same JSON (the same fields, names,
// order and values as protojson with EmitDefaultValues, which
// TestMarshalMatchesProtojson holds it to) in a tenth of the time. A value
// protojson would refuse (a string that is not UTF-8, a time out of range)
// goes to protojson, for its error.
func (m *jsonMarshaler) Marshal(v any) ([]byte, error) {
	var (
		out []byte
		ok  bool
	)
	switch msg := v.(type) {
	case *pb.Order:
		out, ok = appendOrder(make([]byte, 0, 256), msg)
	case *pb.CheckoutResponse:
		out, ok = appendCheckoutResponse(make([]byte, 0, 256), msg)
	case *pb.ExpirationEvent:
		out, ok = appendExpirationEvent(make([]byte, 0, 256), msg)
	}
	if ok {
		return out, nil
	}
	return m.JSONPb.Marshal(v)
}

func appendCheckoutResponse(b []byte, r *pb.CheckoutResponse) ([]byte, bool) {
	b = append(b, '{')
	ok := true
	if o := r.GetOrder(); o != nil {
		b = append(b, `"order":`...)
		if b, ok = appendOrder(b, o); !ok {
			return nil, false
		}
		b = append(b, ',')
	}
	b = append(b, `"created":`...)
	b = strconv.AppendBool(b, r.GetCreated())
	return append(b, '}'), true
}

func appendOrder(b []byte, o *pb.Order) ([]byte, bool) {
	ok := true
	b = append(b, `{"orderId":`...)
	if b, ok = appendString(b, o.GetOrderId()); !ok {
		return nil, false
	}
	b = append(b, `,"status":`...)
	if name, known := pb.OrderStatus_name[int32(o.GetStatus())]; known {
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, '"')
	} else {
		b = strconv.AppendInt(b, int64(o.GetStatus()), 10)
	}
	if b, ok = appendTimestampField(b, `,"createdAt":`, o.GetCreatedAt()); !ok {
		return nil, false
	}
	if b, ok = appendTimestampField(b, `,"deadline":`, o.GetDeadline()); !ok {
		return nil, false
	}
	if d := o.GetTtlRemaining(); d != nil {
		b = append(b, `,"ttlRemaining":`...)
		if b, ok = appendDuration(b, d); !ok {
			return nil, false
		}
	}
	if b, ok = appendTimestampField(b, `,"closedAt":`, o.GetClosedAt()); !ok {
		return nil, false
	}
	b = append(b, `,"metadata":`...)
	if b, ok = appendMetadata(b, o.GetMetadata()); !ok {
		return nil, false
	}
	b = append(b, `,"reschedules":`...)
	b = strconv.AppendInt(b, int64(o.GetReschedules()), 10)
	return append(b, '}'), true
}

func appendExpirationEvent(b []byte, ev *pb.ExpirationEvent) ([]byte, bool) {
	ok := true
	b = append(b, `{"cursor":`...)
	if b, ok = appendString(b, ev.GetCursor()); !ok {
		return nil, false
	}
	b = append(b, `,"orderId":`...)
	if b, ok = appendString(b, ev.GetOrderId()); !ok {
		return nil, false
	}
	if b, ok = appendTimestampField(b, `,"deadline":`, ev.GetDeadline()); !ok {
		return nil, false
	}
	if b, ok = appendTimestampField(b, `,"expiredAt":`, ev.GetExpiredAt()); !ok {
		return nil, false
	}
	b = append(b, `,"metadata":`...)
	if b, ok = appendMetadata(b, ev.GetMetadata()); !ok {
		return nil, false
	}
	return append(b, '}'), true
}

// appendMetadata writes a map of metadata as protojson does: its entries in
// the order of their keys.
func appendMetadata(b []byte, meta map[string]string) ([]byte, bool) {
	ok := true
	b = append(b, '{')
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	// protojson writes a map's entries in the order of their keys.
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		if b, ok = appendString(b, k); !ok {
			return nil, false
		}
		b = append(b, ':')
		if b, ok = appendString(b, meta[k]); !ok {
			return nil, false
		}
	}
	return append(b, '}'), true
}

// The range of a Timestamp and a Duration that protojson encodes.
const (
	minTimestampSeconds  = -62135596800 // 0001-01-01T00:00:00Z
	maxTimestampSeconds  = 253402300799 // 9999-12-31T23:59:59Z
	maxSecondsInDuration = 315576000000
)

// appendTimestampField writes the field name (`,"name":`) and ts, or
// nothing when ts is nil: protojson leaves an unset message field out, even
// with EmitDefaultValues.
func appendTimestampField(b []byte, name string, ts *timestamppb.Timestamp) ([]byte, bool) {
	if ts == nil {
		return b, true
	}
	return appendTimestamp(append(b, name...), ts)
}

// appendTimestamp writes t as protojson does: RFC 3339 in UTC, with 0, 3, 6
// or 9 digits of fraction.
func appendTimestamp(b []byte, t *timestamppb.Timestamp) ([]byte, bool) {
	secs, nanos := t.GetSeconds(), t.GetNanos()
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos >= 1e9 {
		return nil, false
	}
	b = append(b, '"')
	b = time.Unix(secs, 0).UTC().AppendFormat(b, "2006-01-02T15:04:05")
	b = appendFraction(b, nanos)
	return append(b, `Z"`...), true
}

// appendDuration writes d as protojson does: seconds with 0, 3, 6 or 9
// digits of fraction, and "s".
func appendDuration(b []byte, d *durationpb.Duration) ([]byte, bool) {
	secs, nanos := d.GetSeconds(), d.GetNanos()
	if secs < -maxSecondsInDuration || secs > maxSecondsInDuration || nanos <= -1e9 || nanos >= 1e9 ||
		(secs > 0 && nanos < 0) || (secs < 0 && nanos > 0) {
		return nil, false
	}
	b = append(b, '"')
	if secs < 0 || nanos < 0 {
		b = append(b, '-')
		secs, nanos = -secs, -nanos
	}
	b = strconv.AppendInt(b, secs, 10)
	b = appendFraction(b, nanos)
	return append(b, `s"`...), true
}

// appendFraction writes nanos (0 to 999,999,999) as a fraction of a second
// with 0, 3, 6 or 9 digits, the fewest that hold it exactly.
func appendFraction(b []byte, nanos int32) []byte {
	if nanos == 0 {
		return b
	}
	digits := 9
	for digits > 3 && nanos%1000 == 0 {
		nanos /= 1000
		digits -= 3
	}
	b = append(b, '.')
	s := strconv.AppendInt(nil, int64(nanos), 10)
	for range digits - len(s) {
		b = append(b, '0')
	}
	return append(b, s...)
}

// appendString writes s as a JSON string with protojson's escapes; it
// refuses a string that is not UTF-8, as protojson does.
func appendString(b []byte, s string) ([]byte, bool) {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				return nil, false
			}
			b = append(b, s[i:i+n]...)
			i += n
			continue
		}
		i++
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c >= ' ':
			b = append(b, c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, `\u`...)
			b = append(b, "0000"[1+(bits.Len32(uint32(c))-1)/4:]...)
			b = strconv.AppendUint(b, uint64(c), 16)
		}
	}
	return append(b, '"'), true
}
