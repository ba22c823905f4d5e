package order

import (
	"math"
	"strings"
	"testing"
)

func TestParseOffset(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Offset
		text string // String() of the result; the input when empty
	}{
		{name: "zero", in: "0-0", want: Offset{}},
		{name: "typical", in: "1732170000000-0", want: Offset{Ms: 1732170000000}},
		{name: "with a sequence", in: "1795240202144-7", want: Offset{Ms: 1795240202144, Seq: 7}},
		{name: "only a sequence", in: "0-5", want: Offset{Seq: 5}},
		{name: "largest", in: "18446744073709551615-18446744073709551615",
			want: Offset{Ms: math.MaxUint64, Seq: math.MaxUint64}},
		{name: "leading zeros are read as decimal", in: "007-010", want: Offset{Ms: 7, Seq: 10}, text: "7-10"},
		{name: "all zeros", in: "000-000", want: Offset{}, text: "0-0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOffset(tt.in)
			if err != nil {
				t.Fatalf("ParseOffset(%q) = %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseOffset(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			text := tt.text
			if text == "" {
				text = tt.in
			}
			if s := got.String(); s != text {
				t.Errorf("String() = %q, want %q", s, text)
			}
			back, err := ParseOffset(got.String())
			if err != nil || back != got {
				t.Errorf("ParseOffset(String()) = %+v, %v; want %+v", back, err, got)
			}
		})
	}
}

func TestParseOffsetMalformed(t *testing.T) {
	long := strings.Repeat("1", 5000) + "-0"
	tests := []struct {
		name   string
		in     string
		quoted string // what the message quotes; the input when empty
	}{
		{name: "empty", in: ""},
		{name: "no dash", in: "1"},
		{name: "no sequence", in: "1-"},
		{name: "no ms", in: "-1"},
		{name: "only a dash", in: "-"},
		{name: "letters", in: "a-1"},
		{name: "letters in seq", in: "1-b"},
		{name: "three parts", in: "1-2-3"},
		{name: "two dashes", in: "1--2"},
		{name: "ms overflows uint64", in: "18446744073709551616-0"},
		{name: "seq overflows uint64", in: "0-18446744073709551616"},
		{name: "negative seq", in: "1--1"},
		{name: "plus sign", in: "+1-0"},
		{name: "spaces", in: " 1-0"},
		{name: "trailing newline", in: "1-0\n"},
		{name: "hex", in: "0x10-0"},
		{name: "underscores", in: "1_000-0"},
		{name: "42 characters of zeros", in: strings.Repeat("0", 40) + "-0"},
		{name: "very long", in: long, quoted: long[:64] + "…"},
		{name: "non-ASCII digits", in: "١-٠"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseOffset(tt.in)
			if err == nil {
				t.Fatalf("ParseOffset(%q) = %+v, want an error", tt.in, c)
			}
			if c != (Offset{}) {
				t.Errorf("cursor with an error = %+v, want the zero cursor", c)
			}
			quoted := tt.quoted
			if quoted == "" {
				quoted = tt.in
			}
			wantInvalid(t, err, "after_cursor", "is not a cursor", `"1732170000000-0"`)
			if q := `"` + strings.ReplaceAll(quoted, "\n", `\n`) + `"`; !strings.Contains(err.Error(), q) {
				t.Errorf("error %q does not quote the input as %s", err, q)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long; a long input should be clipped", len(err.Error()))
			}
		})
	}
}

func TestOffsetLessAndNext(t *testing.T) {
	tests := []struct {
		name string
		a, b Offset
		less bool // a.Less(b)
	}{
		{name: "equal zero", a: Offset{}, b: Offset{}, less: false},
		{name: "equal", a: Offset{5, 2}, b: Offset{5, 2}, less: false},
		{name: "smaller ms", a: Offset{4, 9}, b: Offset{5, 0}, less: true},
		{name: "larger ms", a: Offset{6, 0}, b: Offset{5, 9}, less: false},
		{name: "same ms smaller seq", a: Offset{5, 1}, b: Offset{5, 2}, less: true},
		{name: "same ms larger seq", a: Offset{5, 3}, b: Offset{5, 2}, less: false},
		{name: "zero before anything", a: Offset{}, b: Offset{0, 1}, less: true},
		{name: "max seq before next ms", a: Offset{1, math.MaxUint64}, b: Offset{2, 0}, less: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Less(tt.b); got != tt.less {
				t.Errorf("%v.Less(%v) = %v, want %v", tt.a, tt.b, got, tt.less)
			}
			if tt.a != tt.b && tt.b.Less(tt.a) == tt.less {
				t.Errorf("Less is not antisymmetric for %v and %v", tt.a, tt.b)
			}
		})
	}

	next := []struct {
		name string
		c    Offset
		want Offset
	}{
		{name: "zero", c: Offset{}, want: Offset{0, 1}},
		{name: "keeps the ms", c: Offset{1732170000000, 0}, want: Offset{1732170000000, 1}},
		{name: "increments the seq", c: Offset{7, 41}, want: Offset{7, 42}},
	}
	for _, tt := range next {
		t.Run("Next of "+tt.name, func(t *testing.T) {
			got := tt.c.Next()
			if got != tt.want {
				t.Errorf("%v.Next() = %v, want %v", tt.c, got, tt.want)
			}
			if !tt.c.Less(got) {
				t.Errorf("%v.Next() = %v does not come after it", tt.c, got)
			}
		})
	}
}

func TestOffsetIsZero(t *testing.T) {
	tests := []struct {
		name string
		c    Offset
		want bool
	}{
		{name: "zero", c: Offset{}, want: true},
		{name: "ms", c: Offset{Ms: 1}, want: false},
		{name: "seq", c: Offset{Seq: 1}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.IsZero(); got != tt.want {
				t.Errorf("%v.IsZero() = %v, want %v", tt.c, got, tt.want)
			}
		})
	}
}

func TestCheckOffset(t *testing.T) {
	const (
		now       = uint64(1_800_000_000_000)
		retention = uint64(24 * 3600 * 1000)
	)
	tests := []struct {
		name      string
		c         Offset
		now, ret  uint64
		wantParts []string // nil: accepted
	}{
		{name: "zero is always fine", c: Offset{}, now: now, ret: retention},
		{name: "zero with a tiny retention", c: Offset{}, now: now, ret: 1},
		{name: "now", c: Offset{Ms: now, Seq: 3}, now: now, ret: retention},
		{name: "a minute ago", c: Offset{Ms: now - 60_000}, now: now, ret: retention},
		{name: "exactly the retention ago", c: Offset{Ms: now - retention}, now: now, ret: retention},
		{name: "exactly the retention ago with a seq", c: Offset{Ms: now - retention, Seq: 9}, now: now, ret: retention},
		{name: "1ms older than the retention", c: Offset{Ms: now - retention - 1, Seq: 99}, now: now, ret: retention,
			wantParts: []string{"cursor 1799913599999-99 is older than the retention period (24h)", "start again without a cursor"}},
		{name: "far older than the retention", c: Offset{Ms: 1}, now: now, ret: retention,
			wantParts: []string{"cursor 1-0 is older than the retention period"}},
		{name: "0-1 is not the zero cursor", c: Offset{Seq: 1}, now: now, ret: retention,
			wantParts: []string{"older than the retention period"}},
		{name: "1ms in the future", c: Offset{Ms: now + 1}, now: now, ret: retention,
			wantParts: []string{"cursor 1800000000001-0 is ahead of this event log"}},
		{name: "far future", c: Offset{Ms: math.MaxUint64, Seq: math.MaxUint64}, now: now, ret: retention,
			wantParts: []string{"ahead of this event log"}},
		{name: "retention longer than the clock", c: Offset{Ms: 1}, now: 1000, ret: 5000},
		{name: "retention equal to the clock", c: Offset{Ms: 1}, now: 5000, ret: 5000},
		{name: "retention one less than the clock", c: Offset{Ms: 0, Seq: 1}, now: 5001, ret: 5000,
			wantParts: []string{"older than the retention period (5s)"}},
		{name: "future with a clock below the retention", c: Offset{Ms: 1001}, now: 1000, ret: 5000,
			wantParts: []string{"ahead of this event log"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckOffset(tt.c, tt.now, tt.ret)
			if tt.wantParts == nil {
				if err != nil {
					t.Fatalf("CheckOffset(%v, %d, %d) = %v, want nil", tt.c, tt.now, tt.ret, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckOffset(%v, %d, %d) = nil, want OutOfRange", tt.c, tt.now, tt.ret)
			}
			if k := KindOf(err); k != KindOutOfRange {
				t.Errorf("KindOf = %d, want KindOutOfRange", k)
			}
			for _, p := range tt.wantParts {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not contain %q", err, p)
				}
			}
		})
	}
}

func TestPositionCheckParts(t *testing.T) {
	longest := Offset{Ms: math.MaxUint64, Seq: math.MaxUint64}
	many := make(Cursor, MaxPartitions)
	for i := range many {
		many[i] = longest
	}
	tests := []struct {
		name      string
		p         Cursor
		n         int
		wantParts []string // nil: no error
		maxLen    int
	}{
		{name: "one of one", p: Cursor{{Ms: 5}}, n: 1},
		{name: "three of three", p: Cursor{{}, {Ms: 1}, {Ms: 2, Seq: 3}}, n: 3},
		{name: "two of three quotes it whole", p: Cursor{{Ms: 1}, {Ms: 2}}, n: 3,
			wantParts: []string{`cursor "1-0,2-0" has 2 part(s)`, "has 3 partition(s)"}},
		{name: "the longest cursor is clipped", p: many, n: 1,
			wantParts: []string{`cursor "18446744073709551615-18446744073709551615,1844`, `…" has 1024 part(s)`, "has 1 partition(s)"},
			maxLen:    400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.CheckParts(tt.n)
			if tt.wantParts == nil {
				if err != nil {
					t.Fatalf("CheckParts(%d) = %v, want nil", tt.n, err)
				}
				return
			}
			wantInvalid(t, err, tt.wantParts...)
			if tt.maxLen > 0 && len(err.Error()) > tt.maxLen {
				t.Errorf("a message of %d bytes, want at most %d", len(err.Error()), tt.maxLen)
			}
		})
	}
}

// TestEventIDAndAckID holds the text forms of an event id and of an ack id,
// which the API hands out and takes back: each reads back what String
// wrote, and only that.
func TestEventIDAndAckID(t *testing.T) {
	id := EventID{Partition: 1023, Offset: Offset{Ms: 1732170000000, Seq: 7}}
	if got := id.String(); got != "1023/1732170000000-7" {
		t.Fatalf("EventID.String() = %q", got)
	}
	if back, ok := ParseEventID(id.String()); !ok || back != id {
		t.Fatalf("ParseEventID(%q) = %+v, %v", id, back, ok)
	}
	if got := (Event{Partition: 1023, Offset: id.Offset}).ID(); got != id {
		t.Fatalf("Event.ID() = %+v, want %+v", got, id)
	}
	a := AckID{EventID: id, Attempt: 3}
	if got := a.String(); got != "1023/1732170000000-7/3" {
		t.Fatalf("AckID.String() = %q", got)
	}
	if back, ok := ParseAckID(a.String()); !ok || back != a {
		t.Fatalf("ParseAckID(%q) = %+v, %v", a, back, ok)
	}
	for _, s := range []string{"", "0", "0/", "/1-0", "0/1-0/", "-1/1-0", "1024/1-0", "01/1-0", "+1/1-0", "0/1", "0//1-0", "0/1-0/1", "0/x-0"} {
		if got, ok := ParseEventID(s); ok {
			t.Errorf("ParseEventID(%q) = %+v, want not an event id", s, got)
		}
	}
	for _, s := range []string{"", "0/1-0", "0/1-0/", "0/1-0/0", "0/1-0/-1", "0/1-0/01", "0/1-0/+1", "0/1-0//1", "0/1-0/1/2", "1024/1-0/1", "01/1-0/1", "0/1/1-0", "/1-0/1", "0/1-0/x"} {
		if got, ok := ParseAckID(s); ok {
			t.Errorf("ParseAckID(%q) = %+v, want not an ack id", s, got)
		}
	}
}
