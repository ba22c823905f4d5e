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

// Events returns up to limit events of a partition after the offset, in log
// order. When there are none and wait is positive, it blocks until one
// arrives or wait passes. In a Redis Cluster it reads a replica of the
// partition's master where there is one: an event is seen only once a
// replica has it, so that a failover, which may lose the master's last
// writes, can never take back an event that a watcher saw.
func (s *Store) Events(ctx context.Context, partition int, after order.Offset, limit int, wait time.Duration) ([]order.Event, error) {
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

// Tail returns the offset of the last event in a partition's log, or the
// zero offset when it is empty.
func (s *Store) Tail(ctx context.Context, partition int) (order.Offset, error) {
	p, err := s.partition(ctx, partition)
	if err != nil {
		return order.Offset{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	msgs, err := s.rdb.XRevRangeN(ctx, p.keys.events, "+", "-", 1).Result()
	if err != nil {
		return order.Offset{}, storeError(err)
	}
	if len(msgs) == 0 {
		return order.Offset{}, nil
	}
	c, err := parseStreamID(msgs[0].ID)
	if err != nil {
		return order.Offset{}, s.corrupt(p.keys.events, err)
	}
	return c, nil
}

// CheckCursor says whether a watch can resume after a cursor, given as its
// offsets, each of its partition, without a gap: it refuses, as OutOfRange,
// an offset older than the retention or ahead of Redis's clock
// (order.CheckOffset), one from before the history of the store began (it
// was emptied since: the events after it are gone; see epoch.go), and one
// beyond the last event its partition ever logged, which cannot come from
// this history. One pipeline reads the clock, the epoch and every
// partition's last event id: one round trip per call (per master of a
// cluster, in parallel).
func (s *Store) CheckCursor(ctx context.Context, offsets ...order.Offset) error {
	parts, err := s.layout(ctx)
	if err != nil {
		return err
	}
	if len(offsets) != len(parts) {
		// The hub checks a watch position's length before.
		return fmt.Errorf("redisstore: CheckCursor takes one cursor per partition: got %d, the log has %d", len(offsets), len(parts))
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	clock := queue(ctx, pipe, clockScript, []string{epochKey})
	last := make([]*redis.Cmd, len(parts))
	for i, c := range offsets {
		if !c.IsZero() {
			last[i] = queue(ctx, pipe, lastIDScript, []string{parts[i].keys.events})
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return storeError(err)
	}
	res, err := clock.Slice()
	if err != nil || len(res) != 2 {
		return fmt.Errorf("redis: clock script reply %v, %v; want {now, epoch}", res, err)
	}
	now, _ := res[0].(int64)
	var since uint64
	emptied := res[1] == nil
	if !emptied {
		e, err := parseEpoch(fmt.Sprint(res[1]))
		if err != nil {
			return s.corrupt(epochKey, err)
		}
		since = e.since
	}
	for i, c := range offsets {
		if c.IsZero() {
			continue
		}
		if err := order.CheckOffset(c, uint64(now), uint64(s.retention.Milliseconds())); err != nil {
			return err
		}
		if emptied {
			return order.Fail(order.ReasonCursorExpired, "", "cursor %s is from a history of the expiration log that is lost: the order store was emptied (it has no epoch); start again without a cursor", c)
		}
		if c.Ms < since {
			return order.Fail(order.ReasonCursorExpired, "", "cursor %s is from before the order store was emptied and started again, at %s: the events after it are lost; start again without a cursor",
				c, order.FormatTime(time.UnixMilli(int64(since))))
		}
		v, err := last[i].Text()
		if err != nil {
			return storeError(err)
		}
		tail, err := parseStreamID(v)
		if err != nil {
			return s.corrupt(parts[i].keys.events, err)
		}
		if tail.Less(c) {
			return order.Fail(order.ReasonCursorUnknown, "", "cursor %s is beyond the last event of partition %d of the expiration log (%s): it does not come from this log's history; start again without a cursor", c, i, tail)
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
