package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// statsScript reads a partition's counts at one instant. Nothing in it is
// counted for the purpose but the completed and cancelled orders (the
// counts hash, one HINCRBY in close): the pending orders are the deadline
// index, the expirations the events stream's entries-added, which counts
// every entry ever added, trimmed ones too.
//
// KEYS[1] -> the partition's deadlines zset
// KEYS[2] -> the partition's events stream
// KEYS[3] -> the partition's counts hash
//
// Returns {pending, next deadline in ms (-1 when none is pending), events
// retained, expirations ever logged, completed, cancelled}.
var statsScript = redis.NewScript(reading + `
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local nxt = -1
if #first > 0 then nxt = tonumber(first[2]) end
local events, added = 0, 0
if redis.call('EXISTS', KEYS[2]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[2])
  for i = 1, #info, 2 do
    if info[i] == 'length' then events = info[i + 1] end
    if info[i] == 'entries-added' then added = info[i + 1] end
  end
end
local c = redis.call('HMGET', KEYS[3], 'completed', 'cancelled')
return {redis.call('ZCARD', KEYS[1]), nxt, events, added, tonumber(c[1]) or 0, tonumber(c[2]) or 0}
`)

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
		cmds[i] = statsScript.Eval(ctx, pipe, []string{p.keys.deadlines, p.keys.events, p.keys.counts})
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
