package filter

import (
	"strings"

	"go.einride.tech/aip/filtering"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// node is one checked part of a filter.
type node interface {
	// match decides the part for one order.
	match(o *order.Order) bool
	// narrow tightens f's bounds by what the part requires, when the part
	// is a conjunct at the top level.
	narrow(f *Filter)
}

type and []node

func (a and) match(o *order.Order) bool {
	for _, n := range a {
		if !n.match(o) {
			return false
		}
	}
	return true
}

func (a and) narrow(f *Filter) {
	for _, n := range a {
		n.narrow(f)
	}
}

type or []node

func (a or) match(o *order.Order) bool {
	for _, n := range a {
		if n.match(o) {
			return true
		}
	}
	return false
}

// narrow of an OR: the union of what each side allows is not kept; only
// statuses are cheap to unite exactly.
func (a or) narrow(f *Filter) {
	var union StatusSet
	for _, n := range a {
		g := All()
		n.narrow(g)
		union |= g.Statuses
	}
	f.Statuses &= union
}

type not struct{ n node }

func (n not) match(o *order.Order) bool { return !n.n.match(o) }

// narrow of a NOT: only a negated status is inverted exactly.
func (n not) narrow(f *Filter) {
	if s, ok := n.n.(statusIs); ok {
		s.not = !s.not
		s.narrow(f)
	}
}

type statusIs struct {
	st  order.Status
	not bool
}

func (s statusIs) match(o *order.Order) bool { return (o.Status == s.st) != s.not }

func (s statusIs) narrow(f *Filter) {
	one := StatusSet(1 << s.st)
	if s.not {
		f.Statuses &^= one
	} else {
		f.Statuses &= one
	}
}

// timeCmp compares deadline, created_at or closed_at. A pending order has
// no closed_at: every comparison of it is false, as for a missing value.
type timeCmp struct {
	field string
	op    string
	r     Range
}

func (t timeCmp) match(o *order.Order) bool {
	var ms int64
	switch t.field {
	case FieldDeadline:
		ms = o.Deadline.UnixMilli()
	case FieldCreatedAt:
		ms = o.CreatedAt.UnixMilli()
	default:
		if o.ClosedAt.IsZero() {
			return false
		}
		ms = o.ClosedAt.UnixMilli()
	}
	if t.op == filtering.FunctionNotEquals {
		return !t.r.Contains(ms)
	}
	return t.r.Contains(ms)
}

func (t timeCmp) narrow(f *Filter) {
	switch {
	case t.op == filtering.FunctionNotEquals:
	case t.field == FieldDeadline:
		f.Deadline = f.Deadline.intersect(t.r)
	case t.field == FieldCreatedAt:
		f.Created = f.Created.intersect(t.r)
	default: // closed_at: only closed orders have it
		f.Statuses &^= 1 << order.StatusPending
	}
}

type intCmp struct {
	op string
	v  int64
}

func (c intCmp) match(o *order.Order) bool {
	n := int64(o.Reschedules)
	switch c.op {
	case filtering.FunctionEquals:
		return n == c.v
	case filtering.FunctionNotEquals:
		return n != c.v
	case filtering.FunctionLessThan:
		return n < c.v
	case filtering.FunctionLessEquals:
		return n <= c.v
	case filtering.FunctionGreaterThan:
		return n > c.v
	default:
		return n >= c.v
	}
}

func (intCmp) narrow(*Filter) {}

type idIs struct {
	v      string
	prefix bool
	not    bool
}

func (i idIs) match(o *order.Order) bool {
	if i.prefix {
		return strings.HasPrefix(o.ID, i.v) != i.not
	}
	return (o.ID == i.v) != i.not
}

func (i idIs) narrow(f *Filter) {
	if i.not {
		return
	}
	// An exact id is a prefix too; of two prefixes the longer one holds
	// when they agree (else nothing matches, and Match says so).
	if strings.HasPrefix(i.v, f.IDPrefix) {
		f.IDPrefix = i.v
	}
}

type mdIs struct {
	key, v string
	not    bool
}

func (m mdIs) match(o *order.Order) bool {
	v, ok := o.Metadata[m.key]
	if m.not {
		return !ok || v != m.v
	}
	return ok && v == m.v
}

func (m mdIs) narrow(f *Filter) {
	if m.not {
		return
	}
	if f.Metadata == nil {
		f.Metadata = map[string]string{}
	}
	if old, ok := f.Metadata[m.key]; ok && old != m.v {
		f.Statuses = 0 // two values of one key: nothing matches
		return
	}
	f.Metadata[m.key] = m.v
}

type mdHas struct{ key string }

func (m mdHas) match(o *order.Order) bool {
	_, ok := o.Metadata[m.key]
	return ok
}

func (mdHas) narrow(*Filter) {}
