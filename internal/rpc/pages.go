package rpc

import (
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// The pages of a list call: their size when the request leaves it out,
// and the most a request may ask for.
const (
	defaultPageSize = 50
	maxPageSize     = 1000
)

// pageSize checks a requested page size; 0 asks for def.
func pageSize(n int32, def int) (int, error) {
	switch {
	case n == 0:
		return def, nil
	case n < 0 || n > maxPageSize:
		return 0, order.Fail(order.ReasonInvalidArgument, "page_size", "page_size %d is out of range: give 1 to %d, or 0 for %d", n, maxPageSize, def)
	}
	return int(n), nil
}
