package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Every script runs through one of the functions of this file, which read
// from the script's declaration (scripts.go) whether the strict mode
// confirms its writes (see durability.go), so that no call can leave the
// confirmation out:
//
//   - run: a script of a partition, on the partition's keys; runDurable
//     when it is confirmed;
//   - runKeys: a script on keys of its own, alone; through durably when it
//     is confirmed;
//   - durablePipe.eval: a script among other writes of one master, on the
//     pipeline durably confirms (the consumer groups' writes);
//   - queue: a script on a pipeline of calls that need no confirmation; a
//     confirmed script is refused there.
//
// TestScriptsRunOnlyHere holds the rest of the package to it.

// runKeys runs a script on keys of its own, not a partition's: in the
// strict mode through durably, under callTimeout, when its writes are
// confirmed. err is durably's, the domain's already; the script's own
// answer, and its error, are cmd's.
func (s *Store) runKeys(ctx context.Context, sc *script, keys []string, args ...any) (cmd *redis.Cmd, err error) {
	if !sc.confirmed() || s.durability != DurabilityStrict {
		return sc.lua.Run(ctx, s.rdb, keys, args...), nil
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	err = s.durablyOn(ctx, keys[:1], func(pipe durablePipe, _ int) {
		cmd = pipe.eval(ctx, sc, keys, args...)
	})
	return cmd, err
}

// durablePipe is the pipeline of durably, which confirms its writes in the
// strict mode: the one pipeline a confirmed script may be queued on.
type durablePipe struct{ redis.Pipeliner }

// eval queues sc on the pipeline.
func (p durablePipe) eval(ctx context.Context, sc *script, keys []string, args ...any) *redis.Cmd {
	return sc.lua.Eval(ctx, p.Pipeliner, keys, args...)
}

// queue queues sc on a pipeline of calls that need no confirmation. A
// script whose writes are confirmed is refused (the command's error says
// so, in every mode, so that tests of the fast mode find it too): it goes
// on durably's pipeline.
func queue(ctx context.Context, pipe redis.Pipeliner, sc *script, keys []string, args ...any) *redis.Cmd {
	if sc.confirmed() {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(fmt.Errorf("redisstore: script %s writes what a caller is answered for: it is queued only on durably's pipeline", sc.name))
		return cmd
	}
	// EVAL rather than EVALSHA: a pipeline cannot fall back on NOSCRIPT
	// one command at a time.
	return sc.lua.Eval(ctx, pipe, keys, args...)
}

// run runs a script of partition p under callTimeout: through runDurable
// when the strict mode confirms the script's writes. In a Redis Cluster
// that is moving the partition's slot, it tries again until the move lets
// the script run (see slotMove).
func (s *Store) run(ctx context.Context, p *partition, sc *script, args ...any) ([]any, error) {
	if sc.confirmed() && s.durability == DurabilityStrict {
		return s.runDurable(ctx, p, sc, args...)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var retry slotRetry
	for {
		res, err := sc.lua.Run(ctx, s.rdb, p.keys.scriptKeys(), s.args(p, args...)...).Slice()
		if _, moving := parseSlotMove(err); !moving || s.cluster == nil || !retry.wait(ctx) {
			return res, storeError(err)
		}
		s.slotRetries.Add(1)
	}
}

// args are the ARGV of a script of partition p: what lua/prelude.lua takes,
// then the script's own.
func (s *Store) args(p *partition, extra ...any) []any {
	return append([]any{p.keys.prefix, s.retention.Milliseconds()}, extra...)
}

// runDurable runs a script of partition p whose writes a caller is
// answered for, as run does, in the strict mode: it makes its OK mean what
// that mode promises (see durability.go). The script, WAIT and ROLE go to the partition's master in one pipeline on
// one connection, since WAIT counts the replicas that have what its own
// connection wrote; the call is answered UNAVAILABLE unless every replica
// the master has now (at least one under Sentinel and on a cluster)
// confirms the change within replicaWait. The count of replicas the wait
// starts from is the one the last write found; it never lets a write go
// without the wait.
func (s *Store) runDurable(ctx context.Context, p *partition, sc *script, args ...any) ([]any, error) {
	if err := s.durabilityRefusal(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	node, err := s.master(ctx, p)
	if err != nil {
		return nil, storeError(err)
	}
	// The script and WAIT go to one node, on one connection, so go-redis
	// does not follow a redirection for them: the loop does (see
	// slotMove), and loads the script where it is missing.
	var (
		asking, loaded, redirected bool
		retry                      slotRetry
	)
	for {
		conn := node.Conn()
		var (
			res     *redis.Cmd
			confirm *confirmation
		)
		started := time.Now()
		_, _ = conn.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			if asking {
				pipe.Do(ctx, "ASKING")
			}
			res = sc.lua.EvalSha(ctx, pipe, p.keys.scriptKeys(), s.args(p, args...)...)
			confirm = s.queueConfirm(ctx, pipe, p.replicas.Load(), p.keys.deadlines)
			return nil
		})
		if !loaded && redis.HasErrorPrefix(res.Err(), "NOSCRIPT") {
			_ = conn.Close()
			loaded = true
			if err := sc.lua.Load(ctx, node).Err(); err != nil {
				return nil, s.nodeError(err)
			}
			continue
		}
		if m, ok := parseSlotMove(res.Err()); ok {
			_ = conn.Close()
			// A redirection is followed at once, as go-redis does; a
			// second one in a row, or TRYAGAIN, waits a little first, so
			// that two nodes that disagree for a moment about who has
			// the slot are not asked in a tight loop.
			if (m.again || redirected) && !retry.wait(ctx) {
				return nil, s.nodeError(res.Err())
			}
			redirected = !m.again
			var next *redis.Client
			switch {
			case m.again:
				// Back to the slot's master, which knows how the move
				// goes on: the keys may still be split between the two.
				if next, err = s.cluster.MasterForKey(ctx, p.keys.deadlines); err != nil {
					return nil, storeError(err)
				}
			case m.ask:
				next = s.masterAt(ctx, m.addr)
			default:
				s.cluster.ReloadState(ctx)
				next = s.masterAt(ctx, m.addr)
			}
			if next == nil {
				// A master the client does not know yet: it learns of
				// it from the reload, and the slot's master is asked
				// again after a pause.
				s.cluster.ReloadState(ctx)
				if !retry.wait(ctx) {
					return nil, s.nodeError(res.Err())
				}
				if next, err = s.cluster.MasterForKey(ctx, p.keys.deadlines); err != nil {
					return nil, storeError(err)
				}
				m.ask = false
			}
			if next != node {
				loaded = false
			}
			node, asking = next, m.ask
			s.slotRetries.Add(1)
			continue
		}
		if err := res.Err(); err != nil {
			_ = conn.Close()
			return nil, s.nodeError(err)
		}
		n, err := s.confirm(ctx, conn, confirm, started)
		_ = conn.Close()
		p.replicas.Store(n)
		if err != nil {
			return nil, err
		}
		return res.Slice()
	}
}

// master is the client of partition p's master: under Sentinel the store's
// own client, which is always on the master.
func (s *Store) master(ctx context.Context, p *partition) (*redis.Client, error) {
	if s.cluster == nil {
		return s.rdb.(*redis.Client), nil
	}
	return s.cluster.MasterForKey(ctx, p.keys.deadlines)
}
