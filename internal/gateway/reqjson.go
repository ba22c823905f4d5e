package gateway

import (
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// maxDurationSeconds is the largest duration protobuf's JSON form allows
// (10,000 years).
const maxDurationSeconds = 315_576_000_000

// decodeCheckout decodes the common body of a REST Checkout by hand:
// an object of "orderId", "ttl" in whole seconds ("300s") and "metadata" of
// plain strings, in any order. It reports false, leaving req as it was, for
// anything else (a deadline, a field name in snake case, an escape in a
// string, a fraction of a second, null, a field twice, ...), which protojson
// then decodes, or refuses with its own error. protojson's decoding was
// about 5% of the service's CPU a REST Checkout; FuzzDecodeCheckout holds
// this to protojson's result wherever it reports true.
func decodeCheckout(body []byte, req *pb.CheckoutRequest) bool {
	d := reqDecoder{b: body}
	var (
		id                   string
		ttl                  int64
		meta                 map[string]string
		hasID, hasT, hasMeta bool
	)
	if !d.byte('{') {
		return false
	}
	for closed := d.byte('}'); !closed; {
		key, ok := d.str()
		if !ok || !d.byte(':') {
			return false
		}
		switch {
		case key == "orderId" && !hasID:
			id, ok = d.str()
			hasID = true
		case key == "ttl" && !hasT:
			ttl, ok = d.seconds()
			hasT = true
		case key == "metadata" && !hasMeta:
			meta, ok = d.stringMap()
			hasMeta = true
		default:
			return false
		}
		if !ok {
			return false
		}
		if closed = d.byte('}'); !closed && !d.byte(',') {
			return false
		}
	}
	d.space()
	if d.i != len(d.b) {
		return false
	}
	proto.Reset(req) // as protojson does: a retry may follow its failure
	req.OrderId = id
	if hasT {
		req.Ttl = &durationpb.Duration{Seconds: ttl}
	}
	if len(meta) > 0 {
		req.Metadata = meta
	}
	return true
}

// reqDecoder reads a JSON body from its start, refusing (ok false) what
// decodeCheckout leaves to protojson.
type reqDecoder struct {
	b []byte
	i int
}

func (d *reqDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// byte reads c, after any spaces, if it comes next.
func (d *reqDecoder) byte(c byte) bool {
	d.space()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// str reads a string of valid UTF-8 with no escape and no control
// character.
func (d *reqDecoder) str() (string, bool) {
	if !d.byte('"') {
		return "", false
	}
	start := d.i
	for d.i < len(d.b) {
		switch c := d.b[d.i]; {
		case c == '"':
			s := d.b[start:d.i]
			d.i++
			if !utf8.Valid(s) {
				return "", false
			}
			return string(s), true
		case c == '\\' || c < 0x20:
			return "", false
		}
		d.i++
	}
	return "", false
}

// seconds reads a duration of whole seconds, "0s" to "315576000000s",
// without a sign or leading zeros.
func (d *reqDecoder) seconds() (int64, bool) {
	s, ok := d.str()
	if !ok || len(s) < 2 || len(s) > 13 || s[len(s)-1] != 's' || (s[0] == '0' && len(s) > 2) {
		return 0, false
	}
	var n int64
	for _, c := range []byte(s[:len(s)-1]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, n <= maxDurationSeconds
}

// stringMap reads an object of strings, each key once.
func (d *reqDecoder) stringMap() (map[string]string, bool) {
	if !d.byte('{') {
		return nil, false
	}
	m := map[string]string{}
	if d.byte('}') {
		return m, true
	}
	for {
		k, ok := d.str()
		if !ok || !d.byte(':') {
			return nil, false
		}
		v, ok := d.str()
		if _, seen := m[k]; !ok || seen {
			return nil, false
		}
		m[k] = v
		if d.byte('}') {
			return m, true
		}
		if !d.byte(',') {
			return nil, false
		}
	}
}
