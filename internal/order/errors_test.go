package order_test

import (
	"os"
	"strings"
	"testing"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// TestReasonsDocumented: every reason is in the table of docs/api.md,
// and the table names no reason the service does not give.
func TestReasonsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(doc), "| code | reason | when |")
	table, _, _ = strings.Cut(table, "\n\n")
	documented := map[string]bool{}
	for _, line := range strings.Split(table, "\n") {
		if cells := strings.Split(line, "|"); len(cells) > 3 {
			documented[strings.Trim(strings.TrimSpace(cells[2]), "`")] = true
		}
	}
	delete(documented, "---")
	for _, r := range order.Reasons() {
		if !documented[string(r)] {
			t.Errorf("reason %s is not in the table of docs/api.md", r)
		}
		delete(documented, string(r))
	}
	for r := range documented {
		t.Errorf("docs/api.md lists reason %q, which the service does not give", r)
	}
}

// TestReasonOf: an error without a reason of its own has its kind's
// generic one, and Fail gives the reason's kind.
func TestReasonOf(t *testing.T) {
	if r := order.ReasonOf(order.Errorf(order.KindInvalid, "x")); r != order.ReasonInvalidArgument {
		t.Errorf("ReasonOf(an invalid error) = %s, want INVALID_ARGUMENT", r)
	}
	err := order.Fail(order.ReasonOrderClosed, "", "closed")
	if order.KindOf(err) != order.KindFailedPrecondition || order.ReasonOf(err) != order.ReasonOrderClosed {
		t.Errorf("Fail(ORDER_CLOSED): kind %v, reason %s", order.KindOf(err), order.ReasonOf(err))
	}
	if r := order.ReasonOf(os.ErrNotExist); r != order.ReasonInternal {
		t.Errorf("ReasonOf(a plain error) = %s, want INTERNAL", r)
	}
}
