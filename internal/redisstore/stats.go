package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Stats returns the counts of orders, summed over the partitions, and each
// partition's pending orders, next deadline and retained events. One
// pipeline reads every partition and the epoch, whose since is when the
// counts began.
func (s *Store) Stats(ctx context.Context) (order.Stats, error) {
	parts, err := s.layout(ctx)
	if err != nil {
		return order.Stats{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	epoch := pipe.Get(ctx, epochKey)
	cmds := make([]*redis.Cmd, len(parts))
	for i, p := range parts {
		cmds[i] = queue(ctx, pipe, statsScript, []string{p.keys.deadlines, p.keys.events, p.keys.counts})
	}
	// Exec's error is each command's: they are read below.
	_, _ = pipe.Exec(ctx)
	st := order.Stats{Partitions: make([]order.PartitionStats, len(parts))}
	switch v, err := epoch.Result(); {
	case errors.Is(err, redis.Nil):
		// Redis was emptied: Ping records a new epoch, and the counts
		// start again with it.
	case err != nil:
		return order.Stats{}, storeError(err)
	default:
		e, err := parseEpoch(v)
		if err != nil {
			return order.Stats{}, s.corrupt(epochKey, err)
		}
		if e.since > 0 {
			st.Since = time.UnixMilli(int64(e.since))
		}
	}
	for i, c := range cmds {
		res, err := c.Int64Slice()
		if err != nil {
			return order.Stats{}, storeError(err)
		}
		if len(res) != 6 {
			return order.Stats{}, s.corrupt(parts[i].keys.counts, fmt.Errorf("stats script reply %v", res))
		}
		p := order.PartitionStats{Pending: res[0], Events: res[2]}
		if res[1] >= 0 {
			p.NextDeadline = time.UnixMilli(res[1])
		}
		st.Partitions[i] = p
		st.Pending += p.Pending
		st.Expired += res[3]
		st.Completed += res[4]
		st.Cancelled += res[5]
	}
	return st, nil
}
