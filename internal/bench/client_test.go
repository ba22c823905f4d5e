package bench

import (
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// restLines are lines of a REST watch: as the service writes them, with
// what could mislead a reader that looks for field names (a name inside a
// value, an escape), and an error line.
var restLines = []string{
	`{"cursor":"1796667283646-0","orderId":"due-12345","deadline":"2026-12-07T18:14:43.645Z","expiredAt":"2026-12-07T18:14:43.646Z","metadata":{}}`,
	`{"cursor":"1796667283646-0,1796667283647-3","orderId":"o","deadline":"2026-12-07T18:14:43Z","expiredAt":"2026-12-07T18:14:43.000001Z","metadata":{"a":"b"}}`,
	`{"cursor":"1-0","orderId":"say \"orderId\":\"x\"","deadline":"2026-12-07T18:14:43.645123456Z","expiredAt":"2026-12-07T18:14:44Z","metadata":{}}`,
	`{"cursor":"1-0","orderId":"a\\b","deadline":"2026-12-07T18:14:43.645Z","expiredAt":"2026-12-07T18:14:44Z","metadata":{"orderId":"not it"}}`,
	`{"cursor": "1-0", "orderId": "spaced", "deadline": "2026-12-07T18:14:43.645Z", "expiredAt": "2026-12-07T18:14:44Z"}`,
	`{"error":{"code":14,"message":"store unavailable","details":[]}}`,
}

// TestParseRESTEvent holds parseRESTEvent to encoding/json's reading of
// each line, and of protojson's encoding of events.
func TestParseRESTEvent(t *testing.T) {
	lines := append([]string(nil), restLines...)
	for _, id := range []string{"plain", `quote"d`, "tab\t", "ünï"} {
		b, err := protojson.Marshal(&pb.ExpirationEvent{Cursor: "5-1", OrderId: id,
			Deadline:  timestamppb.New(time.UnixMilli(1796667283646)),
			ExpiredAt: timestamppb.New(time.UnixMilli(1796667283999).Add(123 * time.Microsecond)),
			Metadata:  map[string]string{"orderId": "x", "k": `"cursor":"9-9"`}})
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(b))
	}
	for _, line := range lines {
		var want restEvent
		wantErr := json.Unmarshal([]byte(line), &want)
		got, err := parseRESTEvent([]byte(line))
		if (err != nil) != (wantErr != nil) || got.Cursor != want.Cursor || got.OrderID != want.OrderID ||
			!got.Deadline.Equal(want.Deadline) || !got.ExpiredAt.Equal(want.ExpiredAt) {
			t.Errorf("parseRESTEvent(%s) = %+v, %v; encoding/json reads %+v, %v", line, got, err, want, wantErr)
		}
	}
}

func BenchmarkParseRESTEvent(b *testing.B) {
	line := []byte(restLines[0])
	b.Run("by hand", func(b *testing.B) {
		for b.Loop() {
			if _, err := parseRESTEvent(line); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			var ev restEvent
			if err := json.Unmarshal(line, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
