package filter

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func sample() []*order.Order {
	return []*order.Order{
		{ID: "abc-1", Status: order.StatusPending, CreatedAt: t0.Add(-time.Minute), Deadline: t0, Metadata: map[string]string{"merchant": "m-42", "customer-id": "c1"}},
		{ID: "abc-2", Status: order.StatusPending, CreatedAt: t0, Deadline: t0.Add(time.Minute), Metadata: map[string]string{"merchant": "m-7"}, Reschedules: 2},
		{ID: "xyz-3", Status: order.StatusExpired, CreatedAt: t0.Add(-time.Hour), Deadline: t0.Add(-time.Minute), ClosedAt: t0.Add(-time.Minute)},
		{ID: "xyz-4", Status: order.StatusCompleted, CreatedAt: t0.Add(-time.Hour), Deadline: t0.Add(time.Hour), ClosedAt: t0.Add(-30 * time.Minute), Metadata: map[string]string{"merchant": "m-42"}},
		{ID: "abd-5", Status: order.StatusCancelled, CreatedAt: t0.Add(-2 * time.Hour), Deadline: t0.Add(2 * time.Hour), ClosedAt: t0.Add(-time.Hour)},
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name, filter string
		want         string // ids of sample() that match, joined by spaces
	}{
		{"empty", "", "abc-1 abc-2 xyz-3 xyz-4 abd-5"},
		{"status", "status = PENDING", "abc-1 abc-2"},
		{"status lower case quoted", `status = "expired"`, "xyz-3"},
		{"status not", "status != PENDING", "xyz-3 xyz-4 abd-5"},
		{"deadline less", `deadline < "2026-12-07T10:00:00Z"`, "xyz-3"},
		{"deadline less or equal", `deadline <= "2026-12-07T10:00:00Z"`, "abc-1 xyz-3"},
		{"deadline greater", `deadline > "2026-12-07T10:01:00Z"`, "xyz-4 abd-5"},
		{"deadline greater or equal", `deadline >= "2026-12-07T10:01:00Z"`, "abc-2 xyz-4 abd-5"},
		{"deadline equal", `deadline = "2026-12-07T11:00:00+01:00"`, "abc-1"},
		{"deadline not equal", `deadline != "2026-12-07T10:00:00Z"`, "abc-2 xyz-3 xyz-4 abd-5"},
		{"deadline sub-millisecond", `deadline < "2026-12-07T10:00:00.0000001Z"`, "abc-1 xyz-3"},
		{"create_time alias", `create_time >= "2026-12-07T09:59:00Z"`, "abc-1 abc-2"},
		{"created_at", `created_at < "2026-12-07T09:00:00Z"`, "abd-5"},
		{"closed_at skips pending", `closed_at > "2026-12-07T09:00:00Z"`, "xyz-3 xyz-4"},
		{"close_time not equal skips pending", `close_time != "2026-12-07T09:00:00Z"`, "xyz-3 xyz-4"},
		{"metadata", `metadata.merchant = "m-42"`, "abc-1 xyz-4"},
		{"metadata quoted key", `metadata."customer-id" = "c1"`, "abc-1"},
		{"metadata not", `metadata.merchant != "m-42"`, "abc-2 xyz-3 abd-5"},
		{"metadata has key", `metadata:merchant`, "abc-1 abc-2 xyz-4"},
		{"metadata key star", `metadata.merchant:*`, "abc-1 abc-2 xyz-4"},
		{"id prefix has", `order_id:"abc*"`, "abc-1 abc-2"},
		{"id prefix equals", `order_id = "ab*"`, "abc-1 abc-2 abd-5"},
		{"id exact", `order_id = "xyz-3"`, "xyz-3"},
		{"id not", `order_id != "xyz*"`, "abc-1 abc-2 abd-5"},
		{"reschedules", `reschedules > 0`, "abc-2"},
		{"reschedules equal", `reschedules = 0`, "abc-1 xyz-3 xyz-4 abd-5"},
		{"and", `status = PENDING AND metadata.merchant = "m-42"`, "abc-1"},
		{"implicit and", `status = PENDING metadata.merchant = "m-42"`, "abc-1"},
		{"or", `status = EXPIRED OR status = CANCELLED`, "xyz-3 abd-5"},
		{"not", `NOT status = PENDING AND NOT order_id:"xyz*"`, "abd-5"},
		{"minus", `-status = PENDING`, "xyz-3 xyz-4 abd-5"},
		{"parens", `(status = PENDING OR status = COMPLETED) AND metadata.merchant = "m-42"`, "abc-1 xyz-4"},
		{"spaces around", "  status = PENDING  ", "abc-1 abc-2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse(tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range sample() {
				if f.Match(o) {
					got = append(got, o.ID)
					// The bounds never drop an order Match accepts.
					if !f.Statuses.Has(o.Status) || !f.Deadline.Contains(o.Deadline.UnixMilli()) ||
						!f.Created.Contains(o.CreatedAt.UnixMilli()) || !strings.HasPrefix(o.ID, f.IDPrefix) {
						t.Errorf("bounds %+v drop %s, which matches", f, o.ID)
					}
					for k, v := range f.Metadata {
						if o.Metadata[k] != v {
							t.Errorf("metadata bound %s=%s drops %s, which matches", k, v, o.ID)
						}
					}
				}
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("Parse(%q) matches %q, want %q", tt.filter, g, tt.want)
			}
		})
	}
}

func TestBounds(t *testing.T) {
	ms := t0.UnixMilli()
	tests := []struct {
		name, filter string
		statuses     StatusSet
		deadline     Range
		created      Range
		prefix       string
		md           map[string]string
		empty        bool
	}{
		{name: "none", filter: "", statuses: AllStatuses, deadline: Unbounded, created: Unbounded},
		{name: "pending by deadline", filter: `status = PENDING AND deadline >= "2026-12-07T10:00:00Z" AND deadline < "2026-12-07T10:00:01Z"`,
			statuses: 1 << order.StatusPending, deadline: Range{ms, ms + 999}, created: Unbounded},
		{name: "not pending", filter: `status != PENDING`, statuses: AllStatuses &^ (1 << order.StatusPending), deadline: Unbounded, created: Unbounded},
		{name: "not not pending", filter: `NOT status != PENDING`, statuses: 1 << order.StatusPending, deadline: Unbounded, created: Unbounded},
		{name: "or of statuses", filter: `status = EXPIRED OR status = COMPLETED`, statuses: 1<<order.StatusExpired | 1<<order.StatusCompleted, deadline: Unbounded, created: Unbounded},
		{name: "or with other fields keeps all statuses", filter: `status = EXPIRED OR metadata.a = "b"`, statuses: AllStatuses, deadline: Unbounded, created: Unbounded},
		{name: "closed_at excludes pending", filter: `closed_at > "2026-12-07T10:00:00Z"`, statuses: AllStatuses &^ (1 << order.StatusPending), deadline: Unbounded, created: Unbounded},
		{name: "created", filter: `create_time > "2026-12-07T10:00:00Z"`, statuses: AllStatuses, deadline: Unbounded, created: Range{ms + 1, Unbounded.Max}},
		{name: "prefix and metadata", filter: `order_id:"ab*" AND order_id = "abc*" AND metadata.m = "1" AND metadata.n = "2"`,
			statuses: AllStatuses, deadline: Unbounded, created: Unbounded, prefix: "abc", md: map[string]string{"m": "1", "n": "2"}},
		{name: "or does not narrow metadata", filter: `metadata.m = "1" OR metadata.m = "2"`, statuses: AllStatuses, deadline: Unbounded, created: Unbounded},
		{name: "contradicting statuses", filter: `status = PENDING AND status = EXPIRED`, deadline: Unbounded, created: Unbounded, empty: true},
		{name: "empty deadline", filter: `deadline > "2026-12-07T10:00:00Z" AND deadline < "2026-12-07T09:00:00Z"`,
			statuses: AllStatuses, deadline: Range{ms + 1, ms - 3600_000 - 1}, created: Unbounded, empty: true},
		{name: "sub-millisecond equality is empty", filter: `deadline = "2026-12-07T10:00:00.0005Z"`,
			statuses: AllStatuses, deadline: Range{ms + 1, ms}, created: Unbounded, empty: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse(tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			if f.Statuses != tt.statuses || f.Deadline != tt.deadline || f.Created != tt.created || f.IDPrefix != tt.prefix || f.Empty() != tt.empty {
				t.Errorf("Parse(%q) = statuses %b deadline %v created %v prefix %q empty %v; want %b %v %v %q %v",
					tt.filter, f.Statuses, f.Deadline, f.Created, f.IDPrefix, f.Empty(), tt.statuses, tt.deadline, tt.created, tt.prefix, tt.empty)
			}
			if len(f.Metadata) != len(tt.md) {
				t.Errorf("metadata bounds %v, want %v", f.Metadata, tt.md)
			}
			for k, v := range tt.md {
				if f.Metadata[k] != v {
					t.Errorf("metadata bounds %v, want %v", f.Metadata, tt.md)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		filter string
		want   []string // parts of the message
	}{
		{`status = `, []string{"column 9", "ends where a value was expected"}},
		{`status = PENDING AND`, []string{"column 17", "needs a comparison after it"}},
		{`status = PENDING)`, []string{"column 17", "unexpected )"}},
		{`metadata.customer-id = "x"`, []string{"column 18", "need quotes"}},
		{`  colour = "red"`, []string{"column 3", `unknown field "colour"`, "order_id"}},
		{`status = PAID`, []string{"column 10", "PENDING, EXPIRED"}},
		{`status < PENDING`, []string{"column 1", "= or !="}},
		{`deadline < "tomorrow"`, []string{"column 12", "RFC 3339"}},
		{`deadline < 5`, []string{"column 12", "RFC 3339"}},
		{`deadline:"2026-12-07T10:00:00Z"`, []string{"not :"}},
		{`metadata = "x"`, []string{"metadata.<key>"}},
		{`metadata.a < "x"`, []string{"= or !="}},
		{`metadata.a:"x"`, []string{"metadata.a:*"}},
		{`order_id = "a*b"`, []string{"trailing *"}},
		{`order_id > "a"`, []string{"=, != or :"}},
		{`status.x = "a"`, []string{"only metadata has keys"}},
		{`reschedules = "two"`, []string{"whole number"}},
		{`pending`, []string{"column 1", "bare value"}},
		{`status = PENDING AND "x"`, []string{"column 22", "bare value"}},
		{`fn(status) = "x"`, []string{"column 1", "field name"}},
		{`"unterminated`, []string{"column"}},
		{strings.Repeat("a", MaxLength+1), []string{"limit"}},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			_, err := Parse(tt.filter)
			var oe *order.Error
			if !errors.As(err, &oe) || oe.Kind != order.KindInvalid {
				t.Fatalf("Parse(%q) = %v, want a KindInvalid error", tt.filter, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%q) = %q, want it to say %q", tt.filter, err, w)
				}
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`status = PENDING AND deadline < "2026-12-07T10:00:00Z" AND metadata.a = "b"`)
	f.Add(`NOT (order_id:"x*" OR reschedules >= 3)`)
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := Parse(s)
		if err != nil {
			return
		}
		for _, o := range sample() {
			flt.Match(o)
		}
	})
}
