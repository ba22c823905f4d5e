package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// durationExamples is how a duration is written in JSON, shown in the
// errors about one.
const durationExamples = `"300s", "5m", "1h30m" or "2500ms"`

// durationName is the full name of the message a duration field holds.
const durationName = "google.protobuf.Duration"

// goDurations returns body with each google.protobuf.Duration of a message
// md written the Go way ("5m", "1h30m", "2500ms", as grpcurl, the server's
// flags and its messages write them) rewritten in protobuf's JSON form
// ("300s", "5400s", "2.500s"), and nil when it has nothing to rewrite. A
// duration that is neither, or a number, is an error that shows how to
// write one. Only those values change: the rest of the body is left byte
// for byte, for protojson to decode as strictly as ever.
//
// It walks the body by the message's descriptor, so that it finds the
// durations of nested messages and lists (requests[0].ttl,
// pushConfig.timeout) and no other string, whatever it says.
func goDurations(body []byte, md protoreflect.MessageDescriptor) ([]byte, error) {
	s := &durationScan{body: body, dec: json.NewDecoder(bytes.NewReader(body))}
	s.dec.UseNumber()
	err := s.message(md, "")
	var bad badDuration
	if errors.As(err, &bad) {
		return nil, bad
	}
	if err != nil || len(s.edits) == 0 {
		return nil, nil // not JSON as protojson wants it: its error says why
	}
	var out []byte
	last := 0
	for _, e := range s.edits {
		out = append(append(out, body[last:e.start]...), e.text...)
		last = e.end
	}
	return append(out, body[last:]...), nil
}

// badDuration is a duration field's value that is no duration.
type badDuration struct{ field, value string }

func (b badDuration) Error() string {
	return fmt.Sprintf("field %q: %s is not a duration; write a string such as %s", b.field, b.value, durationExamples)
}

// durationScan reads a body token by token and notes the edits that
// rewrite its Go-style durations.
type durationScan struct {
	body  []byte
	dec   *json.Decoder
	edits []edit
}

// edit replaces body[start:end] with text.
type edit struct {
	start, end int
	text       []byte
}

// message reads one value that should be a JSON object of the message md,
// at path (the field names that lead to it, as written).
func (s *durationScan) message(md protoreflect.MessageDescriptor, path string) error {
	tok, err := s.dec.Token()
	if err != nil {
		return err
	}
	if tok != json.Delim('{') {
		return s.skipRest(tok)
	}
	for s.dec.More() {
		tok, err := s.dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		fd := md.Fields().ByJSONName(key)
		if fd == nil {
			fd = md.Fields().ByTextName(key)
		}
		if fd == nil {
			if err := s.skip(); err != nil {
				return err
			}
			continue
		}
		if err := s.field(fd, join(path, key)); err != nil {
			return err
		}
	}
	_, err = s.dec.Token() // '}'
	return err
}

// field reads the value of the field fd: a list or a map of its values, or
// one.
func (s *durationScan) field(fd protoreflect.FieldDescriptor, path string) error {
	if !fd.IsList() && !fd.IsMap() {
		return s.value(fd, path)
	}
	tok, err := s.dec.Token()
	if err != nil {
		return err
	}
	switch {
	case fd.IsList() && tok == json.Delim('['):
		for i := 0; s.dec.More(); i++ {
			if err := s.value(fd, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case fd.IsMap() && tok == json.Delim('{'):
		for s.dec.More() {
			key, err := s.dec.Token()
			if err != nil {
				return err
			}
			k, _ := key.(string)
			if err := s.value(fd.MapValue(), fmt.Sprintf("%s[%q]", path, k)); err != nil {
				return err
			}
		}
	default:
		return s.skipRest(tok)
	}
	_, err = s.dec.Token() // ']' or '}'
	return err
}

// value reads one value of the field fd (an element, for a list or a map).
func (s *durationScan) value(fd protoreflect.FieldDescriptor, path string) error {
	if fd.Kind() != protoreflect.MessageKind {
		return s.skip()
	}
	switch name := fd.Message().FullName(); {
	case name == durationName:
		return s.duration(path)
	case strings.HasPrefix(string(name), "google.protobuf."):
		return s.skip() // other well-known types have JSON forms of their own
	default:
		return s.message(fd.Message(), path)
	}
}

// duration reads a duration's value and notes its rewrite when it is
// written the Go way.
func (s *durationScan) duration(path string) error {
	before := s.dec.InputOffset()
	tok, err := s.dec.Token()
	if err != nil {
		return err
	}
	switch v := tok.(type) {
	case nil: // null: unset
		return nil
	case json.Number:
		return badDuration{field: path, value: "the number " + v.String()}
	case string:
		if protojson.Unmarshal(quote(v), &durationpb.Duration{}) == nil {
			return nil // protobuf's own form
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return badDuration{field: path, value: fmt.Sprintf("%q", order.Clip(v))}
		}
		text, err := protojson.Marshal(durationpb.New(d))
		if err != nil {
			return err
		}
		end := int(s.dec.InputOffset())
		// Between the previous token and this one are only white space and
		// a colon or a comma: the string starts at the first quote.
		start := int(before) + bytes.IndexByte(s.body[before:end], '"')
		s.edits = append(s.edits, edit{start: start, end: end, text: text})
		return nil
	default:
		if d, ok := tok.(json.Delim); ok {
			return s.skipRest(d)
		}
		return badDuration{field: path, value: fmt.Sprint(v)}
	}
}

// skip reads one value, whatever it is.
func (s *durationScan) skip() error {
	tok, err := s.dec.Token()
	if err != nil {
		return err
	}
	return s.skipRest(tok)
}

// skipRest reads the rest of a value whose first token was tok.
func (s *durationScan) skipRest(tok json.Token) error {
	if tok != json.Delim('{') && tok != json.Delim('[') {
		return nil
	}
	for depth := 1; depth > 0; {
		tok, err := s.dec.Token()
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

// join names a field under the path of its message.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// quote is s as a JSON string.
func quote(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}
