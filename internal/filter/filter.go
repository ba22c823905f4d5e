// Package filter reads the filter of ListOrders, an AIP-160 expression over
// orders such as
//
//	status = PENDING AND deadline < "2026-12-07T10:00:00Z" AND metadata.merchant = "m-42"
//
// into a Filter: the bounds a store can use to pick an index and a range
// (Statuses, Deadline, Created, IDPrefix, Metadata), and Match, which decides
// for one order exactly. The bounds come from the conjuncts at the top level
// of the filter and are never narrower than Match: a store narrows its
// candidates with them, then keeps those Match accepts.
//
// The grammar is parsed by go.einride.tech/aip/filtering; this package
// checks the fields, operators and values against what an order has, so
// that a bad filter is refused with the position of the fault and what was
// expected there.
package filter

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"go.einride.tech/aip/filtering"
	expr "google.golang.org/genproto/googleapis/api/expr/v1alpha1"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// MaxLength is the longest filter accepted, in bytes.
const MaxLength = 4096

// The fields a filter may name, by their names in the Order message; the
// AIP-style create_time and close_time are accepted for created_at and
// closed_at.
const (
	FieldOrderID     = "order_id"
	FieldStatus      = "status"
	FieldDeadline    = "deadline"
	FieldCreatedAt   = "created_at"
	FieldClosedAt    = "closed_at"
	FieldReschedules = "reschedules"
	FieldMetadata    = "metadata"
)

var aliases = map[string]string{"create_time": FieldCreatedAt, "close_time": FieldClosedAt}

// Filter is a parsed filter. The zero Filter, and the one Parse returns for
// an empty text, matches every order.
type Filter struct {
	// Text is the filter as given, without surrounding white space.
	Text string
	// Statuses is the set of statuses an order may have to match.
	Statuses StatusSet
	// Deadline and Created bound an order's deadline and creation time.
	Deadline, Created Range
	// IDPrefix is a prefix every matching id has; empty for any.
	IDPrefix string
	// Metadata holds entries every matching order has; nil for none.
	Metadata map[string]string
	// root is the whole expression, for Match; nil matches every order.
	root node
}

// StatusSet is a set of order statuses, one bit per status.
type StatusSet uint8

// AllStatuses holds every final and open status.
const AllStatuses = StatusSet(1<<order.StatusPending | 1<<order.StatusExpired | 1<<order.StatusCompleted | 1<<order.StatusCancelled)

// Has reports whether s holds st.
func (s StatusSet) Has(st order.Status) bool { return s&(1<<st) != 0 }

// OnlyPending reports whether s holds the pending status and no other.
func (s StatusSet) OnlyPending() bool { return s == 1<<order.StatusPending }

// HasClosed reports whether s holds any final status.
func (s StatusSet) HasClosed() bool { return s&^(1<<order.StatusPending) != 0 }

// Range bounds a time in unix milliseconds, both ends included; the stores
// keep times in whole milliseconds. The zero Range is not a valid bound: use
// Unbounded.
type Range struct{ Min, Max int64 }

// Unbounded is the Range that holds every time.
var Unbounded = Range{Min: math.MinInt64, Max: math.MaxInt64}

// Empty reports whether no time is in r.
func (r Range) Empty() bool { return r.Min > r.Max }

// Contains reports whether the millisecond ms is in r.
func (r Range) Contains(ms int64) bool { return ms >= r.Min && ms <= r.Max }

// IsUnbounded reports whether r holds every time.
func (r Range) IsUnbounded() bool { return r == Unbounded }

func (r Range) intersect(s Range) Range {
	return Range{Min: max(r.Min, s.Min), Max: min(r.Max, s.Max)}
}

// Empty reports whether f can match no order at all, as its bounds show:
// then a store need not look.
func (f *Filter) Empty() bool {
	return f.Statuses == 0 || f.Deadline.Empty() || f.Created.Empty()
}

// Match reports whether o matches the filter.
func (f *Filter) Match(o *order.Order) bool {
	return f.root == nil || f.root.match(o)
}

// All is the filter that matches every order.
func All() *Filter {
	return &Filter{Statuses: AllStatuses, Deadline: Unbounded, Created: Unbounded}
}

// Parse reads a filter. An empty text matches every order. A bad filter is
// an *order.Error of KindInvalid whose message gives the column (from 1) of
// the fault and what was expected there.
func Parse(text string) (*Filter, error) {
	f := All()
	trimmed := strings.TrimSpace(text)
	f.Text = trimmed
	if trimmed == "" {
		return f, nil
	}
	if len(text) > MaxLength {
		return nil, order.Fail(order.ReasonInvalidFilter, "filter", "filter is %d bytes long; the limit is %d", len(text), MaxLength)
	}
	// Columns are counted in the text as given: the parser sees it trimmed.
	lead := len(text) - len(strings.TrimLeft(text, " \t\r\n"))
	var p filtering.Parser
	p.Init(trimmed)
	parsed, err := p.Parse()
	if err != nil {
		return nil, syntaxError(text, lead, err)
	}
	c := checker{text: text, lead: lead, positions: parsed.GetSourceInfo().GetPositions()}
	root, err := c.node(parsed.GetExpr())
	if err != nil {
		return nil, err
	}
	f.root = root
	for _, n := range conjuncts(root) {
		n.narrow(f)
	}
	return f, nil
}

// syntaxError words a parse error of the aip parser: its innermost error
// has the most precise position and message.
func syntaxError(text string, lead int, err error) error {
	type located interface {
		Position() filtering.Position
		Message() string
	}
	var last located
	for e := err; e != nil; e = errors.Unwrap(e) {
		if l, ok := e.(located); ok {
			last = l
		}
	}
	if last == nil {
		return order.Fail(order.ReasonInvalidFilter, "filter", "filter %q is not a valid filter: %v", order.Clip(text), err)
	}
	msg := last.Message()
	switch {
	case msg == "parse token":
		msg = "the filter ends where a value was expected"
	case msg == "unexpected trailing token WS":
		msg = "unexpected text after a space (an AND or OR needs a comparison after it)"
	case strings.HasPrefix(msg, "unexpected trailing token "):
		msg = "unexpected " + strings.TrimPrefix(msg, "unexpected trailing token ") + " (keys and values with spaces, - or other punctuation need quotes)"
	}
	return order.Fail(order.ReasonInvalidFilter, "filter", "filter %q: at column %d: %s; expected a filter like %s",
		order.Clip(text), lead+int(last.Position().Offset)+1, msg, example)
}

const example = `status = PENDING AND deadline < "2026-12-07T10:00:00Z" AND metadata.merchant = "m-42"`

// conjuncts returns the nodes that must all hold for root to hold.
func conjuncts(root node) []node {
	if a, ok := root.(and); ok {
		var out []node
		for _, n := range a {
			out = append(out, conjuncts(n)...)
		}
		return out
	}
	return []node{root}
}

// checker turns the parsed expression into nodes, checking each.
type checker struct {
	text      string
	lead      int
	positions map[int64]int32
}

func (c *checker) errorf(e *expr.Expr, format string, args ...any) error {
	col := c.lead + int(c.positions[e.GetId()]) + 1
	return order.Fail(order.ReasonInvalidFilter, "filter", "filter %q: at column %d: %s", order.Clip(c.text), col, fmt.Sprintf(format, args...))
}

func (c *checker) node(e *expr.Expr) (node, error) {
	call := e.GetCallExpr()
	if call == nil {
		return nil, c.errorf(e, "a bare value matches nothing here; expected a comparison such as status = PENDING, or %s:\"abc*\" for an id prefix", FieldOrderID)
	}
	args := call.GetArgs()
	switch fn := call.GetFunction(); fn {
	case filtering.FunctionAnd, filtering.FunctionFuzzyAnd, filtering.FunctionOr:
		var nodes []node
		for _, a := range args {
			n, err := c.node(a)
			if err != nil {
				return nil, err
			}
			nodes = append(nodes, n)
		}
		if fn == filtering.FunctionOr {
			return or(nodes), nil
		}
		return and(nodes), nil
	case filtering.FunctionNot:
		n, err := c.node(args[0])
		if err != nil {
			return nil, err
		}
		return not{n}, nil
	case filtering.FunctionEquals, filtering.FunctionNotEquals, filtering.FunctionLessThan,
		filtering.FunctionLessEquals, filtering.FunctionGreaterThan, filtering.FunctionGreaterEquals,
		filtering.FunctionHas:
		return c.restriction(e, fn, args[0], args[1])
	default:
		return nil, c.errorf(e, "the function %s is not supported; expected a comparison (=, !=, <, <=, >, >=, :) joined by AND, OR, NOT", fn)
	}
}

// field returns the field a comparison's left side names, and the metadata
// key for metadata.<key>.
func (c *checker) field(e *expr.Expr) (name, key string, err error) {
	if id := e.GetIdentExpr(); id != nil {
		name = id.GetName()
		if a, ok := aliases[name]; ok {
			name = a
		}
		switch name {
		case FieldOrderID, FieldStatus, FieldDeadline, FieldCreatedAt, FieldClosedAt, FieldReschedules, FieldMetadata:
			return name, "", nil
		}
		return "", "", c.errorf(e, "unknown field %q; expected one of %s, %s, %s, %s, %s, %s or %s.<key>",
			order.Clip(name), FieldOrderID, FieldStatus, FieldDeadline, FieldCreatedAt, FieldClosedAt, FieldReschedules, FieldMetadata)
	}
	if sel := e.GetSelectExpr(); sel != nil {
		op := sel.GetOperand().GetIdentExpr()
		if op != nil && op.GetName() == FieldMetadata {
			return FieldMetadata, sel.GetField(), nil
		}
		return "", "", c.errorf(e, "only %s has keys (%s.<key>); expected a field such as %s or %s.<key>", FieldMetadata, FieldMetadata, FieldStatus, FieldMetadata)
	}
	return "", "", c.errorf(e, "expected a field name (such as %s, %s or %s.<key>) on the left of a comparison", FieldStatus, FieldDeadline, FieldMetadata)
}

// text returns the value of a string literal or a bare word.
func text(e *expr.Expr) (string, bool) {
	if id := e.GetIdentExpr(); id != nil {
		return id.GetName(), true
	}
	if k, ok := e.GetConstExpr().GetConstantKind().(*expr.Constant_StringValue); ok {
		return k.StringValue, true
	}
	return "", false
}

func (c *checker) restriction(e *expr.Expr, op string, lhs, rhs *expr.Expr) (node, error) {
	name, key, err := c.field(lhs)
	if err != nil {
		return nil, err
	}
	switch name {
	case FieldStatus:
		if op != filtering.FunctionEquals && op != filtering.FunctionNotEquals {
			return nil, c.errorf(e, "%s takes = or !=, not %s", FieldStatus, op)
		}
		v, _ := text(rhs)
		st := order.ParseStatus(strings.ToLower(v))
		if st == order.StatusUnknown {
			return nil, c.errorf(rhs, "expected a status (PENDING, EXPIRED, COMPLETED or CANCELLED)")
		}
		return statusIs{st: st, not: op == filtering.FunctionNotEquals}, nil
	case FieldDeadline, FieldCreatedAt, FieldClosedAt:
		if op == filtering.FunctionHas {
			return nil, c.errorf(e, "%s takes =, !=, <, <=, > or >=, not :", name)
		}
		v, ok := text(rhs)
		if !ok {
			return nil, c.errorf(rhs, "expected a time in quotes, in RFC 3339 form, like \"2026-12-07T10:00:00Z\"")
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return nil, c.errorf(rhs, "%q is not a time; expected RFC 3339 form in quotes, like \"2026-12-07T10:00:00Z\"", order.Clip(v))
		}
		return timeCmp{field: name, op: op, r: rangeOf(op, t)}, nil
	case FieldReschedules:
		k, ok := rhs.GetConstExpr().GetConstantKind().(*expr.Constant_Int64Value)
		if !ok || op == filtering.FunctionHas {
			return nil, c.errorf(rhs, "expected %s compared (=, !=, <, <=, >, >=) with a whole number", FieldReschedules)
		}
		return intCmp{op: op, v: k.Int64Value}, nil
	case FieldOrderID:
		v, ok := text(rhs)
		if !ok {
			return nil, c.errorf(rhs, "expected an order id in quotes")
		}
		switch op {
		case filtering.FunctionEquals, filtering.FunctionNotEquals, filtering.FunctionHas:
		default:
			return nil, c.errorf(e, "%s takes =, != or : (with a trailing * for a prefix), not %s", FieldOrderID, op)
		}
		prefix := strings.HasSuffix(v, "*")
		v = strings.TrimSuffix(v, "*")
		if strings.Contains(v, "*") {
			return nil, c.errorf(rhs, "only a trailing * (a prefix, like \"abc*\") is supported in an order id")
		}
		if op == filtering.FunctionHas {
			prefix = true // order_id:"abc" is the prefix "abc" too
		}
		return idIs{v: v, prefix: prefix, not: op == filtering.FunctionNotEquals}, nil
	default: // metadata
		if key == "" {
			if op != filtering.FunctionHas {
				return nil, c.errorf(e, "expected %s.<key> = \"<value>\", or %s:<key> for orders that have the key", FieldMetadata, FieldMetadata)
			}
			k, ok := text(rhs)
			if !ok {
				return nil, c.errorf(rhs, "expected a metadata key after %s:", FieldMetadata)
			}
			return mdHas{key: k}, nil
		}
		v, ok := text(rhs)
		if !ok {
			if k, isInt := rhs.GetConstExpr().GetConstantKind().(*expr.Constant_Int64Value); isInt {
				v, ok = fmt.Sprint(k.Int64Value), true
			}
		}
		if !ok {
			return nil, c.errorf(rhs, "expected a metadata value in quotes")
		}
		switch op {
		case filtering.FunctionEquals, filtering.FunctionNotEquals:
			return mdIs{key: key, v: v, not: op == filtering.FunctionNotEquals}, nil
		case filtering.FunctionHas:
			if v != "*" {
				return nil, c.errorf(rhs, "expected %s.%s:* (has the key); to compare a value use =", FieldMetadata, key)
			}
			return mdHas{key: key}, nil
		}
		return nil, c.errorf(e, "metadata values take = or !=, not %s", op)
	}
}

// rangeOf returns the milliseconds t compared by op holds, for the ordered
// comparisons and =; != holds all but the milliseconds of =.
func rangeOf(op string, t time.Time) Range {
	floor := t.UnixMilli()
	if t.Before(time.UnixMilli(floor)) { // before 1970, UnixMilli rounds up
		floor--
	}
	ceil := floor
	if !time.UnixMilli(floor).Equal(t) {
		ceil = floor + 1
	}
	r := Unbounded
	switch op {
	case filtering.FunctionLessThan:
		r.Max = ceil - 1
	case filtering.FunctionLessEquals:
		r.Max = floor
	case filtering.FunctionGreaterThan:
		r.Min = floor + 1
	case filtering.FunctionGreaterEquals:
		r.Min = ceil
	default: // = and !=
		r.Min, r.Max = ceil, floor
	}
	return r
}
