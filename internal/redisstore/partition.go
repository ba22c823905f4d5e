package redisstore

import (
	"context"
	"sync/atomic"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// partition is one share of the orders, with its own keys, deadline index,
// event log and sweeper. In Redis Cluster each partition lives in one slot,
// so on one master, and the partitions spread the orders over the masters.
type partition struct {
	index int
	keys  keys
	// slot is the partition's Redis Cluster slot; unused on one Redis.
	slot int

	// wake tells the partition's sweeper to look for due orders now.
	wake chan struct{}
	// nextSweep is when the sweeper plans to look next, in unix ms by
	// Redis's clock.
	nextSweep atomic.Int64
	// replicas is how many replicas the partition's master has, from the
	// cluster's last reported topology or, under Sentinel, the master's
	// last count; a write waits for one of them to have it (see
	// runDurable). Always 0 on one Redis without Sentinel.
	replicas atomic.Int32
	// master is the address of the cluster master that holds the
	// partition's slot, from the cluster's last reported topology; nil on
	// one Redis, and until the topology is known. The sweepers of a
	// master's partitions claim together (see claims.go).
	master atomic.Pointer[string]

	// checkouts, finishes and gets queue the partition's calls of each
	// batch script while one is in flight (see batch.go).
	checkouts, finishes, gets batcher
}

func (p *partition) wakeUp() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// orderPartition returns the partition of an order id.
func (s *Store) orderPartition(ctx context.Context, id string) (*partition, error) {
	parts, err := s.layout(ctx)
	if err != nil {
		return nil, err
	}
	return parts[order.PartitionOf(id, len(parts))], nil
}

// layout returns the store's partitions, unless the replica refuses every
// call because the store records another number of partitions (see
// epoch.go).
func (s *Store) layout(ctx context.Context) ([]*partition, error) {
	if err := s.fault.Load(); err != nil {
		return nil, err
	}
	return s.loadLayout(ctx)
}

// loadLayout returns the store's partitions. The first successful call reads
// their number and the store's epoch from Redis, recording the number asked
// for (Options.Partitions) and a new epoch if the store is new; it fails as
// Unavailable while Redis does not answer.
func (s *Store) loadLayout(ctx context.Context) ([]*partition, error) {
	if p := s.parts.Load(); p != nil {
		return *p, nil
	}
	// Callers that come before the layout is known each read it: the reads
	// are safe to repeat, and no caller waits behind another's timeout.
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	id, err := s.identify(ctx, "", s.want)
	if err != nil {
		return nil, err
	}
	n := id.partitions
	parts := make([]*partition, n)
	for i := range parts {
		parts[i] = &partition{index: i, keys: newKeys(i), wake: make(chan struct{}, 1)}
	}
	if s.cluster != nil {
		if err := s.clusterLayout(ctx, parts); err != nil {
			return nil, err
		}
	}
	// The epoch first: whoever sees the partitions finds it set.
	s.epoch.CompareAndSwap(nil, &id.epoch)
	if !s.parts.CompareAndSwap(nil, &parts) {
		return *s.parts.Load(), nil // another caller was quicker
	}
	// Said once, by the caller that set the layout, and only when a number
	// was asked for: the default asks for none.
	if s.asked != 0 && n != s.asked {
		s.log.Warn("the store keeps the number of partitions recorded at its first start; the one asked for now is ignored",
			"partitions", n, "asked", s.asked)
	}
	return parts, nil
}
