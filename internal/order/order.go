// Package order holds the domain of the service: orders, their expiration
// events, the rules for valid input and the errors every layer shares. It
// knows nothing of gRPC, HTTP or Redis.
package order

import (
	"hash/fnv"
	"time"
)

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
	// Reschedules counts the times its deadline was changed.
	Reschedules int
	// AskedTTL and AskedAt are what the checkout that created a pending
	// order asked for: a ttl, or an absolute deadline. A repeated checkout
	// is the same request only when it asks for the same (see
	// CheckoutConflict). Both are zero for a closed order, and for one
	// created by a version that did not record them.
	AskedTTL time.Duration
	AskedAt  time.Time
}

// Reschedule asks for a pending order's new deadline: At, or TTL from the
// store's now when At is zero. The new deadline must be after now and at
// most MaxTTL from now. With Expected set, the order's deadline must be
// Expected, so that two callers cannot overwrite each other unseen.
type Reschedule struct {
	TTL      time.Duration
	At       time.Time
	Expected time.Time
	MaxTTL   time.Duration
}

// Event records that a pending order reached its deadline.
type Event struct {
	// Partition is the partition of the log the event belongs to; the
	// order's id decides it.
	Partition int
	// Offset is the event's position in its partition's log.
	Offset Offset
	// Cursor is where a watcher is in the whole log once it has this
	// event: what it passes to resume after it. The watch fan-out sets it;
	// stores leave it nil.
	Cursor    Cursor
	OrderID   string
	CreatedAt time.Time
	Deadline  time.Time
	ExpiredAt time.Time
	Metadata  map[string]string
}

// PartitionOf returns the partition of the log, and of the store, that an
// order belongs to, out of the given number: FNV-1a of its id modulo the
// number. A store never changes its number of partitions, so an order never
// moves.
func PartitionOf(id string, partitions int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(partitions))
}
