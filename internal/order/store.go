package order

import (
	"context"
	"time"
)

// Store is the contract every order store keeps: the Redis store (one Redis
// or a Cluster) and the memory store. The conformance suite in
// internal/storetest holds both to it. Its users declare the smaller subsets
// they need (rpc.Store, watch.Log).
//
// Every error a method returns is an *Error whose Kind says what the caller
// can do: KindUnavailable when the store cannot be reached (retrying may
// work), KindInternal for a fault of the store itself, such as data it
// cannot read back, and the kinds each method names below.
type Store interface {
	GroupStore
	BulkStore

	// Checkout creates a pending order that expires after ttl, or returns
	// the order already pending under id with created false (its ttl and
	// metadata unchanged) when it was created by the same request: the same
	// metadata and the same ttl. Otherwise, when the pending order was asked
	// with other metadata or another ttl or deadline, it is
	// KindAlreadyExists (see CheckoutConflict) and nothing changes. A
	// checkout of an id whose order is closed starts a new order under that
	// id. The caller has validated id, ttl and md.
	Checkout(ctx context.Context, id string, ttl time.Duration, md map[string]string) (o Order, created bool, err error)
	// BatchCheckout checks out each item as Checkout does, and answers each
	// on its own, in the order of items: one item's error does not stop the
	// others. Items with the same id are checked out in turn, so the first
	// creates the order and the others find it pending. The caller has
	// validated the items, and gives at most MaxBatchCheckout of them.
	BatchCheckout(ctx context.Context, items []CheckoutItem) []CheckoutResult
	// Get returns an order, pending or closed; KindNotFound when there is
	// none, or it closed longer ago than retention. An order past its
	// deadline is expired by this call if nothing expired it yet, so that
	// the deadline is the truth whoever looks first.
	Get(ctx context.Context, id string) (Order, error)
	// Complete marks a pending order before its deadline as paid; a closed
	// or due order is KindFailedPrecondition, an unknown one KindNotFound.
	Complete(ctx context.Context, id string) (Order, error)
	// Cancel withdraws a pending order before its deadline, with the same
	// errors as Complete.
	Cancel(ctx context.Context, id string) (Order, error)
	// Reschedule gives a pending order before its deadline a new one, in
	// one step against its expiry and every other change: the order
	// expires at the new deadline, never the old. A closed or due order is
	// KindFailedPrecondition, an unknown one KindNotFound, an Expected
	// deadline that is not the order's KindAborted, a new deadline not
	// after now or past MaxTTL KindInvalid.
	Reschedule(ctx context.Context, id string, r Reschedule) (Order, error)

	// Partitions returns the number of partitions of the expiration log;
	// it never changes for a store.
	Partitions(ctx context.Context) (int, error)
	// Events returns up to limit events of a partition after the offset,
	// in log order; when there are none and wait is positive, it blocks for
	// up to wait. Each expiration appears in exactly one partition's log,
	// exactly once.
	Events(ctx context.Context, partition int, after Offset, limit int, wait time.Duration) ([]Event, error)
	// Tail returns the offset of a partition's last event, or the zero
	// offset when its log is empty.
	Tail(ctx context.Context, partition int) (Offset, error)
	// CheckCursor says whether a watch can resume after a cursor, given as
	// its offsets, one per partition, without a gap: KindOutOfRange for an
	// offset older than what the log retains.
	CheckCursor(ctx context.Context, offsets ...Offset) error

	// Stats returns the counts of orders by status, summed over the
	// partitions, and each partition's pending orders, next deadline and
	// retained events. Each partition is read at one instant, but not all
	// of them at the same one.
	Stats(ctx context.Context) (Stats, error)

	// Ping says whether the store can serve; its error is the reason it
	// cannot.
	Ping(ctx context.Context) error
	// Run does the store's background work, expiring orders at their
	// deadline and dropping what retention no longer keeps, until ctx ends.
	Run(ctx context.Context) error
}

// MaxBatchCheckout is the most items one BatchCheckout takes.
const MaxBatchCheckout = 1000

// CheckoutItem is one order of a BatchCheckout: the arguments of a Checkout.
// With At set, the order's deadline is At (to the millisecond) and TTL is
// ignored; At must then be after the store's now and at most MaxTTL from it,
// else the item fails KindInvalid.
type CheckoutItem struct {
	ID       string
	TTL      time.Duration
	At       time.Time
	MaxTTL   time.Duration
	Metadata map[string]string
}

// CheckoutResult answers one item of a BatchCheckout as Checkout would: the
// order and whether it was created, or the item's error.
type CheckoutResult struct {
	Order   Order
	Created bool
	Err     error
}

// BulkStore keeps bulk operations (see Operation) and works them to their
// end in Run: the operation and its progress are in the store, so that
// whichever replica runs them finishes them.
type BulkStore interface {
	// StartOperation records a new operation (the store sets its ID, State,
	// Created and Updated) and returns it; Run works it. A filter that
	// does not parse is KindInvalid. The caller has validated the change.
	StartOperation(ctx context.Context, op Operation) (Operation, error)
	// GetOperation returns an operation with its progress; KindNotFound for
	// an unknown id, or one that ended longer ago than retention.
	GetOperation(ctx context.Context, id string) (Operation, error)
	// ListOperations returns the operations, newest first.
	ListOperations(ctx context.Context) ([]Operation, error)
	// CancelOperation asks a running operation to stop, and returns it.
	CancelOperation(ctx context.Context, id string) (Operation, error)
}
