package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/filter"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Bulk operations (order.Operation) are kept in Redis, so that any replica
// can finish one that another started, and one that a replica was working
// when it died is taken up by the next replica to look (within opLease):
//
//	oe:ops                  sorted set, operation id -> created (unix µs,
//	                        so that operations started in the same ms
//	                        are listed in the order they started)
//	oe:op:<id>              hash: spec (the operation as JSON), state,
//	                        created, updated, ended, error, owner and lease
//	                        (the replica working it, and until when), cancel
//	                        (asked to stop), and the final counts
//	oe:{p}:op:<id>          hash, per partition: the counts so far (matched,
//	                        changed, skipped, failed), the HSCAN cursor of
//	                        the partition's pending hash, scanned (1 once the
//	                        scan is through)
//	oe:{p}:op:<id>:todo     sorted set, per partition: the matched orders not
//	                        dealt with yet, id -> deadline when matched
//
// A partition is worked in two phases. The scan reads the pending orders a
// page at a time (HSCAN, never the whole hash at once), keeps those the
// filter matches in the todo set (a set, so that an order HSCAN returns
// twice counts once) and moves the cursor, in one script that checks that
// the cursor is still where the page began. The changes then take the todo
// set a chunk at a time: one script per chunk removes each order from the
// set in the same step as it changes it (or counts it skipped or failed),
// and counts it, so that an order is changed at most once however often a
// chunk is repeated, by a replica that died or by two replicas at once. The
// change is made only if the order's deadline is still the one it had when
// matched: an order changed meanwhile by someone else is matched again
// first. An order due by then is expired by the same script (the claim the
// sweeper would make), and counted skipped.

const (
	opsKey = "oe:ops"
	// opLease is how long a replica holds an operation without renewing
	// it; it renews it before each chunk.
	opLease = 3 * time.Second
	// opPoll is how often a replica looks for operations to work.
	opPoll = 500 * time.Millisecond
	// scanPage and changeChunk bound the orders one script reads or
	// changes, so that Redis is never held for long.
	scanPage    = 500
	changeChunk = 200
)

func opKey(id string) string { return "oe:op:" + id }

// opSpec is the operation as stored in the spec field.
type opSpec struct {
	Filter string `json:"filter"`
	Cancel bool   `json:"cancel,omitempty"`
	TTL    int64  `json:"ttl,omitempty"`
	At     int64  `json:"at,omitempty"`
	Shift  int64  `json:"shift,omitempty"`
	MaxTTL int64  `json:"max_ttl"`
	DryRun bool   `json:"dry_run,omitempty"`
}

func specOf(op order.Operation) opSpec {
	c := op.Change
	sp := opSpec{Filter: op.Filter, Cancel: c.Cancel, TTL: c.TTL.Milliseconds(), Shift: c.Shift.Milliseconds(), MaxTTL: c.MaxTTL.Milliseconds(), DryRun: op.DryRun}
	if !c.At.IsZero() {
		sp.At = c.At.UnixMilli()
	}
	return sp
}

func (sp opSpec) change() order.BulkChange {
	c := order.BulkChange{Cancel: sp.Cancel, TTL: time.Duration(sp.TTL) * time.Millisecond, Shift: time.Duration(sp.Shift) * time.Millisecond, MaxTTL: time.Duration(sp.MaxTTL) * time.Millisecond}
	if sp.At != 0 {
		c.At = time.UnixMilli(sp.At)
	}
	return c
}

// StartOperation records a bulk operation; Run works it, on this replica
// or another.
func (s *Store) StartOperation(ctx context.Context, op order.Operation) (order.Operation, error) {
	if _, err := filter.Parse(op.Filter); err != nil {
		return order.Operation{}, err
	}
	if _, err := s.layout(ctx); err != nil {
		return order.Operation{}, err
	}
	op.ID = randomID()
	spec, err := json.Marshal(specOf(op))
	if err != nil {
		return order.Operation{}, err
	}
	t, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return order.Operation{}, storeError(err)
	}
	now := time.UnixMilli(t.UnixMilli())
	ms := now.UnixMilli()
	if err := s.rdb.HSet(ctx, opKey(op.ID), "spec", string(spec), "state", order.OpRunning.String(), "created", ms, "updated", ms).Err(); err != nil {
		return order.Operation{}, storeError(err)
	}
	if err := s.rdb.ZAdd(ctx, opsKey, redis.Z{Score: float64(t.UnixMicro()), Member: op.ID}).Err(); err != nil {
		return order.Operation{}, storeError(err)
	}
	select {
	case s.opWake <- struct{}{}:
	default:
	}
	op.State, op.Created, op.Updated, op.Progress = order.OpRunning, now, now, order.Progress{}
	return op, nil
}

// GetOperation returns a bulk operation with its counts: the final ones
// once it ended, else the sum of its partitions' so far.
func (s *Store) GetOperation(ctx context.Context, id string) (order.Operation, error) {
	h, err := s.rdb.HGetAll(ctx, opKey(id)).Result()
	if err != nil {
		return order.Operation{}, storeError(err)
	}
	if len(h) == 0 {
		return order.Operation{}, order.OperationNotFound(id)
	}
	op, err := parseOp(id, h)
	if err != nil {
		return order.Operation{}, s.corrupt(opKey(id), err)
	}
	if op.State == order.OpRunning {
		parts, err := s.layout(ctx)
		if err != nil {
			return order.Operation{}, err
		}
		if op.Progress, err = s.opProgress(ctx, parts, id); err != nil {
			return order.Operation{}, err
		}
	}
	return op, nil
}

// parseOp reads an operation's hash.
func parseOp(id string, h map[string]string) (order.Operation, error) {
	var sp opSpec
	if err := json.Unmarshal([]byte(h["spec"]), &sp); err != nil {
		return order.Operation{}, fmt.Errorf("operation %q: malformed spec: %w", id, err)
	}
	op := order.Operation{ID: id, Filter: sp.Filter, Change: sp.change(), DryRun: sp.DryRun, State: order.ParseOpState(h["state"]), Error: h["error"]}
	if op.State == 0 {
		return order.Operation{}, fmt.Errorf("operation %q: unknown state %q", id, h["state"])
	}
	ms := func(k string) time.Time {
		v, _ := strconv.ParseInt(h[k], 10, 64)
		if v == 0 {
			return time.Time{}
		}
		return time.UnixMilli(v)
	}
	op.Created, op.Updated, op.Ended = ms("created"), ms("updated"), ms("ended")
	op.Progress = progressOf(h)
	return op, nil
}

func progressOf(h map[string]string) order.Progress {
	n := func(k string) int64 { v, _ := strconv.ParseInt(h[k], 10, 64); return v }
	return order.Progress{Matched: n("matched"), Changed: n("changed"), Skipped: n("skipped"), Failed: n("failed")}
}

// opProgress sums the counts of an operation's partitions, read in one
// pipeline (one per master on a cluster).
func (s *Store) opProgress(ctx context.Context, parts []*partition, id string) (order.Progress, error) {
	cmds := make([]*redis.MapStringStringCmd, len(parts))
	_, err := s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, p := range parts {
			cmds[i] = pipe.HGetAll(ctx, p.keys.prefix+"op:"+id)
		}
		return nil
	})
	if err != nil {
		return order.Progress{}, storeError(err)
	}
	var sum order.Progress
	for _, c := range cmds {
		sum.Add(progressOf(c.Val()))
	}
	return sum, nil
}

// ListOperations returns the operations, newest first.
func (s *Store) ListOperations(ctx context.Context) ([]order.Operation, error) {
	ids, err := s.rdb.ZRevRange(ctx, opsKey, 0, -1).Result()
	if err != nil {
		return nil, storeError(err)
	}
	out := make([]order.Operation, 0, len(ids))
	for _, id := range ids {
		op, err := s.GetOperation(ctx, id)
		if order.KindOf(err) == order.KindNotFound {
			continue // dropped by retention meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, op)
	}
	return out, nil
}

// cancelOpScript asks a running operation to stop; the replica working it
// stops before its next chunk and records it cancelled with its counts.
//
// KEYS[1] -> the operation's hash
//
// Returns 'missing', or the operation's state.
var cancelOpScript = redis.NewScript(freeing + `
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st == 'running' then redis.call('HSET', KEYS[1], 'cancel', '1') end
return st
`)

// CancelOperation asks a running operation to stop: it stops before its
// next chunk of orders (within a second or so, or within opLease when the
// replica working it died). An ended one is answered as it is.
func (s *Store) CancelOperation(ctx context.Context, id string) (order.Operation, error) {
	st, err := cancelOpScript.Run(ctx, s.rdb, []string{opKey(id)}).Text()
	if err != nil {
		return order.Operation{}, storeError(err)
	}
	if st == "missing" {
		return order.Operation{}, order.OperationNotFound(id)
	}
	select {
	case s.opWake <- struct{}{}:
	default:
	}
	return s.GetOperation(ctx, id)
}

// claimOpScript takes or renews the lease of a running operation.
//
// KEYS[1] -> the operation's hash
// ARGV[1] -> the replica's owner id, ARGV[2] -> the lease in ms
//
// Returns {'ok', spec} -> the replica holds the operation for the lease
// {'done'}   -> it ended (or is gone)
// {'cancel'} -> it was asked to stop: the replica is to end it
// {'busy'}   -> another replica holds it
var claimOpScript = redis.NewScript(freeing + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return {'done'} end
local owner = redis.call('HGET', KEYS[1], 'owner')
local lease = tonumber(redis.call('HGET', KEYS[1], 'lease') or '0')
if owner and owner ~= ARGV[1] and lease > now then return {'busy'} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease', now + tonumber(ARGV[2]), 'updated', now)
if redis.call('HGET', KEYS[1], 'cancel') == '1' then return {'cancel'} end
return {'ok', redis.call('HGET', KEYS[1], 'spec')}
`)

// endOpScript records the end of an operation, with its final counts,
// unless it ended already.
//
// KEYS[1] -> the operation's hash
// ARGV[1] -> state, ARGV[2] -> error, ARGV[3..6] -> matched, changed,
// skipped, failed
//
// Returns 1 when it recorded the end, 0 when the operation had ended.
var endOpScript = redis.NewScript(freeing + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'error', ARGV[2], 'matched', ARGV[3], 'changed', ARGV[4],
  'skipped', ARGV[5], 'failed', ARGV[6], 'ended', now, 'updated', now)
redis.call('HDEL', KEYS[1], 'owner', 'lease')
return 1
`)

// bulkScanScript reads a page of a partition's pending orders for an
// operation's scan, from where the scan is.
//
// KEYS, ARGV[1], ARGV[2]: see luaPrelude.
// ARGV[3] -> the operation id, ARGV[4] -> the page size (HSCAN's COUNT)
//
// Returns {'scanned'} once the scan is through, else {cursor, next cursor,
// id 1, record 1, ...}: the cursor the page began at and the one after it
// ('0': the last page), and the pending orders of the page that are not due.
var bulkScanScript = redis.NewScript(reading + luaPrelude + `
local opKey = prefix .. 'op:' .. ARGV[3]
if redis.call('HGET', opKey, 'scanned') == '1' then return {'scanned'} end
local cursor = redis.call('HGET', opKey, 'cursor') or '0'
local r = redis.call('HSCAN', KEYS[2], cursor, 'COUNT', tonumber(ARGV[4]))
local out = {cursor, r[1]}
local kv = r[2]
for i = 1, #kv, 2 do
  local d = redis.call('ZSCORE', KEYS[1], kv[i])
  if d and tonumber(d) > now then
    local created, meta, n, asked = splitPending(kv[i + 1])
    out[#out + 1] = kv[i]
    out[#out + 1] = record('pending', created, d, 0, meta, n, asked)
  end
end
return out
`)

// bulkMatchedScript keeps the matched orders of a scanned page in the todo
// set and moves the scan on, if the scan is still where the page began.
//
// KEYS, ARGV[1], ARGV[2]: see luaPrelude.
// ARGV[3] -> the operation id, ARGV[4] -> the cursor the page began at,
// ARGV[5] -> the next cursor ('0': the scan is through)
// ARGV[6], ARGV[7] -> a matched order: its id and deadline; and so on
//
// Returns {added}: how many orders it added (none when another replica
// moved the scan on first).
var bulkMatchedScript = redis.NewScript(growing + luaPrelude + `
local opKey = prefix .. 'op:' .. ARGV[3]
local todo = opKey .. ':todo'
if redis.call('HGET', opKey, 'scanned') == '1' then return {0} end
if (redis.call('HGET', opKey, 'cursor') or '0') ~= ARGV[4] then return {0} end
local added = 0
for i = 6, #ARGV, 2 do
  added = added + redis.call('ZADD', todo, 'NX', ARGV[i + 1], ARGV[i])
end
redis.call('HINCRBY', opKey, 'matched', added)
if ARGV[5] == '0' then
  redis.call('HSET', opKey, 'scanned', '1', 'cursor', '0')
else
  redis.call('HSET', opKey, 'cursor', ARGV[5])
end
return {added}
`)

// bulkChangeScript deals with a chunk of an operation's matched orders,
// each in one step with its removal from the todo set and its count.
//
// KEYS, ARGV[1], ARGV[2]: see luaPrelude.
// ARGV[3] -> the operation id
// ARGV[4] -> the change: 'cancel', 'ttl', 'at' or 'shift'; ARGV[5] its
// value in ms (a ttl, a unix ms deadline, a shift)
// ARGV[6] -> the maximum ttl in ms, ARGV[7] -> alarmGrace in ms
// ARGV[8], ARGV[9] -> an order: its id and the deadline it must still have
// to be changed, or '-' to drop it as skipped (it no longer matches); and
// so on
//
// Returns {now, expired here, caught up here, id 1, record 1, ...}: the
// orders whose deadline was not the one given, left in the todo set, with
// their records, to be matched again.
var bulkChangeScript = redis.NewScript(growing + luaPrelude + `
local opKey = prefix .. 'op:' .. ARGV[3]
local todo = opKey .. ':todo'
local mode, value = ARGV[4], tonumber(ARGV[5])
local maxTTL, grace = tonumber(ARGV[6]), tonumber(ARGV[7])
local changed, skipped, failed, expired, caught = 0, 0, 0, 0, 0
local moved = {}
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local soonest
for i = 8, #ARGV, 2 do
  local id, want = ARGV[i], ARGV[i + 1]
  if redis.call('ZSCORE', todo, id) then
    if want == '-' then
      redis.call('ZREM', todo, id)
      skipped = skipped + 1
    else
      expired_here, caught_here = 0, 0
      local state, rec = current(id)
      expired, caught = expired + expired_here, caught + caught_here
      if state ~= 'pending' then
        redis.call('ZREM', todo, id)
        skipped = skipped + 1
      else
        local d = tonumber(redis.call('ZSCORE', KEYS[1], id))
        if d ~= tonumber(want) then
          moved[#moved + 1] = id
          moved[#moved + 1] = rec
        elseif mode == 'cancel' then
          close(id, d, 'cancelled')
          redis.call('ZREM', todo, id)
          changed = changed + 1
        else
          local nd = value
          if mode == 'ttl' then nd = now + value elseif mode == 'shift' then nd = d + value end
          redis.call('ZREM', todo, id)
          if nd <= now or nd > now + maxTTL then
            failed = failed + 1
          else
            local created, meta, n, asked = pendingFields(id)
            redis.call('ZADD', KEYS[1], 'XX', nd, id)
            redis.call('HSET', KEYS[2], id, pendingValue(created, meta, n + 1, asked))
            if not soonest or nd < soonest then soonest = nd end
            changed = changed + 1
          end
        end
      end
    end
  end
end
if changed > 0 then redis.call('HINCRBY', opKey, 'changed', changed) end
if skipped > 0 then redis.call('HINCRBY', opKey, 'skipped', skipped) end
if failed > 0 then redis.call('HINCRBY', opKey, 'failed', failed) end
if soonest and (#first == 0 or soonest < tonumber(first[2])) then
  redis.call('PUBLISH', KEYS[4], soonest)
  alarm(soonest, grace)
end
local out = {now, expired, caught}
for _, v in ipairs(moved) do out[#out + 1] = v end
return out
`)

// runOperations works the bulk operations, one at a time, until ctx ends:
// those started here, and those whose replica died (their lease ran out).
func (s *Store) runOperations(ctx context.Context, parts []*partition) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-s.opWake:
		}
		if s.fault.Load() == nil {
			if err := s.workOperations(ctx, parts); err != nil && ctx.Err() == nil {
				s.log.Warn("bulk operations: cannot look for work; retrying", "err", err)
			}
		}
		timer.Reset(opPoll)
	}
}

// workOperations works each running operation this replica can claim.
func (s *Store) workOperations(ctx context.Context, parts []*partition) error {
	ids, err := s.rdb.ZRange(ctx, opsKey, 0, -1).Result()
	if err != nil {
		return err
	}
	// Every operation's state in one pipeline: this runs every opPoll,
	// and the ended ones stay for the retention period.
	cmds := make([]*redis.SliceCmd, len(ids))
	if _, err := s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = pipe.HMGet(ctx, opKey(id), "state", "ended")
		}
		return nil
	}); err != nil {
		return err
	}
	now := time.Now()
	for i, id := range ids {
		if ctx.Err() != nil {
			return nil
		}
		h := cmds[i].Val()
		if h[0] == nil {
			s.rdb.ZRem(ctx, opsKey, id)
			continue
		}
		if st, _ := h[0].(string); st != order.OpRunning.String() {
			// An ended operation is kept for the retention period.
			ended, _ := strconv.ParseInt(fmt.Sprint(h[1]), 10, 64)
			if now.Sub(time.UnixMilli(ended)) > s.retention {
				s.rdb.Del(ctx, opKey(id))
				s.rdb.ZRem(ctx, opsKey, id)
			}
			continue
		}
		if err := s.workOperation(ctx, parts, id); err != nil && ctx.Err() == nil {
			s.log.Warn("bulk operation: stopped; it is taken up again", "operation", id, "err", err)
		}
	}
	return nil
}

// errLostLease stops a replica's work on an operation that another replica
// took over, or that ended.
var errLostLease = errors.New("the operation's lease is held by another replica, or it ended")

// claim takes or renews the lease of operation id; it returns its spec,
// and whether it was asked to stop.
func (s *Store) claim(ctx context.Context, id string) (opSpec, bool, error) {
	res, err := claimOpScript.Run(ctx, s.rdb, []string{opKey(id)}, s.owner, opLease.Milliseconds()).Slice()
	if err != nil {
		return opSpec{}, false, storeError(err)
	}
	switch res[0] {
	case "ok":
		var sp opSpec
		spec, _ := res[1].(string)
		if err := json.Unmarshal([]byte(spec), &sp); err != nil {
			return opSpec{}, false, s.corrupt(opKey(id), err)
		}
		return sp, false, nil
	case "cancel":
		return opSpec{}, true, nil
	}
	return opSpec{}, false, errLostLease
}

// workOperation works operation id to its end, while this replica holds it.
func (s *Store) workOperation(ctx context.Context, parts []*partition, id string) error {
	sp, cancel, err := s.claim(ctx, id)
	if errors.Is(err, errLostLease) {
		return nil
	}
	if err != nil {
		return err
	}
	end := func(st order.OpState, msg string) error {
		sum, err := s.opProgress(ctx, parts, id)
		if err != nil {
			return err
		}
		if err := endOpScript.Run(ctx, s.rdb, []string{opKey(id)}, st.String(), msg, sum.Matched, sum.Changed, sum.Skipped, sum.Failed).Err(); err != nil {
			return storeError(err)
		}
		// Its partitions' counts and todo sets, in one pipeline: what a
		// failure leaves, nothing reads again.
		_, _ = s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, p := range parts {
				pipe.Del(ctx, p.keys.prefix+"op:"+id, p.keys.prefix+"op:"+id+":todo")
			}
			return nil
		})
		s.log.Info("bulk operation ended", "operation", id, "state", st, "matched", sum.Matched, "changed", sum.Changed, "skipped", sum.Skipped, "failed", sum.Failed)
		return nil
	}
	if cancel {
		return end(order.OpCancelled, "")
	}
	f, err := filter.Parse(sp.Filter)
	if err != nil {
		return end(order.OpFailed, err.Error())
	}
	// renew holds the lease before each page or chunk; a cancelled
	// operation ends there.
	renew := func() error {
		_, stop, err := s.claim(ctx, id)
		if err == nil && stop {
			if err := end(order.OpCancelled, ""); err != nil {
				return err
			}
			return errStopped
		}
		return err
	}
	err = s.eachChunk(parts, renew, func(p *partition) (bool, error) {
		through, err := s.scanPage(ctx, p, id, f)
		return !through, err
	})
	if err != nil || sp.DryRun {
		return stopped(err, func() error { return end(order.OpSucceeded, "") })
	}
	err = s.eachChunk(parts, renew, func(p *partition) (bool, error) { return s.changeChunk(ctx, p, id, sp, f) })
	return stopped(err, func() error { return end(order.OpSucceeded, "") })
}

// errStopped ends the work on an operation that was cancelled (and is
// recorded so).
var errStopped = errors.New("the operation was cancelled")

// stopped returns nil for an operation that stopped because it was
// cancelled or taken over, err for another failure, and else what done
// returns.
func stopped(err error, done func() error) error {
	switch {
	case errors.Is(err, errStopped), errors.Is(err, errLostLease):
		return nil
	case err != nil:
		return err
	}
	return done()
}

// eachChunk calls step for each partition until it reports nothing more to
// do, renewing the lease before each call.
func (s *Store) eachChunk(parts []*partition, renew func() error, step func(*partition) (bool, error)) error {
	for _, p := range parts {
		for {
			if err := renew(); err != nil {
				return err
			}
			more, err := step(p)
			if err != nil {
				return err
			}
			if !more {
				break
			}
		}
	}
	return nil
}

// scanPage scans one page of partition p for operation id, and reports
// whether the scan is through.
func (s *Store) scanPage(ctx context.Context, p *partition, id string, f *filter.Filter) (bool, error) {
	res, err := s.run(ctx, p, bulkScanScript, id, scanPage)
	if err != nil {
		return false, err
	}
	if len(res) == 1 {
		return true, nil
	}
	from, _ := res[0].(string)
	next, _ := res[1].(string)
	args := []any{id, from, next}
	err = s.matchRecords(p, res, 2, f, func(oid string, d int64, match bool) {
		if match {
			args = append(args, oid, d)
		}
	})
	if err != nil {
		return false, err
	}
	if _, err := s.run(ctx, p, bulkMatchedScript, args...); err != nil {
		return false, err
	}
	return next == "0", nil
}

// changeChunk deals with a chunk of partition p's matched orders for
// operation id, and reports whether any are left.
func (s *Store) changeChunk(ctx context.Context, p *partition, id string, sp opSpec, f *filter.Filter) (bool, error) {
	todo := p.keys.prefix + "op:" + id + ":todo"
	zs, err := s.rdb.ZRangeWithScores(ctx, todo, 0, changeChunk-1).Result()
	if err != nil {
		return false, storeError(err)
	}
	if len(zs) == 0 {
		return false, nil
	}
	mode, value := "ttl", sp.TTL
	switch {
	case sp.Cancel:
		mode, value = "cancel", 0
	case sp.At != 0:
		mode, value = "at", sp.At
	case sp.Shift != 0:
		mode, value = "shift", sp.Shift
	}
	fixed := []any{id, mode, value, sp.MaxTTL, alarmGrace.Milliseconds()}
	pairs := make([]any, 0, 2*len(zs))
	for _, z := range zs {
		pairs = append(pairs, z.Member, int64(z.Score))
	}
	// Orders changed by someone else since they matched are matched
	// again, and go round once more with their new deadline.
	for len(pairs) > 0 {
		res, err := s.runDurable(ctx, p, bulkChangeScript, append(fixed, pairs...)...)
		if err != nil {
			return false, err
		}
		if len(res) < 3 {
			return false, fmt.Errorf("redis: bulk change reply has %d elements", len(res))
		}
		s.expiredByCall(res[1], res[2])
		pairs = pairs[:0]
		err = s.matchRecords(p, res, 3, f, func(oid string, d int64, match bool) {
			if match {
				pairs = append(pairs, oid, d)
			} else {
				pairs = append(pairs, oid, "-")
			}
		})
		if err != nil {
			return false, err
		}
	}
	return true, nil
}

// randomID returns 64 random bits in hex: an operation's id, and the name
// of this replica as a lease holder.
func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// matchRecords reads the pending orders of partition p in a script's reply,
// pairs of id and record from index from on, and calls each with an
// order's id, deadline (unix ms) and whether the filter matches it.
func (s *Store) matchRecords(p *partition, res []any, from int, f *filter.Filter, each func(id string, deadline int64, match bool)) error {
	for i := from; i+1 < len(res); i += 2 {
		oid, _ := res[i].(string)
		rec, _ := res[i+1].(string)
		o, err := s.parseOrder(p, oid, "pending", rec, 0)
		if err != nil {
			return err
		}
		each(oid, o.Deadline.UnixMilli(), f.Match(&o))
	}
	return nil
}
