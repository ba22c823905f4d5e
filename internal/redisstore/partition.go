package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

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
}

func (p *partition) wakeUp() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// partitionOf returns the partition of an order id.
func partitionOf(id string, parts []*partition) *partition {
	return parts[order.PartitionOf(id, len(parts))]
}

// layout returns the store's partitions. The first successful call reads their number
// from Redis, recording the one asked for (Options.Partitions) if the store
// is new; it fails as Unavailable while Redis does not answer.
func (s *Store) layout(ctx context.Context) ([]*partition, error) {
	if p := s.parts.Load(); p != nil {
		return *p, nil
	}
	// Callers that come before the layout is known each read it: the reads
	// are safe to repeat, and no caller waits behind another's timeout.
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	// Read first, write only for a new store: Redis over its maxmemory
	// refuses a SETNX even of a key that exists, and a replica started
	// then must still come up and expire what is pending.
	v, err := s.rdb.Get(ctx, partitionsKey).Result()
	if errors.Is(err, redis.Nil) {
		if err := s.rdb.SetNX(ctx, partitionsKey, s.want, 0).Err(); err != nil {
			return nil, storeError(err)
		}
		v, err = s.rdb.Get(ctx, partitionsKey).Result()
	}
	if errors.Is(err, redis.Nil) {
		return nil, order.Unavailable(fmt.Errorf("%s vanished after it was set; retrying", partitionsKey))
	}
	if err != nil {
		return nil, storeError(err)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > order.MaxPartitions {
		return nil, s.corrupt(partitionsKey, fmt.Errorf("%q is not a number of partitions from 1 to %d", v, order.MaxPartitions))
	}
	if n != s.want {
		s.log.Warn("the store keeps the number of partitions recorded at its first start; the one asked for now is ignored",
			"partitions", n, "asked", s.want)
	}
	parts := make([]*partition, n)
	for i := range parts {
		parts[i] = &partition{index: i, keys: newKeys(i), wake: make(chan struct{}, 1)}
	}
	if s.cluster != nil {
		if err := s.clusterLayout(ctx, parts); err != nil {
			return nil, err
		}
	}
	if !s.parts.CompareAndSwap(nil, &parts) {
		return *s.parts.Load(), nil // another caller was quicker
	}
	return parts, nil
}
