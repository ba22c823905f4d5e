package order

import (
	"strings"
	"testing"
)

// canonicalOffset returns s with the redundant leading zeros of both of its
// numbers removed: what String gives for a cursor parsed from s.
func canonicalOffset(s string) string {
	ms, seq, _ := strings.Cut(s, "-")
	trim := func(n string) string {
		n = strings.TrimLeft(n, "0")
		if n == "" {
			return "0"
		}
		return n
	}
	return trim(ms) + "-" + trim(seq)
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FuzzParseOffset checks that ParseOffset never panics, accepts only
// "<digits>-<digits>", and that what it accepts prints back in canonical
// form: the input itself unless the input has leading zeros, in which case
// the input with them removed. The printed form parses to the same cursor.
func FuzzParseOffset(f *testing.F) {
	for _, s := range []string{"0-0", "1732170000000-0", "1-2-3", "007-010", "18446744073709551615-18446744073709551615", "18446744073709551616-0", "-1", "1-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseOffset(s)
		if err != nil {
			if k := KindOf(err); k != KindInvalid {
				t.Fatalf("ParseOffset(%q): kind %d, want KindInvalid: %v", s, k, err)
			}
			if !strings.Contains(err.Error(), "after_cursor") {
				t.Fatalf("ParseOffset(%q): message %q does not name after_cursor", s, err)
			}
			if c != (Offset{}) {
				t.Fatalf("ParseOffset(%q) = %+v with an error", s, c)
			}
			return
		}
		ms, seq, ok := strings.Cut(s, "-")
		if !ok || !allDigits(ms) || !allDigits(seq) {
			t.Fatalf("ParseOffset accepted %q, which is not <digits>-<digits>", s)
		}
		if len(s) > 41 {
			t.Fatalf("ParseOffset accepted %q, %d bytes long", s, len(s))
		}
		text := c.String()
		if want := canonicalOffset(s); text != want {
			t.Fatalf("ParseOffset(%q).String() = %q, want the canonical %q", s, text, want)
		}
		hasLeadingZero := (len(ms) > 1 && ms[0] == '0') || (len(seq) > 1 && seq[0] == '0')
		if (text == s) == hasLeadingZero {
			t.Fatalf("ParseOffset(%q).String() = %q: equal to the input %v, leading zeros %v", s, text, text == s, hasLeadingZero)
		}
		back, err := ParseOffset(text)
		if err != nil {
			t.Fatalf("ParseOffset(%q) (the String of %q) = %v", text, s, err)
		}
		if back != c {
			t.Fatalf("round trip of %q: %+v, then %+v", s, c, back)
		}
		if back.String() != text {
			t.Fatalf("String is not stable: %q then %q", text, back.String())
		}
	})
}

// FuzzValidateID checks that ValidateID never panics, accepts exactly the
// ids of 1 to 128 bytes from [A-Za-z0-9._~-] other than "." and "..", and
// rejects with KindInvalid and a message naming the field.
func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"ord-1001", "", "bad id", "a:b", "caf\u00e9", "x\x7f", strings.Repeat("a", 129), ".", "..", "..."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := ValidateID("order_id", id)
		valid := len(id) >= 1 && len(id) <= MaxIDBytes && id != "." && id != ".."
		for i := 0; valid && i < len(id); i++ {
			c := id[i]
			valid = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~'
		}
		if valid {
			if err != nil {
				t.Fatalf("ValidateID(%q) = %v, want nil", id, err)
			}
			return
		}
		if err == nil {
			t.Fatalf("ValidateID(%q) = nil, want an error", id)
		}
		if k := KindOf(err); k != KindInvalid {
			t.Fatalf("ValidateID(%q): kind %d, want KindInvalid", id, k)
		}
		if !strings.Contains(err.Error(), "order_id") {
			t.Fatalf("ValidateID(%q): message %q does not name order_id", id, err)
		}
	})
}
