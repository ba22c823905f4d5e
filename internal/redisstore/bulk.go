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
	// The operation, then, once it is there, its place in the list: two
	// writes that the strict mode confirms each (see durably), since on a
	// cluster their keys may be on two masters.
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var hset, zadd *redis.IntCmd
	if err := s.durablyOn(cctx, []string{opKey(op.ID)}, func(pipe durablePipe, _ int) {
		hset = pipe.HSet(cctx, opKey(op.ID), "spec", string(spec), "state", order.OpRunning.String(), "created", ms, "updated", ms)
	}); err != nil {
		return order.Operation{}, err
	}
	if err := hset.Err(); err != nil {
		return order.Operation{}, storeError(err)
	}
	if err := s.durablyOn(cctx, []string{opsKey}, func(pipe durablePipe, _ int) {
		zadd = pipe.ZAdd(cctx, opsKey, redis.Z{Score: float64(t.UnixMicro()), Member: op.ID})
	}); err != nil {
		return order.Operation{}, err
	}
	if err := zadd.Err(); err != nil {
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

// CancelOperation asks a running operation to stop: it stops before its
// next chunk of orders (within a second or so, or within opLease when the
// replica working it died). An ended one is answered as it is.
func (s *Store) CancelOperation(ctx context.Context, id string) (order.Operation, error) {
	cmd, err := s.runKeys(ctx, cancelOpScript, []string{opKey(id)})
	if err != nil {
		return order.Operation{}, err
	}
	st, err := cmd.Text()
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
	cmd, _ := s.runKeys(ctx, claimOpScript, []string{opKey(id)}, s.owner, opLease.Milliseconds())
	res, err := cmd.Slice()
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
		if cmd, _ := s.runKeys(ctx, endOpScript, []string{opKey(id)}, st.String(), msg, sum.Matched, sum.Changed, sum.Skipped, sum.Failed); cmd.Err() != nil {
			err := cmd.Err()
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
		res, err := s.run(ctx, p, bulkChangeScript, append(fixed, pairs...)...)
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
