package order

import (
	"strings"
	"testing"
	"time"
)

func TestFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{100 * time.Millisecond, "100ms"},
		{2500 * time.Millisecond, "2.5s"},
		{30 * time.Second, "30s"},
		{90 * time.Second, "1m30s"},
		{15 * time.Minute, "15m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{time.Hour + 30*time.Second, "1h0m30s"},
		{168 * time.Hour, "168h"},
		{168*time.Hour + time.Millisecond, "168h0m0.001s"},
		{-5 * time.Minute, "-5m"},
	} {
		got := FormatDuration(tc.d)
		if got != tc.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
		// What it writes reads back as the same duration.
		if back, err := time.ParseDuration(got); err != nil || back != tc.d {
			t.Errorf("time.ParseDuration(%q) = %v, %v; want %v", got, back, err, tc.d)
		}
	}
}

// TestMessagesFormatDurations: the errors and log text that name a ttl or
// a shift write it as FormatDuration does ("1m", "2h"), not "1m0s".
func TestMessagesFormatDurations(t *testing.T) {
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		got  string
		want string
	}{
		{"negative bulk ttl", ValidateBulkChange(BulkChange{TTL: -time.Minute, MaxTTL: time.Hour}).Error(), "(got -1m)"},
		{"bulk ttl past the maximum", ValidateBulkChange(BulkChange{TTL: 2 * time.Hour, MaxTTL: time.Hour}).Error(), "ttl 2h is more than the maximum of 1h"},
		{"bulk shift past the maximum", ValidateBulkChange(BulkChange{Shift: -2 * time.Hour, MaxTTL: time.Hour}).Error(), "shift -2h is more than the maximum ttl of 1h"},
		{"bulk shift for the log", BulkChange{Shift: time.Minute}.String(), "shift 1m"},
		{"bulk ttl for the log", BulkChange{TTL: time.Hour}.String(), "ttl 1h"},
		{"deadline asked, ttl given", CheckoutConflict(Order{AskedAt: at}, CheckoutItem{TTL: time.Minute}).Error(), "this asks for a ttl of 1m"},
		{"ttl asked, deadline given", CheckoutConflict(Order{AskedTTL: time.Hour}, CheckoutItem{At: at}).Error(), "checked out with a ttl of 1h,"},
		{"another ttl", CheckoutConflict(Order{AskedTTL: time.Hour}, CheckoutItem{TTL: 30 * time.Minute}).Error(), "a ttl of 1h, this asks for 30m"},
	} {
		if !strings.Contains(tc.got, tc.want) {
			t.Errorf("%s: %q, want it to contain %q", tc.name, tc.got, tc.want)
		}
	}
}
