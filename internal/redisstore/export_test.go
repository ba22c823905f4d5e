package redisstore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/filter"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// MaxSweepSleep is the longest the sweeper sleeps when nothing wakes it.
const MaxSweepSleep = maxSweepSleep

// AlarmGrace is how long after a partition's earliest deadline its alarm
// goes off when no sweep set it again.
const AlarmGrace = alarmGrace

// SweepBatch is how many due orders one sweeper script call expires.
const SweepBatch = sweepBatch

// CheckoutUnannounced creates a pending order as Checkout does, but wakes no
// sweeper: the script's wake-up goes to a channel nobody listens to, as if it
// had been lost. It runs the script with EVAL, so that the sweeper's calls are
// the only EVALSHA calls Redis counts.
func (s *Store) CheckoutUnannounced(ctx context.Context, id string, ttl time.Duration) error {
	p, err := s.orderPartition(ctx, id)
	if err != nil {
		return err
	}
	keys := p.keys.scriptKeys()
	keys[3] = p.keys.prefix + "nobody-listens"
	return checkoutScript.lua.Eval(ctx, s.rdb, keys, s.args(p, alarmGrace.Milliseconds(), id, "t"+strconv.FormatInt(ttl.Milliseconds(), 10), 0, "")...).Err()
}

// ExpireDue runs the sweepers' pass once: it expires every order due now.
func (s *Store) ExpireDue(ctx context.Context) error {
	parts, err := s.layout(ctx)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := s.expireDue(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// CheckoutMany creates pending orders as Checkout does, in one pipeline, so
// that a benchmark can load many quickly.
func (s *Store) CheckoutMany(ctx context.Context, ids []string, ttl time.Duration, meta string) error {
	if err := checkoutScript.lua.Load(ctx, s.rdb).Err(); err != nil {
		return err
	}
	parts, err := s.layout(ctx)
	if err != nil {
		return err
	}
	// Pipelines of a thousand: one of all would have to be written within
	// the client's write timeout.
	for chunk := range slices.Chunk(ids, 1000) {
		pipe := s.rdb.Pipeline()
		for _, id := range chunk {
			p := parts[order.PartitionOf(id, len(parts))]
			checkoutScript.lua.EvalSha(ctx, pipe, p.keys.scriptKeys(), s.args(p, alarmGrace.Milliseconds(), id, "t"+strconv.FormatInt(ttl.Milliseconds(), 10), 0, meta)...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// MakeDue moves the deadline of every pending order to a millisecond before
// now by Redis's clock, leaving their ttl keys as they are: the orders are
// due, and Redis has not expired their ttl keys yet.
func (s *Store) MakeDue(ctx context.Context) error {
	parts, err := s.layout(ctx)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := s.rdb.Eval(ctx, `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for i = 1, #ids do redis.call('ZADD', KEYS[1], now - 1, ids[i]) end
return #ids
`, []string{p.keys.deadlines}).Err(); err != nil {
			return err
		}
	}
	return nil
}

// Masters returns how many masters the subscriber listens to.
func (s *Store) Masters() int { return int(s.masters.Load()) }

// Replicas returns how many replicas each partition's master has, as the
// store last read the cluster's topology.
func (s *Store) Replicas(ctx context.Context) ([]int, error) {
	parts, err := s.layout(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]int, len(parts))
	for i, p := range parts {
		out[i] = int(p.replicas.Load())
	}
	return out, nil
}

// LogAsGoRedis logs msg as go-redis does, through the logger the stores
// give it.
func LogAsGoRedis(ctx context.Context, msg string) { goRedisLog{}.Printf(ctx, "%s", msg) }

// SetPolicyEvery makes Ping read the eviction policy every d while it is
// safe, until the test ends.
func SetPolicyEvery(t testing.TB, d time.Duration) {
	prev := policyEvery
	policyEvery = d
	t.Cleanup(func() { policyEvery = prev })
}

// WorkOperationSplit works operation id as a replica would, but in two
// halves: every partition's scan, then between, then every partition's
// changes; it does not end the operation. The store's Run must not be
// running, so that nothing else works it.
func (s *Store) WorkOperationSplit(ctx context.Context, id string, between func()) (order.Progress, error) {
	parts, err := s.layout(ctx)
	if err != nil {
		return order.Progress{}, err
	}
	sp, _, err := s.claim(ctx, id)
	if err != nil {
		return order.Progress{}, err
	}
	f, err := filter.Parse(sp.Filter)
	if err != nil {
		return order.Progress{}, err
	}
	renew := func() error { return nil }
	if err := s.eachChunk(parts, renew, func(p *partition) (bool, error) {
		through, err := s.scanPage(ctx, p, id, f)
		return !through, err
	}); err != nil {
		return order.Progress{}, err
	}
	between()
	if err := s.eachChunk(parts, renew, func(p *partition) (bool, error) { return s.changeChunk(ctx, p, id, sp, f) }); err != nil {
		return order.Progress{}, err
	}
	return s.opProgress(ctx, parts, id)
}

// ScriptOf names the script whose SHA1 is sha, and says whether it writes
// and whether the strict mode confirms its writes.
func ScriptOf(sha string) (name string, writes, confirmed, ok bool) {
	for _, sc := range scripts {
		if sc.lua.Hash() == sha {
			return sc.name, sc.writes, sc.confirmed(), true
		}
	}
	return "", false, false, false
}

// ConfirmedScripts names the scripts whose writes the strict mode confirms.
func ConfirmedScripts() []string {
	var out []string
	for _, sc := range scripts {
		if sc.confirmed() {
			out = append(out, sc.name)
		}
	}
	return out
}

// partitionsOf returns the partitions numbered in idx, with each one's
// master as the cluster reports it now.
func (s *Store) partitionsOf(ctx context.Context, idx []int) ([]*partition, error) {
	parts, err := s.layout(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := s.topology(ctx, parts); err != nil {
		return nil, err
	}
	ps := make([]*partition, len(idx))
	for i, n := range idx {
		ps[i] = parts[n]
	}
	return ps, nil
}

// ExpireMany runs expire_many.lua once over the partitions numbered in idx
// (the first one's keys declared) and returns how many orders it expired
// in each, -1 for one it left out.
func (s *Store) ExpireMany(ctx context.Context, idx ...int) ([]int64, error) {
	ps, err := s.partitionsOf(ctx, idx)
	if err != nil {
		return nil, err
	}
	calls, err := s.expireMany(ctx, ps)
	if err != nil {
		return nil, err
	}
	ns := make([]int64, len(calls))
	for i, c := range calls {
		ns[i] = c.n
	}
	return ns, nil
}

// ClaimQueued has one sweeper's claim of each partition numbered in idx
// wait in the queue of the first one's master while a claim is in flight,
// then sends the queue, and returns how many orders each claim expired.
// The partitions are taken to be that master's, as after a failover the
// topology last read may say of a partition it no longer holds.
func (s *Store) ClaimQueued(ctx context.Context, idx ...int) ([]int64, error) {
	ps, err := s.partitionsOf(ctx, idx)
	if err != nil {
		return nil, err
	}
	for _, p := range ps[1:] {
		p.master.Store(ps[0].master.Load())
	}
	q := s.claimQueueOf(*ps[0].master.Load())
	q.mu.Lock()
	q.busy = true // the claim in flight
	q.mu.Unlock()
	// One claim at a time, each queued before the next starts, so that the
	// queue holds them in the order of idx: the call goes to the master of
	// its first partition's keys, and a test that names one the master does
	// not hold first would see the others left out instead.
	answers := make([]chan sweepCall, len(ps))
	for i, p := range ps {
		answers[i] = make(chan sweepCall, 1)
		go func() { answers[i] <- s.claimDue(ctx, p) }()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			q.mu.Lock()
			queued := len(q.queue)
			q.mu.Unlock()
			if queued == i+1 {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("%d of %d claims queued behind the one in flight after 10s", queued, len(ps))
			}
		}
	}
	s.drainClaims(q)
	ns := make([]int64, len(ps))
	for i, a := range answers {
		c := <-a
		if c.err != nil {
			return nil, c.err
		}
		ns[i] = c.n
	}
	return ns, nil
}
