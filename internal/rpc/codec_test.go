package rpc

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

func event(ms uint64, id string) order.Event {
	at := time.UnixMilli(int64(ms))
	c := order.Offset{Ms: ms}
	return order.Event{Offset: c, Cursor: order.Cursor{c}, OrderID: id, Deadline: at, ExpiredAt: at, Metadata: map[string]string{"k": id}}
}

func TestCodecSendsEncodedBytesAsTheyAre(t *testing.T) {
	raw := encoded("already the wire form")
	out, err := Codec.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Materialize(); !bytes.Equal(got, raw) {
		t.Fatalf("Marshal(encoded) = %q, want the bytes unchanged", got)
	}
	out.Free()
	if string(raw) != "already the wire form" {
		t.Fatalf("freeing the buffers changed the shared bytes to %q", raw)
	}
}

func TestCodecMarshalsMessages(t *testing.T) {
	msg := &pb.GetOrderRequest{OrderId: "ord-1"}
	out, err := Codec.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var back pb.GetOrderRequest
	if err := Codec.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(msg, &back, protocmp.Transform()); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
}

func TestEncodedEvents(t *testing.T) {
	c := newEncodedEvents(2)
	a, b, d := event(1, "a"), event(2, "b"), event(3, "d")
	first, err := c.get(a)
	if err != nil {
		t.Fatal(err)
	}
	var decoded pb.ExpirationEvent
	if err := proto.Unmarshal(first, &decoded); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(eventToProto(a), &decoded, protocmp.Transform()); diff != "" {
		t.Fatalf("encoded event (-want +got):\n%s", diff)
	}
	again, _ := c.get(a)
	if &again[0] != &first[0] {
		t.Fatal("the same event was encoded twice")
	}
	// Two more events push the first out of a cache of two.
	c.get(b)
	c.get(d)
	if _, ok := c.bytes[a.ID()]; ok || len(c.bytes) != 2 {
		t.Fatalf("cache holds %d events, the oldest included: %v", len(c.bytes), ok)
	}
	if b2, _ := c.get(b); len(b2) == 0 {
		t.Fatal("no bytes for a cached event")
	}
}

// TestCodecKeepsMalformedRequests: a request of this service that does not
// decode reaches its method, empty, with the error that malformed gives as
// INVALID_ARGUMENT; other services' messages fail to decode as before.
func TestCodecKeepsMalformedRequests(t *testing.T) {
	str := func(num protowire.Number, v string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), v)
	}
	// Unknown groups nested past the decoder's limit of 10,000.
	var deep []byte
	for range 10_050 {
		deep = protowire.AppendTag(deep, 15, protowire.StartGroupType)
	}
	for range 10_050 {
		deep = protowire.AppendTag(deep, 15, protowire.EndGroupType)
	}
	tests := []struct {
		name string
		in   []byte
		why  string // part of the message
	}{
		{"invalid UTF-8", str(1, "ord-\xff"), "invalid UTF-8"},
		{"truncated", str(1, "ord-1")[:4], "invalid wire-format"},
		{"length past the end", []byte{0x0a, 0x7f, 'a'}, "invalid wire-format"},
		{"deep nesting", append(str(1, "ord-1"), deep...), "invalid wire-format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var req pb.GetOrderRequest
			if err := Codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(tc.in)}, &req); err != nil {
				t.Fatalf("Unmarshal = %v, want nil and the error kept for the method", err)
			}
			if req.GetOrderId() != "" {
				t.Errorf("order_id %q was kept from a request that did not decode", req.GetOrderId())
			}
			err := malformed(&req)
			if order.KindOf(err) != order.KindInvalid || !strings.Contains(err.Error(), "is not a valid orderexpiry.v1.GetOrderRequest message") || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("malformed = %v, want KindInvalid naming the message and %q", err, tc.why)
			}
			var health healthpb.HealthCheckRequest
			if err := Codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(tc.in)}, &health); err == nil {
				t.Error("a health request that does not decode gave no error")
			}
		})
	}

	// Well-formed requests, with or without fields this server does not
	// know, are not malformed.
	// (A known field with another wire type is an unknown field too.)
	wrongType := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 7)
	for _, in := range [][]byte{nil, str(1, "ord-1"), append(str(1, "ord-1"), str(99, "newer")...), wrongType} {
		var req pb.GetOrderRequest
		if err := Codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(in)}, &req); err != nil {
			t.Fatal(err)
		}
		if err := malformed(&req); err != nil {
			t.Errorf("malformed(%x) = %v, want nil", in, err)
		}
	}
	// A crafted error of any length is quoted short and as valid UTF-8.
	var req pb.CheckoutRequest
	if err := proto.Unmarshal(str(malformedField, strings.Repeat("\xff", 5000)), &req); err != nil {
		t.Fatal(err)
	}
	if err := malformed(&req); err == nil || len(err.Error()) > 400 || !utf8.ValidString(err.Error()) {
		t.Fatalf("malformed of a crafted message = %q", err)
	}
}
