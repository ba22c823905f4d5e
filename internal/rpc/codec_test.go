package rpc

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	pb "github.com/orderexpiry/orderexpiry/internal/gen/orderexpiry/v1"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

func event(ms uint64, id string) order.Event {
	at := time.UnixMilli(int64(ms))
	c := order.Cursor{Ms: ms}
	return order.Event{Cursor: c, Position: order.Position{c}, OrderID: id, Deadline: at, ExpiredAt: at, Metadata: map[string]string{"k": id}}
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
	if _, ok := c.bytes[eventKey{a.Partition, a.Cursor}]; ok || len(c.bytes) != 2 {
		t.Fatalf("cache holds %d events, the oldest included: %v", len(c.bytes), ok)
	}
	if b2, _ := c.get(b); len(b2) == 0 {
		t.Fatal("no bytes for a cached event")
	}
}
