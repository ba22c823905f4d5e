package redisstore

import (
	"context"
	"fmt"
	"sync"
)

// On a Redis Cluster the sweepers of the partitions that one master holds
// send their claims through one queue: a claim that finds none of that
// master's in flight is sent at once, alone, as on one Redis; the claims
// that come while one is in flight wait for it to return and then go
// together, as one call of expire_many.lua. Each of a cluster's partitions
// (64 by default) has a sweeper that wakes at its own next deadline, so a
// claim carries about one order at a few thousand expiries a second, and
// what a call costs Redis and the service, not the order, is what the
// cluster spent its time on: in benchmark 6, 20,000 orders due over 2 s
// took about 13,000 claims, and the six redis-servers with the service
// used the machine's two cores throughout. Queued claims cost no timer and
// no latency when a master is idle; under load they go together, as the
// batch scripts of orders do (batch.go).
//
// The service groups the partitions by the master the cluster last
// reported (topology). A partition that the master no longer serves, after
// a failover or while its slot moves, is left out by the script and claimed
// by a call of its own, which run sends to wherever the slot is now. If it
// is the first of a call, the call goes where its keys are now (go-redis
// routes by the declared keys), and there the others are left out and each
// is claimed alone: the same outcome, in more calls, until the topology is
// read again.

// maxClaimsTogether bounds the partitions of one call of expire_many.lua:
// each may claim a sweepBatch, and Redis runs nothing else while the
// script runs (8 full batches hold it for about 15 ms).
const maxClaimsTogether = 8

// claimQueue queues the claims of one master's partitions while one is in
// flight.
type claimQueue struct {
	mu sync.Mutex
	// busy is true while a claim is in flight or about to be sent.
	busy  bool
	queue []*claimReq
}

// claimReq is one sweeper's claim of partition p, answered on done.
type claimReq struct {
	ctx  context.Context
	p    *partition
	done chan sweepCall // buffered: the answer never waits for the sweeper
}

// claimDue runs the sweeper's script once on partition p: on a cluster
// through the queue of p's master, with other partitions of that master
// that are due meanwhile.
func (s *Store) claimDue(ctx context.Context, p *partition) sweepCall {
	addr := p.master.Load()
	if addr == nil {
		return s.sweepOnce(ctx, p)
	}
	q := s.claimQueueOf(*addr)
	r := &claimReq{ctx: ctx, p: p, done: make(chan sweepCall, 1)}
	q.mu.Lock()
	if q.busy {
		q.queue = append(q.queue, r)
		q.mu.Unlock()
		select {
		case c := <-r.done:
			return c
		case <-ctx.Done():
			// It may still run: its count is then lost, as the store
			// stops.
			return sweepCall{err: ctx.Err()}
		}
	}
	q.busy = true
	q.mu.Unlock()
	c := s.sweepOnce(ctx, p)
	q.mu.Lock()
	if len(q.queue) == 0 {
		q.busy = false
	} else {
		// Claims queued meanwhile: another goroutine sends them, so that
		// this sweeper has its answer now.
		go s.drainClaims(q)
	}
	q.mu.Unlock()
	return c
}

// claimQueueOf returns the claim queue of the master at addr.
func (s *Store) claimQueueOf(addr string) *claimQueue {
	if q, ok := s.claimQueues.Load(addr); ok {
		return q.(*claimQueue)
	}
	q, _ := s.claimQueues.LoadOrStore(addr, &claimQueue{})
	return q.(*claimQueue)
}

// drainClaims sends what queues on q, up to maxClaimsTogether claims a
// call, until the queue is empty. Its calls belong to no one sweeper: each
// runs under callTimeout only (see run), and a claim whose sweeper is gone
// is not sent.
func (s *Store) drainClaims(q *claimQueue) {
	for {
		q.mu.Lock()
		if len(q.queue) == 0 {
			q.busy = false
			q.mu.Unlock()
			return
		}
		n := min(len(q.queue), maxClaimsTogether)
		next := make([]*claimReq, 0, n)
		for _, r := range q.queue[:n] {
			if r.ctx.Err() == nil {
				next = append(next, r)
			}
		}
		q.queue = q.queue[n:]
		q.mu.Unlock()
		if len(next) > 0 {
			s.claimTogether(next)
		}
	}
}

// claimTogether runs one call of expire_many.lua over the claims of rs and
// answers each. A claim the script left out, and every claim of a call
// that failed as a whole, is sent alone, so that a partition that cannot
// be claimed holds up no other.
func (s *Store) claimTogether(rs []*claimReq) {
	ctx := context.Background()
	if len(rs) == 1 {
		rs[0].done <- s.sweepOnce(ctx, rs[0].p)
		return
	}
	ps := make([]*partition, len(rs))
	for i, r := range rs {
		ps[i] = r.p
	}
	calls, err := s.expireMany(ctx, ps)
	for i, r := range rs {
		if err != nil || calls[i].n < 0 {
			r.done <- s.sweepOnce(ctx, r.p)
			continue
		}
		r.done <- calls[i]
	}
}

// expireMany runs expire_many.lua once over partitions ps, all of one
// master (the first one's keys declared), and returns what it did in each;
// n is -1 for a partition it left out.
func (s *Store) expireMany(ctx context.Context, ps []*partition) ([]sweepCall, error) {
	args := []any{sweepBatch, alarmGrace.Milliseconds()}
	for _, p := range ps[1:] {
		args = append(args, p.keys.prefix)
	}
	reply, err := s.run(ctx, ps[0], expireManyScript, args...)
	if err != nil {
		return nil, err
	}
	if len(reply) != 4*len(ps) {
		return nil, fmt.Errorf("redis: claim reply has %d elements for %d partitions, want %d", len(reply), len(ps), 4*len(ps))
	}
	calls := make([]sweepCall, len(ps))
	for i := range calls {
		calls[i] = sweepCallOf(reply[4*i : 4*i+4])
	}
	return calls, nil
}
