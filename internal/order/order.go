// Package order holds the domain of the service: orders, their expiration
// events, the rules for valid input and the errors every layer shares. It
// knows nothing of gRPC, HTTP or Redis.
package order

import "time"

// Status is where an order is in its life.
type Status int

// The states of an order. Pending is the only open one; the others are final
// and exclusive: for every order exactly one of them happens.
const (
	StatusUnknown Status = iota
	StatusPending
	StatusExpired
	StatusCompleted
	StatusCancelled
)

var statusNames = [...]string{"unknown", "pending", "expired", "completed", "cancelled"}

// String returns the lower-case name used in storage and messages.
func (s Status) String() string {
	if s < 0 || int(s) >= len(statusNames) {
		return "unknown"
	}
	return statusNames[s]
}

// ParseStatus is the inverse of String; it returns StatusUnknown for anything
// else.
func ParseStatus(s string) Status {
	for i, n := range statusNames {
		if n == s {
			return Status(i)
		}
	}
	return StatusUnknown
}

// Order is one checkout and its outcome.
type Order struct {
	ID        string
	Status    Status
	CreatedAt time.Time
	Deadline  time.Time
	// TTLRemaining is the time left until the deadline, read from the store's
	// clock; zero unless the order is pending.
	TTLRemaining time.Duration
	// ClosedAt is when the order left the pending state; zero while pending.
	ClosedAt time.Time
	Metadata map[string]string
}

// Event records that a pending order reached its deadline.
type Event struct {
	// Cursor is the event's position in the expiration log.
	Cursor    Cursor
	OrderID   string
	CreatedAt time.Time
	Deadline  time.Time
	ExpiredAt time.Time
	Metadata  map[string]string
}
