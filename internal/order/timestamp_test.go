package order

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestFormatTimeAsProtojson: FormatTime writes what protojson writes for
// the same Timestamp, whatever its precision.
func TestFormatTimeAsProtojson(t *testing.T) {
	base := time.Date(2026, 12, 7, 6, 45, 39, 0, time.UTC)
	for _, ns := range []int{0, 320_000_000, 1_000_000, 320_100_000, 123_456_000, 1_000, 123_456_789, 1} {
		at := base.Add(time.Duration(ns))
		b, err := protojson.Marshal(timestamppb.New(at))
		if err != nil {
			t.Fatal(err)
		}
		if want := string(b[1 : len(b)-1]); FormatTime(at) != want {
			t.Errorf("FormatTime(%v) = %s, protojson writes %s", at, FormatTime(at), want)
		}
	}
	if got := FormatTime(base.In(time.FixedZone("x", 3600))); got != "2026-12-07T06:45:39Z" {
		t.Errorf("FormatTime of a time in another zone = %s, want it in UTC", got)
	}
}
