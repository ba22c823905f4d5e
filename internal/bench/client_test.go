package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
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

// TestWriteEvents: the file has a line per order received, in the order
// of the orders, whichever watcher had it.
func TestWriteEvents(t *testing.T) {
	a, b := newWatcher(nil, "due-", 3), newWatcher(nil, "due-", 3)
	deadline := time.UnixMilli(1796667283646)
	a.record("due-2", deadline.Add(9*time.Millisecond), deadline, deadline.Add(4*time.Millisecond))
	a.record("due-0", deadline.Add(3*time.Millisecond), deadline, deadline.Add(1*time.Millisecond))
	b.record("due-1", deadline.Add(2500*time.Microsecond), deadline, deadline)
	a.record("other", deadline, deadline, deadline)
	path := filepath.Join(t.TempDir(), "events.tsv")
	if err := writeEvents(path, []*watcher{a, b}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "order\tclaim_us\tlate_us\n0\t1000\t3000\n1\t0\t2500\n2\t4000\t9000\n"
	if string(got) != want {
		t.Errorf("the file holds\n%s\nwant\n%s", got, want)
	}
}
