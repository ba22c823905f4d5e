package filter

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Lister is what a store does for ListOrders. Both stores keep it, and the
// conformance suite holds them to it.
type Lister interface {
	// List returns the orders that match q.Filter, pending and closed
	// (while retention keeps them), in q's order, after q.After: up to
	// q.PageSize of them, having examined at most q.Budget orders. Page.Next
	// is where the next page starts, nil after the last one: a page may be
	// short, even empty, and still have a Next, when the budget ran out.
	//
	// A pending order past its deadline is expired first, as Get does.
	// Between pages orders may be created, closed and expire: each order
	// whose deadline does not change meanwhile is listed once (an order keeps
	// its place when it closes); one rescheduled meanwhile may be listed
	// twice or not at all.
	List(ctx context.Context, q Query) (Page, error)
}

// DefaultBudget is how many orders a List examines at most when a Query
// gives no budget.
const DefaultBudget = 10000

// Query asks a store for a page of orders.
type Query struct {
	// Filter selects the orders; nil selects all.
	Filter *Filter
	// Desc orders by deadline latest first; otherwise earliest first.
	Desc bool
	// PageSize is the most orders returned; it is more than zero.
	PageSize int
	// After is the position the page starts after; nil for the start.
	After *Key
	// Budget is the most orders examined (read from an index); 0 for
	// DefaultBudget. It is at least PageSize.
	Budget int
}

// Page is a page of orders.
type Page struct {
	Orders []order.Order
	// Next is the position after the page, nil when no order follows.
	Next *Key
}

// Key is the position of an order in a listing: its deadline (unix ms),
// then its id, in byte order.
type Key struct {
	Deadline int64
	ID       string
}

// KeyOf returns the position of o.
func KeyOf(o *order.Order) Key { return Key{Deadline: o.Deadline.UnixMilli(), ID: o.ID} }

// Less reports whether k comes before l in ascending order.
func (k Key) Less(l Key) bool {
	return k.Deadline < l.Deadline || (k.Deadline == l.Deadline && k.ID < l.ID)
}

// Before reports whether k comes before l in the order of q.
func (q Query) Before(k, l Key) bool {
	if q.Desc {
		return l.Less(k)
	}
	return k.Less(l)
}

// Budgeted returns q.Budget, or DefaultBudget for none, and never less than
// the page.
func (q Query) Budgeted() int {
	b := q.Budget
	if b <= 0 {
		b = DefaultBudget
	}
	return max(b, q.PageSize)
}

// ParseOrderBy reads the order_by of ListOrders (AIP-132): "deadline" or
// empty for earliest first, "deadline desc" for latest first, and
// "deadline asc" too.
func ParseOrderBy(s string) (desc bool, err error) {
	f := strings.Fields(s)
	switch {
	case len(f) == 0:
		return false, nil
	case f[0] == FieldDeadline && len(f) == 1:
		return false, nil
	case f[0] == FieldDeadline && len(f) == 2 && (f[1] == "asc" || f[1] == "desc"):
		return f[1] == "desc", nil
	}
	return false, order.Fail(order.ReasonInvalidArgument, "order_by", "order_by %q is not supported: give \"deadline\" (the default, earliest first) or \"deadline desc\"", order.Clip(s))
}

// TokenLifetime is how long a page token is accepted after it was made.
const TokenLifetime = 24 * time.Hour

// A page token is, in URL-safe base64: a version byte, the time it was
// made (unix ms, 8 bytes), the deadline and the id of the key, and the
// first 12 bytes of the SHA-256 of all that and of the listing it belongs
// to (the filter's text and the order). The digest binds the token to its
// listing and finds a damaged or edited token; it is not a secret, and a
// made-up token can only name a position in a listing the caller may read.
const tokenVersion = 1

func tokenDigest(body []byte, f *Filter, desc bool) []byte {
	h := sha256.New()
	h.Write(body)
	text := ""
	if f != nil {
		text = f.Text
	}
	h.Write([]byte(text))
	if desc {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
	return h.Sum(nil)[:12]
}

// EncodeToken returns the page token of the position k in the listing of f
// in the given order, made at now.
func EncodeToken(k Key, f *Filter, desc bool, now time.Time) string {
	b := make([]byte, 0, 1+8+8+len(k.ID)+12)
	b = append(b, tokenVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(now.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(k.Deadline))
	b = append(b, k.ID...)
	b = append(b, tokenDigest(b, f, desc)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeToken reads a page token made by EncodeToken for the listing of f
// in the given order. KindInvalid when it is damaged, made for another
// listing, or older than TokenLifetime at now.
func DecodeToken(s string, f *Filter, desc bool, now time.Time) (Key, error) {
	bad := func(why string) error {
		return order.Fail(order.ReasonInvalidPageToken, "page_token", "page_token %q %s; pass the next_page_token of the page before, with the same filter and order_by, or none for the first page", order.Clip(s), why)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 1+8+8+12 || b[0] != tokenVersion {
		return Key{}, bad("is not a page token of ListOrders")
	}
	body, sum := b[:len(b)-12], b[len(b)-12:]
	if string(tokenDigest(body, f, desc)) != string(sum) {
		return Key{}, bad("belongs to another filter or order_by, or is damaged")
	}
	made := time.UnixMilli(int64(binary.BigEndian.Uint64(body[1:9])))
	if made.Sub(now) > time.Minute { // replicas' clocks may differ a little
		return Key{}, bad("is from the future, so not a page token of this service")
	}
	if now.Sub(made) > TokenLifetime {
		return Key{}, bad("has expired (page tokens last " + order.FormatDuration(TokenLifetime) + ")")
	}
	k := Key{Deadline: int64(binary.BigEndian.Uint64(body[9:17])), ID: string(body[17:])}
	if order.ValidateID("page_token", k.ID) != nil {
		return Key{}, bad("is not a page token of ListOrders")
	}
	return k, nil
}
