package redisstore

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// The store's identity is its epoch (epochKey) and its number of partitions
// (partitionsKey). Redis can lose everything under a running service: a
// FLUSHALL, a restart without persistence, keys evicted under memory
// pressure. Pending orders, tombstones and the expiration log are then gone,
// and nothing in Redis says so; the epoch is what tells.
//
// Every replica remembers the epoch it started with (the first layout reads
// it, recording one if the store is new) and checks it on every Ping:
//
//   - The epoch is the same: all is well.
//   - The epoch is gone: the store was emptied. The replica records a new
//     epoch, whose history begins now, and its own number of partitions if
//     none is recorded (SET only where nothing is, in one script, so that
//     replicas racing to do it agree), logs an error saying what was lost,
//     and adopts the new epoch.
//   - The epoch is another one: another replica renewed it first, or one
//     started on the emptied store and recorded a new one. The replica
//     adopts it and logs the same error.
//
// In both of the last two cases Ping fails once, so that health reports
// NOT_SERVING for that check and the event shows where health is watched,
// and succeeds from the next check on.
//
// Whatever the epoch, a replica never runs with a number of partitions other
// than the recorded one: the partition of an order is its id's hash modulo
// that number, so two replicas that disagree lose each other's orders and
// cursors. A replica that finds another number recorded (a replica started
// on the emptied store before any running one renewed it, asking for
// another number) refuses every call, pauses its sweepers, and fails every
// Ping, with an error that says so, until the numbers agree again:
// restarting it makes it take the recorded number, as every start does.
//
// CheckCursor reads the epoch from Redis on every call and refuses a cursor
// from before its history began (see CheckCursor).

// epoch is the store's identity as epochKey holds it.
type epoch struct {
	// id is random: two epochs are never the same.
	id string
	// since is when the history of the store's expiration log began, in
	// unix ms by Redis's clock; 0 when it is older than epochs.
	since uint64
}

func parseEpoch(v string) (epoch, error) {
	id, since, ok := strings.Cut(v, " ")
	ms, err := strconv.ParseUint(since, 10, 64)
	if !ok || id == "" || err != nil {
		return epoch{}, fmt.Errorf("%q is not an epoch (\"<id> <since ms>\")", v)
	}
	return epoch{id: id, since: ms}, nil
}

// newEpochID returns a random epoch id, of 128 bits.
func newEpochID() string { return rand.Text() }

// identity is what identityScript found.
type identity struct {
	state      string // "same", "new" or "changed"
	epoch      string // as stored
	partitions int    // 0 when none is recorded
}

// identify runs identityScript; remembered is the epoch the replica runs
// with, empty at its start, and partitions the number it runs with or asks
// for.
func (s *Store) identify(ctx context.Context, remembered string, partitions int) (identity, error) {
	cmd, _ := s.runKeys(ctx, identityScript, []string{partitionsKey, epochKey}, remembered, partitions, newEpochID())
	res, err := cmd.Slice()
	if err != nil {
		return identity{}, storeError(err)
	}
	if len(res) != 3 {
		return identity{}, fmt.Errorf("redis: identity script reply has %d elements, want 3", len(res))
	}
	id := identity{}
	id.state, _ = res[0].(string)
	id.epoch, _ = res[1].(string)
	if _, err := parseEpoch(id.epoch); err != nil {
		return identity{}, s.corrupt(epochKey, err)
	}
	if v, ok := res[2].(string); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > order.MaxPartitions {
			return identity{}, s.corrupt(partitionsKey, fmt.Errorf("%q is not a number of partitions from 1 to %d", v, order.MaxPartitions))
		}
		id.partitions = n
	}
	return id, nil
}

// Ping checks that Redis answers and that it still holds the store this
// replica started with (see the top of this file): it fails while Redis
// cannot be reached, once when the store was found emptied (it is then
// renewed), and for as long as the recorded number of partitions is not
// this replica's.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	parts, err := s.loadLayout(ctx)
	if err != nil {
		return err
	}
	// One check at a time: each compares with the epoch the last one left.
	s.checking.Lock()
	defer s.checking.Unlock()
	remembered := *s.epoch.Load()
	id, err := s.identify(ctx, remembered, len(parts))
	if err != nil {
		return err
	}
	if id.partitions != len(parts) {
		return s.refuse(id, len(parts))
	}
	s.allow()
	if id.state == "same" {
		// The groups, for the log line should the store be emptied: they
		// are lost with it, and nothing else would name them.
		if ids, err := s.rdb.HKeys(ctx, groupsKey).Result(); err == nil {
			slices.Sort(ids)
			s.groupIDs = ids
		}
		if err := s.checkEviction(ctx); err != nil {
			return err
		}
		return s.checkDurability(ctx)
	}
	lostGroups := strings.Join(s.groupIDs, ",")
	s.groupIDs = nil
	s.epoch.Store(&id.epoch)
	e, _ := parseEpoch(id.epoch)
	what := "the epoch key of the order store (" + epochKey + ") is gone: Redis was emptied (FLUSHALL or FLUSHDB, a restart without persistence, keys evicted)"
	if id.state == "changed" {
		what = "the order store's epoch changed: Redis was emptied and another replica renewed the store, or it was replaced"
	}
	s.log.Error(what+"; every order pending then, every closed order, the expiration log before now and the consumer groups (groups_lost; a groups file creates its groups again) are lost, and watches resuming from an older cursor get OUT_OF_RANGE. This replica now runs on the renewed store",
		"old_epoch", epochID(remembered), "epoch", e.id, "history_since", time.UnixMilli(int64(e.since)).UTC(), "partitions", len(parts), "groups_lost", lostGroups)
	return order.Unavailable(fmt.Errorf("%s; the store was renewed, and serves again from the next check", what))
}

// epochID is the id part of an epoch as stored, for a log.
func epochID(v string) string {
	id, _, _ := strings.Cut(v, " ")
	return id
}

// refuse makes the replica refuse every call because the store records
// another number of partitions than the one it runs with, and returns the
// error that says so, logged once for each identity found.
func (s *Store) refuse(id identity, own int) error {
	recorded := fmt.Sprintf("the order store records %d partitions", id.partitions)
	if id.partitions == 0 {
		recorded = "the order store records no number of partitions"
	}
	err := &order.Error{
		Kind:   order.KindUnavailable,
		Reason: order.ReasonStoreUnavailable,
		Msg:    "this replica of the service cannot serve: it runs with another number of partitions than the order store records; retry later",
		Err: fmt.Errorf("%s (%s, epoch %s), but this replica runs with %d: it refuses every call so that replicas never disagree about where an order is; restart it to take the recorded number",
			recorded, partitionsKey, epochID(id.epoch), own),
	}
	if prev := s.fault.Swap(err); prev == nil || prev.Err.Error() != err.Err.Error() {
		s.log.Error("the order store's number of partitions is not this replica's: NOT_SERVING, every call refused", "err", err.Err)
	}
	return err
}

// allow ends a refusal by refuse.
func (s *Store) allow() {
	if s.fault.Swap(nil) != nil {
		s.log.Warn("the order store records this replica's number of partitions again: serving")
	}
}
