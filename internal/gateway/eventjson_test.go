package gateway

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestEventJSONMatchesProtojson checks that appendEventJSON writes what
// protojson writes for the watch, byte for byte once protojson's random
// spaces are compacted away, over events with awkward strings and times,
// and that it declines what protojson would refuse.
func TestEventJSONMatchesProtojson(t *testing.T) {
	marshal := protojson.MarshalOptions{EmitDefaultValues: true}
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"", "a", "order-1", `"`, `\`, "\n", "\t", "\x00", "\x01", "\x1f", "\x7f", "\b", "\f", "\r", " ", "<>&", "é", "日本", "\u2028", "\ufffd", "😀", "/", "{}", ":"}
	randStr := func() string {
		var b strings.Builder
		for range rng.IntN(5) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	randTime := func() *timestamppb.Timestamp {
		ns := []int64{0, 123_000_000, 123_456_000, 123_456_789, 1_000, 1}[rng.IntN(6)]
		return timestamppb.New(time.Unix(rng.Int64N(4e9), ns))
	}
	for i := range 5000 {
		ev := &pb.ExpirationEvent{Cursor: randStr(), OrderId: randStr(), Deadline: randTime(), ExpiredAt: randTime()}
		if i%3 != 0 {
			ev.Metadata = map[string]string{}
			for range rng.IntN(4) {
				ev.Metadata[randStr()] = randStr()
			}
		}
		want, err := marshal.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, want); err != nil {
			t.Fatal(err)
		}
		got, ok := appendEventJSON(nil, ev)
		if !ok || !bytes.Equal(got, compact.Bytes()) {
			t.Fatalf("event %v:\nappendEventJSON %s (ok %v)\nprotojson       %s", ev, got, ok, compact.Bytes())
		}
	}
	for name, ev := range map[string]*pb.ExpirationEvent{
		"id not UTF-8":       {OrderId: "a\xffb", Deadline: timestamppb.Now(), ExpiredAt: timestamppb.Now()},
		"metadata not UTF-8": {Metadata: map[string]string{"k": "\xc3"}, Deadline: timestamppb.Now(), ExpiredAt: timestamppb.Now()},
		"no deadline":        {OrderId: "a", ExpiredAt: timestamppb.Now()},
		"deadline past 9999": {OrderId: "a", Deadline: &timestamppb.Timestamp{Seconds: 1e12}, ExpiredAt: timestamppb.Now()},
	} {
		if _, ok := appendEventJSON(nil, ev); ok {
			t.Errorf("%s: appendEventJSON wrote it; protojson would not", name)
		}
	}
}

func BenchmarkEventJSON(b *testing.B) {
	ev := &pb.ExpirationEvent{Cursor: "1732170000000-0", OrderId: "order-12345", Deadline: timestamppb.Now(), ExpiredAt: timestamppb.Now(), Metadata: map[string]string{"customer": "c-42", "sku": "tee-L"}}
	b.Run("protojson", func(b *testing.B) {
		m := protojson.MarshalOptions{EmitDefaultValues: true}
		for b.Loop() {
			_, _ = m.Marshal(ev)
		}
	})
	b.Run("appendEventJSON", func(b *testing.B) {
		for b.Loop() {
			_, _ = appendEventJSON(nil, ev)
		}
	})
}
