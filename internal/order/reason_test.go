package order_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// TestNackReason: a nack's reason is at most MaxNackReason bytes of UTF-8
// on one line; CleanReason makes any text such a reason.
func TestNackReason(t *testing.T) {
	for _, ok := range []string{"", "card declined", strings.Repeat("é", order.MaxNackReason/2)} {
		if err := order.ValidateNackReason(ok); err != nil {
			t.Errorf("ValidateNackReason(%.20q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{strings.Repeat("x", order.MaxNackReason+1), "two\nlines", "tab\there", "bad \xff utf-8"} {
		if err := order.ValidateNackReason(bad); order.KindOf(err) != order.KindInvalid {
			t.Errorf("ValidateNackReason(%.20q) = %v, want KindInvalid", bad, err)
		}
	}
	for in, want := range map[string]string{
		"dial tcp: refused\r\n": "dial tcp: refused  ",
		"bad \xff byte":         "bad  byte",
	} {
		if got := order.CleanReason(in); got != want {
			t.Errorf("CleanReason(%q) = %q, want %q", in, got, want)
		}
	}
	long := order.CleanReason(strings.Repeat("é", order.MaxNackReason))
	if len(long) > order.MaxNackReason || !utf8.ValidString(long) || !strings.HasSuffix(long, "…") || order.ValidateNackReason(long) != nil {
		t.Errorf("CleanReason of a long text = %d bytes %q, want at most %d, valid, ending …", len(long), long, order.MaxNackReason)
	}
}
