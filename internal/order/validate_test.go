package order

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// wantInvalid checks that err is a KindInvalid *Error whose message holds
// every one of parts.
func wantInvalid(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want KindInvalid with %q", parts)
	}
	if k := KindOf(err); k != KindInvalid {
		t.Errorf("KindOf(%v) = %d, want KindInvalid (%d)", err, k, KindInvalid)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

func TestValidateID(t *testing.T) {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	tests := []struct {
		name  string
		field string
		id    string
		ok    bool
		parts []string // substrings of the error message
	}{
		{name: "one letter", field: "order_id", id: "a", ok: true},
		{name: "lower and upper letters", field: "order_id", id: letters, ok: true},
		{name: "digits", field: "order_id", id: "0123456789", ok: true},
		{name: "unreserved punctuation", field: "order_id", id: "-_.~", ok: true},
		{name: "mixed", field: "order_id", id: "ord-1001_A.b~9", ok: true},
		{name: "three dots", field: "order_id", id: "...", ok: true},
		{name: "dots beside letters", field: "order_id", id: "..a", ok: true},
		{name: "exactly 128 bytes", field: "order_id", id: strings.Repeat("x", 128), ok: true},

		{name: "empty", field: "order_id", id: "", parts: []string{"order_id is required"}},
		{name: "empty names the given field", field: "id", id: "", parts: []string{"id is required"}},
		{name: "129 bytes", field: "order_id", id: strings.Repeat("x", 129),
			parts: []string{"order_id is 129 bytes long", "limit is 128"}},
		{name: "very long", field: "order_id", id: strings.Repeat("x", 10000),
			parts: []string{"order_id is 10000 bytes long"}},
		{name: "only a dot", field: "order_id", id: ".", parts: []string{`order_id "." is a relative path segment`}},
		{name: "two dots", field: "order_id", id: "..", parts: []string{`order_id ".." is a relative path segment`}},
		{name: "colon", field: "order_id", id: "ord:1", parts: []string{"order_id has the character ':' at offset 3"}},
		{name: "slash", field: "order_id", id: "a/b", parts: []string{"order_id has the character '/' at offset 1"}},
		{name: "open brace", field: "order_id", id: "{x", parts: []string{"order_id has the character '{' at offset 0"}},
		{name: "close brace", field: "order_id", id: "xy}", parts: []string{"order_id has the character '}' at offset 2"}},
		{name: "space", field: "order_id", id: "bad id", parts: []string{"order_id has the character ' ' at offset 3"}},
		{name: "percent", field: "order_id", id: "a%20", parts: []string{"order_id has the character '%' at offset 1"}},
		{name: "plus", field: "order_id", id: "a+b", parts: []string{"'+' at offset 1"}},
		{name: "quote", field: "order_id", id: `a"`, parts: []string{`'"' at offset 1`}},
		{name: "first bad byte is reported", field: "order_id", id: "ab:c/d", parts: []string{"':' at offset 2"}},
		{name: "field name is used", field: "other_field", id: "a:b", parts: []string{"other_field has the character ':'"}},
		{name: "NUL", field: "order_id", id: "ab\x00", parts: []string{"order_id has a non-printable character", "byte 0x00 at offset 2"}},
		{name: "tab", field: "order_id", id: "\tab", parts: []string{"non-printable", "byte 0x09 at offset 0"}},
		{name: "newline", field: "order_id", id: "a\nb", parts: []string{"non-printable", "byte 0x0a at offset 1"}},
		{name: "unit separator 0x1f", field: "order_id", id: "a\x1f", parts: []string{"non-printable", "byte 0x1f at offset 1"}},
		{name: "DEL", field: "order_id", id: "abc\x7f", parts: []string{"order_id has a non-printable character", "byte 0x7f at offset 3"}},
		{name: "non-ASCII e-acute", field: "order_id", id: "caf\u00e9", parts: []string{"order_id has a non-ASCII character at offset 3"}},
		{name: "non-ASCII emoji", field: "order_id", id: "x\U0001F600", parts: []string{"non-ASCII character at offset 1"}},
		{name: "invalid UTF-8", field: "order_id", id: "ab\xff", parts: []string{"non-ASCII character at offset 2"}},
		{name: "0x80", field: "order_id", id: "\x80", parts: []string{"non-ASCII character at offset 0"}},
		{name: "129 bytes of bad characters reports the length", field: "order_id", id: strings.Repeat(":", 129),
			parts: []string{"129 bytes long"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateID(tt.field, tt.id)
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidateID(%q, %q) = %v, want nil", tt.field, tt.id, err)
				}
				return
			}
			wantInvalid(t, err, tt.parts...)
			if !strings.HasPrefix(err.Error(), tt.field+" ") {
				t.Errorf("error %q does not start with the field %q", err, tt.field)
			}
		})
	}
}

// TestValidateIDEveryByte checks each single byte against the allowed set.
func TestValidateIDEveryByte(t *testing.T) {
	allowed := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.~", c) >= 0
	}
	for b := 0; b < 256; b++ {
		c := byte(b)
		t.Run(fmt.Sprintf("byte 0x%02x", b), func(t *testing.T) {
			err := ValidateID("order_id", "ok"+string([]byte{c}))
			if allowed(c) {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			wantInvalid(t, err, "order_id", "offset 2")
		})
	}
}

func TestCheckoutTTL(t *testing.T) {
	l := DefaultLimits
	tests := []struct {
		name   string
		limits Limits
		ttl    time.Duration
		has    bool
		want   time.Duration
		parts  []string // error message parts; nil means no error
	}{
		{name: "unset gives the default", limits: l, has: false, want: 15 * time.Minute},
		{name: "unset ignores the value", limits: l, ttl: -time.Hour, has: false, want: 15 * time.Minute},
		{name: "unset with another default", limits: Limits{DefaultTTL: time.Minute, MaxTTL: time.Hour}, want: time.Minute},
		{name: "zero", limits: l, ttl: 0, has: true,
			parts: []string{"ttl must be more than zero (got 0s)", "default of 15m"}},
		{name: "negative", limits: l, ttl: -time.Second, has: true, parts: []string{"ttl must be more than zero (got -1s)"}},
		{name: "one nanosecond below zero", limits: l, ttl: -1, has: true, parts: []string{"more than zero"}},
		{name: "above the max", limits: l, ttl: 7*24*time.Hour + time.Millisecond, has: true,
			parts: []string{"ttl 168h0m0.001s is more than the maximum of 168h"}},
		{name: "one nanosecond above the max", limits: l, ttl: 7*24*time.Hour + 1, has: true, parts: []string{"maximum"}},
		{name: "exactly the max", limits: l, ttl: 7 * 24 * time.Hour, has: true, want: 7 * 24 * time.Hour},
		{name: "one second", limits: l, ttl: time.Second, has: true, want: time.Second},
		{name: "one nanosecond rounds up to 1ms", limits: l, ttl: 1, has: true, want: time.Millisecond},
		{name: "999us rounds up to 1ms", limits: l, ttl: 999 * time.Microsecond, has: true, want: time.Millisecond},
		{name: "exactly 1ms", limits: l, ttl: time.Millisecond, has: true, want: time.Millisecond},
		{name: "1.5ms rounds up to 2ms", limits: l, ttl: 1500 * time.Microsecond, has: true, want: 2 * time.Millisecond},
		{name: "1ms and 1ns rounds up to 2ms", limits: l, ttl: time.Millisecond + 1, has: true, want: 2 * time.Millisecond},
		{name: "just under the max rounds up to it", limits: l, ttl: 7*24*time.Hour - 1, has: true, want: 7 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.limits.CheckoutTTL(tt.ttl, tt.has)
			if tt.parts != nil {
				wantInvalid(t, err, tt.parts...)
				if got != 0 {
					t.Errorf("ttl = %s with an error, want 0", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("CheckoutTTL(%s, %v) = %v", tt.ttl, tt.has, err)
			}
			if got != tt.want {
				t.Errorf("CheckoutTTL(%s, %v) = %s, want %s", tt.ttl, tt.has, got, tt.want)
			}
		})
	}
}

func TestValidateMetadata(t *testing.T) {
	l := DefaultLimits
	entries := func(n int) map[string]string {
		md := make(map[string]string, n)
		for i := range n {
			md[fmt.Sprintf("k%02d", i)] = "v"
		}
		return md
	}
	// bytes returns n entries of 8-byte keys whose keys and values add up
	// to total bytes.
	bytes := func(n, total int) map[string]string {
		md := make(map[string]string, n)
		per := total / n
		for i := range n {
			v := per - 8
			if i == 0 {
				v += total - per*n
			}
			md[fmt.Sprintf("key%05d", i)] = strings.Repeat("v", v)
		}
		return md
	}
	tests := []struct {
		name   string
		limits Limits
		md     map[string]string
		parts  []string // nil: valid
	}{
		{name: "nil", limits: l, md: nil},
		{name: "empty", limits: l, md: map[string]string{}},
		{name: "one entry", limits: l, md: map[string]string{"customer": "c-42"}},
		{name: "32 entries", limits: l, md: entries(32)},
		{name: "33 entries", limits: l, md: entries(33), parts: []string{"metadata has 33 entries; the limit is 32"}},
		{name: "entry limit from the limits", limits: Limits{MaxMetadataEntries: 1, MaxMetadataKeyBytes: 8, MaxMetadataValueBytes: 8, MaxMetadataBytes: 100},
			md: entries(2), parts: []string{"metadata has 2 entries; the limit is 1"}},
		{name: "key of 64 bytes", limits: l, md: map[string]string{strings.Repeat("k", 64): "v"}},
		{name: "key of 65 bytes", limits: l, md: map[string]string{strings.Repeat("k", 65): "v"},
			parts: []string{"metadata key", "is 65 bytes long; the limit is 64"}},
		{name: "long key is clipped in the message", limits: l, md: map[string]string{strings.Repeat("k", 500): "v"},
			parts: []string{strings.Repeat("k", 64) + "…", "is 500 bytes long"}},
		{name: "value of 1024 bytes", limits: l, md: map[string]string{"k": strings.Repeat("v", 1024)}},
		{name: "value of 1025 bytes", limits: l, md: map[string]string{"k": strings.Repeat("v", 1025)},
			parts: []string{`metadata["k"] is 1025 bytes long; the limit is 1024`}},
		{name: "8192 bytes in all", limits: l, md: bytes(8, 8192)},
		{name: "8193 bytes in all", limits: l, md: bytes(8, 8193), parts: []string{"metadata is 8193 bytes in all; the limit is 8192"}},
		{name: "empty key", limits: l, md: map[string]string{"": "v"}, parts: []string{"metadata has an empty key"}},
		{name: "key with NUL", limits: l, md: map[string]string{"a\x00b": "v"}, parts: []string{"metadata key", "must be printable UTF-8"}},
		{name: "key with newline", limits: l, md: map[string]string{"a\n": "v"}, parts: []string{"must be printable UTF-8"}},
		{name: "key with DEL", limits: l, md: map[string]string{"a\x7f": "v"}, parts: []string{"must be printable UTF-8"}},
		{name: "key with C1 control U+0085", limits: l, md: map[string]string{"a\u0085": "v"}, parts: []string{"must be printable UTF-8"}},
		{name: "key with invalid UTF-8", limits: l, md: map[string]string{"a\xff": "v"}, parts: []string{"must be printable UTF-8"}},
		{name: "key with non-ASCII letters", limits: l, md: map[string]string{"café-€": "v"}},
		{name: "key with U+00A0", limits: l, md: map[string]string{"a\u00a0": "v"}},
		{name: "value with invalid UTF-8", limits: l, md: map[string]string{"k": "v\xffv"}, parts: []string{`metadata["k"] must be valid UTF-8`}},
		{name: "value with truncated UTF-8", limits: l, md: map[string]string{"k": "\xe2\x82"}, parts: []string{"must be valid UTF-8"}},
		{name: "value with control characters is allowed", limits: l, md: map[string]string{"k": "line1\nline2\x00"}},
		{name: "empty value", limits: l, md: map[string]string{"k": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.limits.ValidateMetadata(tt.md)
			if tt.parts == nil {
				if err != nil {
					t.Fatalf("ValidateMetadata = %v, want nil", err)
				}
				return
			}
			wantInvalid(t, err, tt.parts...)
		})
	}
}

func TestLimitsValidate(t *testing.T) {
	tests := []struct {
		name    string
		limits  Limits
		wantErr string
	}{
		{name: "defaults", limits: DefaultLimits},
		{name: "max equals default", limits: Limits{DefaultTTL: time.Minute, MaxTTL: time.Minute}},
		{name: "zero default", limits: Limits{MaxTTL: time.Minute}, wantErr: "default ttl must be more than zero"},
		{name: "negative default", limits: Limits{DefaultTTL: -1, MaxTTL: time.Minute}, wantErr: "default ttl must be more than zero"},
		{name: "max below default", limits: Limits{DefaultTTL: time.Hour, MaxTTL: time.Minute}, wantErr: "max ttl 1m is less than the default ttl 1h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.limits.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		name   string
		status Status
		text   string
	}{
		{name: "unknown", status: StatusUnknown, text: "unknown"},
		{name: "pending", status: StatusPending, text: "pending"},
		{name: "expired", status: StatusExpired, text: "expired"},
		{name: "completed", status: StatusCompleted, text: "completed"},
		{name: "cancelled", status: StatusCancelled, text: "cancelled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.status.String(); got != tt.text {
				t.Errorf("%d.String() = %q, want %q", int(tt.status), got, tt.text)
			}
			if got := ParseStatus(tt.text); got != tt.status {
				t.Errorf("ParseStatus(%q) = %d, want %d", tt.text, got, tt.status)
			}
		})
	}

	outOfRange := []struct {
		name   string
		status Status
	}{
		{name: "negative", status: -1},
		{name: "one past the last", status: StatusCancelled + 1},
		{name: "large", status: 1 << 20},
	}
	for _, tt := range outOfRange {
		t.Run("String of "+tt.name, func(t *testing.T) {
			if got := tt.status.String(); got != "unknown" {
				t.Errorf("Status(%d).String() = %q, want \"unknown\"", int(tt.status), got)
			}
		})
	}

	bad := []struct {
		name string
		text string
	}{
		{name: "empty", text: ""},
		{name: "upper case", text: "Pending"},
		{name: "proto name", text: "ORDER_STATUS_PENDING"},
		{name: "trailing space", text: "expired "},
		{name: "american spelling", text: "canceled"},
	}
	for _, tt := range bad {
		t.Run("ParseStatus of "+tt.name, func(t *testing.T) {
			if got := ParseStatus(tt.text); got != StatusUnknown {
				t.Errorf("ParseStatus(%q) = %d, want StatusUnknown", tt.text, got)
			}
		})
	}
}

func TestKindOf(t *testing.T) {
	base := Errorf(KindNotFound, "order %q not found", "x")
	cause := errors.New("connection refused")
	tests := []struct {
		name string
		err  error
		want Kind
	}{
		{name: "nil", err: nil, want: KindInternal},
		{name: "plain error", err: errors.New("boom"), want: KindInternal},
		{name: "direct", err: base, want: KindNotFound},
		{name: "each kind: invalid", err: Errorf(KindInvalid, "x"), want: KindInvalid},
		{name: "each kind: failed precondition", err: Errorf(KindFailedPrecondition, "x"), want: KindFailedPrecondition},
		{name: "each kind: out of range", err: Errorf(KindOutOfRange, "x"), want: KindOutOfRange},
		{name: "each kind: resource exhausted", err: Errorf(KindResourceExhausted, "x"), want: KindResourceExhausted},
		{name: "wrapped once", err: fmt.Errorf("get: %w", base), want: KindNotFound},
		{name: "wrapped twice", err: fmt.Errorf("rpc: %w", fmt.Errorf("get: %w", base)), want: KindNotFound},
		{name: "joined", err: errors.Join(errors.New("other"), base), want: KindNotFound},
		{name: "formatted with %v loses it", err: fmt.Errorf("get: %v", base), want: KindInternal},
		{name: "Unavailable", err: Unavailable(cause), want: KindUnavailable},
		{name: "Unavailable wrapped", err: fmt.Errorf("checkout: %w", Unavailable(cause)), want: KindUnavailable},
		{name: "NotFound", err: NotFound("x"), want: KindNotFound},
		{name: "NotPending", err: NotPending(Order{ID: "x", Status: StatusExpired}, StatusCompleted), want: KindFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := KindOf(tt.err); got != tt.want {
				t.Errorf("KindOf(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

func TestErrorMessages(t *testing.T) {
	cause := errors.New("dial tcp: connection refused")
	closedAt := time.Date(2026, 11, 21, 5, 50, 2, 144e6, time.UTC)
	tests := []struct {
		name    string
		err     error
		want    string
		unwraps error
	}{
		{name: "Errorf", err: Errorf(KindInvalid, "ttl %s is bad", time.Second), want: "ttl 1s is bad"},
		{name: "Unavailable keeps the cause in Error and Unwrap", err: Unavailable(cause),
			want: "the order store is unavailable; retry later: dial tcp: connection refused", unwraps: cause},
		{name: "NotFound", err: NotFound("nope"),
			want: `order "nope" not found (never checked out, or closed longer ago than the retention period)`},
		{name: "NotPending complete", err: NotPending(Order{ID: "ord-1", Status: StatusExpired, ClosedAt: closedAt}, StatusCompleted),
			want: `cannot complete order "ord-1": it is expired since 2026-11-21T05:50:02.144Z; only a pending order before its deadline can be completed`},
		{name: "NotPending cancel", err: NotPending(Order{ID: "ord-1", Status: StatusCompleted, ClosedAt: closedAt.In(time.FixedZone("x", 3600))}, StatusCancelled),
			want: `cannot cancel order "ord-1": it is completed since 2026-11-21T05:50:02.144Z; only a pending order before its deadline can be cancelled`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			if tt.unwraps != nil && !errors.Is(tt.err, tt.unwraps) {
				t.Errorf("errors.Is(%v, %v) = false", tt.err, tt.unwraps)
			}
		})
	}
}
