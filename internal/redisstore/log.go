package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Partitions returns the number of partitions of the expiration log.
func (s *Store) Partitions(ctx context.Context) (int, error) {
	parts, err := s.layout(ctx)
	return len(parts), err
}

// Events returns up to limit events of a partition after the cursor, in log
// order. When there are none and wait is positive, it blocks until one
// arrives or wait passes. In a Redis Cluster it reads a replica of the
// partition's master where there is one: an event is seen only once a
// replica has it, so that a failover, which may lose the master's last
// writes, can never take back an event that a watcher saw.
func (s *Store) Events(ctx context.Context, partition int, after order.Cursor, limit int, wait time.Duration) ([]order.Event, error) {
	p, err := s.partition(ctx, partition)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, max(wait, 0)+callTimeout)
	defer cancel()
	var msgs []redis.XMessage
	if wait > 0 {
		streams, err := s.rdb.XRead(ctx, &redis.XReadArgs{
			Streams: []string{p.keys.events, after.String()},
			Count:   int64(limit),
			Block:   wait,
		}).Result()
		if errors.Is(err, redis.Nil) {
			return nil, nil
		}
		if err != nil {
			return nil, storeError(err)
		}
		if len(streams) > 0 {
			msgs = streams[0].Messages
		}
	} else {
		var err error
		msgs, err = s.rdb.XRangeN(ctx, p.keys.events, "("+after.String(), "+", int64(limit)).Result()
		if err != nil {
			return nil, storeError(err)
		}
	}
	events := make([]order.Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := parseEvent(m)
		if err != nil {
			return nil, s.corrupt(p.keys.events, err, "entry", m.ID)
		}
		ev.Partition = partition
		events = append(events, ev)
	}
	return events, nil
}

// Tail returns the cursor of the last event in a partition's log, or the
// zero cursor when it is empty.
func (s *Store) Tail(ctx context.Context, partition int) (order.Cursor, error) {
	p, err := s.partition(ctx, partition)
	if err != nil {
		return order.Cursor{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	msgs, err := s.rdb.XRevRangeN(ctx, p.keys.events, "+", "-", 1).Result()
	if err != nil {
		return order.Cursor{}, storeError(err)
	}
	if len(msgs) == 0 {
		return order.Cursor{}, nil
	}
	c, err := parseStreamID(msgs[0].ID)
	if err != nil {
		return order.Cursor{}, s.corrupt(p.keys.events, err)
	}
	return c, nil
}

// CheckCursor says whether a watch can resume after each cursor without a
// gap; one read of Redis's clock serves them all.
func (s *Store) CheckCursor(ctx context.Context, cursors ...order.Cursor) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	now, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return storeError(err)
	}
	for _, c := range cursors {
		if err := order.CheckCursor(c, uint64(now.UnixMilli()), uint64(s.retention.Milliseconds())); err != nil {
			return err
		}
	}
	return nil
}

// partition returns partition i.
func (s *Store) partition(ctx context.Context, i int) (*partition, error) {
	parts, err := s.layout(ctx)
	if err != nil {
		return nil, err
	}
	if i < 0 || i >= len(parts) {
		return nil, fmt.Errorf("partition %d does not exist: the log has %d", i, len(parts))
	}
	return parts[i], nil
}
