package rpc

import (
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// GroupLimits bound what consumer groups may hold; past each, a call is
// RESOURCE_EXHAUSTED.
type GroupLimits struct {
	// MaxGroups bounds the groups in the store.
	MaxGroups int
	// MaxConsumers bounds the ConsumeExpirations streams of one group open
	// at once on this replica.
	MaxConsumers int
	// MaxInFlight bounds a stream's max_in_flight and a pull's max_events.
	MaxInFlight int
}

// DefaultGroupLimits are the limits when Options gives none.
var DefaultGroupLimits = GroupLimits{MaxGroups: 100, MaxConsumers: 100, MaxInFlight: 1000}

// defaultMaxInFlight is a stream's max_in_flight and a pull's max_events
// when the request leaves them out, within GroupLimits.MaxInFlight.
const defaultMaxInFlight = 100

// inFlightLimit checks a requested bound on unacknowledged deliveries.
func (s *Service) inFlightLimit(field string, n int32, def int) (int, error) {
	switch {
	case n == 0:
		return min(def, s.groupLimits.MaxInFlight), nil
	case n < 0:
		return 0, order.Fail(order.ReasonInvalidArgument, field, "%s %d must be more than zero, or 0 for %d", field, n, def)
	case int(n) > s.groupLimits.MaxInFlight:
		return 0, order.Fail(order.ReasonInFlightLimit, field, "%s %d is more than this service's limit of %d", field, n, s.groupLimits.MaxInFlight)
	}
	return int(n), nil
}
