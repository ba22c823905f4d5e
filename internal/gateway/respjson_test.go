package gateway

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// responseMarshaler is the gateway's marshaler, as New makes it.
func responseMarshaler() *jsonMarshaler {
	return &jsonMarshaler{JSONPb: runtime.JSONPb{MarshalOptions: protojson.MarshalOptions{EmitDefaultValues: true}}}
}

// randomString mixes plain ASCII with every character protojson escapes
// and some that it does not.
func randomString(r *rand.Rand) string {
	pieces := []string{"", "a", "order-1", `"`, `\`, "\n", "\t", "\b", "\f", "\r", "\x00", "\x01", "\x1f", "\x7f",
		"<", ">", "&", "é", "日本", "\u2028", "\U0001F600", " ", "/", ":"}
	var b []byte
	for range r.IntN(6) {
		b = append(b, pieces[r.IntN(len(pieces))]...)
	}
	return string(b)
}

func randomTimestamp(r *rand.Rand) *timestamppb.Timestamp {
	if r.IntN(5) == 0 {
		return nil
	}
	nanos := []int32{0, 1, 999, 1000, 123000, 1000000, 120000000, 999999999, r.Int32N(1e9)}
	secs := []int64{0, 1, -1, 1764590000, minTimestampSeconds, maxTimestampSeconds, r.Int64N(maxTimestampSeconds)}
	return &timestamppb.Timestamp{Seconds: secs[r.IntN(len(secs))], Nanos: nanos[r.IntN(len(nanos))]}
}

func randomDuration(r *rand.Rand) *durationpb.Duration {
	if r.IntN(5) == 0 {
		return nil
	}
	secs := []int64{0, 1, 59, 3599, maxSecondsInDuration, r.Int64N(maxSecondsInDuration)}
	nanos := []int32{0, 1, 1000, 500000000, 999999999, r.Int32N(1e9)}
	s, n := secs[r.IntN(len(secs))], nanos[r.IntN(len(nanos))]
	if r.IntN(4) == 0 {
		s, n = -s, -n
	}
	return &durationpb.Duration{Seconds: s, Nanos: n}
}

func randomOrder(r *rand.Rand) *pb.Order {
	o := &pb.Order{
		OrderId:      randomString(r),
		Status:       pb.OrderStatus(r.IntN(7)), // 5 and 6 have no name
		CreatedAt:    randomTimestamp(r),
		Deadline:     randomTimestamp(r),
		TtlRemaining: randomDuration(r),
		ClosedAt:     randomTimestamp(r),
		Reschedules:  r.Int32N(5) - 1,
	}
	if n := r.IntN(4); n > 0 {
		o.Metadata = map[string]string{}
		for range n {
			o.Metadata[randomString(r)] = randomString(r)
		}
	}
	return o
}

// TestMarshalMatchesProtojson holds the hand-written encoding of an Order
// and a CheckoutResponse to protojson's: the same bytes, once protojson's
// optional whitespace is taken out.
func TestMarshalMatchesProtojson(t *testing.T) {
	m := responseMarshaler()
	r := rand.New(rand.NewPCG(1, 2))
	var msgs []proto.Message
	msgs = append(msgs, &pb.Order{}, &pb.CheckoutResponse{}, &pb.CheckoutResponse{Order: &pb.Order{}, Created: true})
	for range 3000 {
		o := randomOrder(r)
		msgs = append(msgs, o, &pb.CheckoutResponse{Order: o, Created: r.IntN(2) == 0},
			&pb.ExpirationEvent{Cursor: randomString(r), OrderId: o.OrderId, Deadline: o.Deadline, ExpiredAt: o.ClosedAt, Metadata: o.Metadata})
	}
	for _, msg := range msgs {
		want, err := m.MarshalOptions.Marshal(msg)
		if err != nil {
			t.Fatalf("protojson refused %v: %v", msg, err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, want); err != nil {
			t.Fatal(err)
		}
		switch msg := msg.(type) {
		case *pb.Order:
			got, ok := appendOrder(nil, msg)
			if !ok || !bytes.Equal(got, compact.Bytes()) {
				t.Fatalf("Order %v:\ngot  %s (%v)\nwant %s", msg, got, ok, compact.Bytes())
			}
		case *pb.CheckoutResponse:
			got, ok := appendCheckoutResponse(nil, msg)
			if !ok || !bytes.Equal(got, compact.Bytes()) {
				t.Fatalf("CheckoutResponse %v:\ngot  %s (%v)\nwant %s", msg, got, ok, compact.Bytes())
			}
		case *pb.ExpirationEvent:
			got, ok := appendExpirationEvent(nil, msg)
			if !ok || !bytes.Equal(got, compact.Bytes()) {
				t.Fatalf("ExpirationEvent %v:\ngot  %s (%v)\nwant %s", msg, got, ok, compact.Bytes())
			}
		}
		if got, err := m.Marshal(msg); err != nil || !bytes.Equal(got, compact.Bytes()) {
			t.Fatalf("Marshal(%v) = %s, %v; want %s", msg, got, err, compact.Bytes())
		}
	}
}

// TestMarshalRefusesAsProtojson: what protojson refuses to encode, Marshal
// refuses with protojson's error, and other messages are protojson's.
func TestMarshalRefusesAsProtojson(t *testing.T) {
	m := responseMarshaler()
	bad := []*pb.Order{
		{OrderId: "bad-\xff"},
		{OrderId: "ok", Metadata: map[string]string{"k": "\xc3"}},
		{OrderId: "ok", Metadata: map[string]string{"\xc3": "v"}},
		{OrderId: "ok", CreatedAt: &timestamppb.Timestamp{Seconds: maxTimestampSeconds + 1}},
		{OrderId: "ok", Deadline: &timestamppb.Timestamp{Nanos: -1}},
		{OrderId: "ok", ClosedAt: &timestamppb.Timestamp{Nanos: 1e9 + 1}},
		{OrderId: "ok", TtlRemaining: &durationpb.Duration{Seconds: 1, Nanos: -1}},
		{OrderId: "ok", TtlRemaining: &durationpb.Duration{Seconds: -maxSecondsInDuration - 1}},
	}
	for _, o := range bad {
		_, want := m.MarshalOptions.Marshal(o)
		if want == nil {
			t.Fatalf("protojson encodes %v", o)
		}
		for _, msg := range []proto.Message{o, &pb.CheckoutResponse{Order: o}} {
			if out, err := m.Marshal(msg); err == nil || err.Error() != want.Error() {
				t.Errorf("Marshal(%v) = %s, %v; want the error %v", msg, out, err, want)
			}
		}
	}
	badEvents := []*pb.ExpirationEvent{
		{OrderId: "bad-\xff"},
		{Cursor: "bad-\xff"},
		{OrderId: "ok", Metadata: map[string]string{"k": "\xc3"}},
		{OrderId: "ok", Deadline: &timestamppb.Timestamp{Seconds: maxTimestampSeconds + 1}},
		{OrderId: "ok", ExpiredAt: &timestamppb.Timestamp{Nanos: -1}},
	}
	for _, ev := range badEvents {
		_, want := m.MarshalOptions.Marshal(ev)
		if want == nil {
			t.Fatalf("protojson encodes %v", ev)
		}
		if out, err := m.Marshal(ev); err == nil || err.Error() != want.Error() {
			t.Errorf("Marshal(%v) = %s, %v; want the error %v", ev, out, err, want)
		}
	}
	other := &pb.GetOrderRequest{OrderId: "x"}
	want, _ := m.MarshalOptions.Marshal(other)
	if got, err := m.Marshal(other); err != nil || !bytes.Equal(got, want) {
		t.Errorf("Marshal(%v) = %s, %v; want %s", other, got, err, want)
	}
}

// BenchmarkMarshal compares protojson's encoding with the hand-written one,
// for a pending order's answer and a watch's event.
func BenchmarkMarshal(b *testing.B) {
	m := responseMarshaler()
	o := &pb.Order{
		OrderId: "order-12345", Status: pb.OrderStatus_ORDER_STATUS_PENDING,
		CreatedAt:    &timestamppb.Timestamp{Seconds: 1764590000, Nanos: 123000000},
		Deadline:     &timestamppb.Timestamp{Seconds: 1764593600, Nanos: 123000000},
		TtlRemaining: &durationpb.Duration{Seconds: 3599, Nanos: 999000000},
	}
	ev := &pb.ExpirationEvent{
		Cursor: "1764590000123-0", OrderId: "order-12345",
		Deadline:  &timestamppb.Timestamp{Seconds: 1764590000, Nanos: 123000000},
		ExpiredAt: &timestamppb.Timestamp{Seconds: 1764590000, Nanos: 124000000},
		Metadata:  map[string]string{"customer": "c-42", "sku": "tee-L"},
	}
	for name, msg := range map[string]proto.Message{"CheckoutResponse": &pb.CheckoutResponse{Order: o, Created: true}, "ExpirationEvent": ev} {
		b.Run(name+"/protojson", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = m.JSONPb.Marshal(msg)
			}
		})
		b.Run(name+"/hand", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = m.Marshal(msg)
			}
		})
	}
}
