package order

import "time"

// Stats are a store's counts of orders, for operators: what GetStats
// answers, besides what the service adds (the consumer groups, the
// replica's own figures).
type Stats struct {
	// Pending counts the orders pending now, due ones not yet expired
	// included.
	Pending int64
	// Expired, Completed and Cancelled count the orders closed so since
	// Since: every one, also those whose tombstones or events retention
	// has dropped since.
	Expired, Completed, Cancelled int64
	// Since is when the store's history, and so its counts, began; zero
	// when the store does not know.
	Since time.Time
	// Partitions are the store's partitions, by index.
	Partitions []PartitionStats
}

// PartitionStats is one partition of a store.
type PartitionStats struct {
	// Pending counts the partition's pending orders.
	Pending int64
	// NextDeadline is the earliest deadline of its pending orders; zero
	// when none is pending.
	NextDeadline time.Time
	// Events counts the expirations its log retains now.
	Events int64
}
