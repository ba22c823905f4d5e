package watch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// replayBatch is how many events one read of the log returns while a watch
// catches up.
const replayBatch = 1000

// replayHold bounds how long one batch of a replay keeps its replay slot
// (see Hub.MaxReplays): a watcher slow to take its events, or one that
// stopped reading, keeps its batch but gives the slot back, so that a few
// such watchers cannot hold up everyone else's replays.
const replayHold = time.Second

// Follow streams the expiration log to one watcher: with a position (after
// is not nil) it first replays every event after it from the log, partition
// by partition, then goes on with live events, each exactly once and in its
// partition's order. Without one it starts at the live position. started is
// called once the request is known to be valid, before anything is sent;
// send delivers one event, whose Cursor is set. live says the event comes
// from the hub's fan-out, where every watcher sends the same Event; a
// replayed event carries this watcher's own Cursor.
//
// A watcher that falls more than Buffer events behind the fan-out is not
// cut off: it leaves the fan-out, reads on from the log after the last
// event it sent, the same way a watch with a position starts, and joins the
// fan-out again once it has caught up, so that what it holds stays one
// buffer or one replay batch. Only a watcher whose next event has passed
// out of the log's retention meanwhile is ended, with KindOutOfRange.
//
// A watch takes its place under MaxWatchers before started is called, so
// that a watch past the limit is refused with RESOURCE_EXHAUSTED (HTTP 429)
// rather than accepted and ended at once, and so that watches replaying a
// long log count against the limit as much as live ones; a watch catching
// up keeps its place. Replays read and send the log a batch at a time,
// MaxReplays batches at once; the others wait their turn. A live watch is
// refused with UNAVAILABLE while the hub cannot read the log, from which
// its events would come.
//
// It returns when ctx ends, send fails or the subscription is closed, with
// the position after the last event sent (or the starting position), from
// which the watcher can resume.
func (h *Hub) Follow(ctx context.Context, after order.Cursor, started func() error, send func(ev order.Event, live bool) error) (order.Cursor, error) {
	var last order.Cursor
	// Where the watch was in each partition's old history when the log
	// went back (see repeats.go).
	var cr []crossing
	// w is the watch's record with the hub (see state); sub, its
	// subscription while it is live.
	var w *watcher
	var sub *Subscription
	defer func() {
		if w != nil {
			h.leave(w)
		}
	}()
	if after == nil {
		if err := h.readable(ctx); err != nil {
			return nil, err
		}
		var err error
		if w, sub, err = h.admit(ctx, stateLive, true); err != nil {
			return nil, subscribeError(err, nil) // nothing to resume from
		}
		if err := started(); err != nil {
			return nil, err
		}
		last = sub.From
	} else {
		var err error
		if last, err = h.CheckCursor(ctx, after.Clone()); err != nil {
			return after, err
		}
		if w, _, err = h.admit(ctx, stateReplaying, true); err != nil {
			return last, subscribeError(err, nil)
		}
		if err := started(); err != nil {
			return last, err
		}
	}
	cr = make([]crossing, len(last))
	for {
		if sub == nil { // replaying
			// Catch up before subscribing, so that a long replay does not
			// fill the live buffer.
			if err := h.replay(ctx, last, nil, cr, send); err != nil {
				return last, err
			}
			var err error
			if sub, err = h.join(ctx, w); err != nil {
				return last, subscribeError(err, last)
			}
			// Events that came between the replay and the subscription.
			if err := h.replay(ctx, last, sub.From, cr, send); err != nil {
				return last, err
			}
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case ev := <-sub.C:
			if err := h.sendLive(ev, last, cr, send); err != nil {
				return last, err
			}
		case <-sub.Done():
			if !errors.Is(sub.Err(), ErrLagged) {
				return last, subscribeError(sub.Err(), last)
			}
			// Lagged: what the buffer holds comes next, in order: send
			// it, then read on from the log after it.
			for len(sub.C) > 0 {
				if err := h.sendLive(<-sub.C, last, cr, send); err != nil {
					return last, err
				}
			}
			missed := sub.missed
			h.resume(w)
			sub = nil
			if err := h.checkCatchUp(ctx, last, missed); err != nil {
				return last, err
			}
		}
	}
}

// sendLive sends an event of the fan-out that the watcher at last has not
// sent yet, and moves last past it. A repeat of an expiration the watcher
// had is not sent (see repeats.go).
func (h *Hub) sendLive(ev order.Event, last order.Cursor, cr []crossing, send func(order.Event, bool) error) error {
	if !last.Behind(ev) {
		return nil // already replayed
	}
	if h.hadIt(ev, last, cr) {
		last[ev.Partition] = ev.Offset
		return nil
	}
	if err := send(ev, true); err != nil {
		return err
	}
	last[ev.Partition] = ev.Offset
	return nil
}

// checkCatchUp says whether a watcher at last, whose buffer overflowed at
// missed, can read on from the log without a gap. The event after last in
// missed's partition is missed itself: the log must still hold it. In the
// other partitions the watcher had every event the hub had read when the
// buffer overflowed, so its next events there are newer than that; their
// cursors are left out of the check, which would take an old cursor of a
// quiet partition for one the log no longer covers.
func (h *Hub) checkCatchUp(ctx context.Context, last order.Cursor, missed order.Event) error {
	check := make(order.Cursor, len(last))
	check[missed.Partition] = missed.Offset
	err := h.log.CheckCursor(ctx, check...)
	if err == nil || order.KindOf(err) != order.KindOutOfRange {
		return err
	}
	return &order.Error{Kind: order.KindOutOfRange, Reason: order.ReasonCursorExpired, Err: fmt.Errorf("%w: %w", ErrLagged, err),
		Msg: "this watcher fell behind the expiration log and, while it caught up, the log's retention passed its next event " +
			missed.Offset.String() + ": events after after_cursor=" + last.String() + " are gone; start a new watch without after_cursor"}
}

// CheckCursor says whether a watch, or a consumer group, can start after
// p without a gap, and returns p with one part per partition: a single zero cursor ("0-0") is
// the start of every partition, so that "0-0" replays the whole retained
// log whatever the number of partitions.
func (h *Hub) CheckCursor(ctx context.Context, p order.Cursor) (order.Cursor, error) {
	n, err := h.log.Partitions(ctx)
	if err != nil {
		return p, err
	}
	if len(p) == 1 && p[0].IsZero() {
		p = make(order.Cursor, n)
	}
	if err := p.CheckParts(n); err != nil {
		return p, err
	}
	if err := h.log.CheckCursor(ctx, p...); err != nil {
		return p, err
	}
	return p, nil
}

// replay sends the events after last from the log, partition by partition,
// up to and including until when it is not nil, or to the end of the log.
// It moves last forward, in place, with each event sent.
func (h *Hub) replay(ctx context.Context, last, until order.Cursor, cr []crossing, send func(order.Event, bool) error) error {
	for p := range last {
		if until != nil && !last[p].Less(until[p]) {
			continue
		}
		for {
			done, err := h.replayBatch(ctx, p, last, until, cr, send)
			if err != nil {
				return err
			}
			if done {
				break
			}
		}
	}
	return nil
}

// replayBatch replays one batch of partition p under a replay slot; it says
// whether the partition is done.
func (h *Hub) replayBatch(ctx context.Context, p int, last, until order.Cursor, cr []crossing, send func(order.Event, bool) error) (bool, error) {
	release, err := h.replaySlot(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	events, err := h.log.Events(ctx, p, last[p], replayBatch, 0)
	if err != nil {
		return false, err
	}
	slow := time.AfterFunc(replayHold, release)
	defer slow.Stop()
	done := len(events) < replayBatch
	for _, ev := range events {
		if until != nil && until[p].Less(ev.Offset) {
			return true, nil
		}
		if h.hadIt(ev, last, cr) {
			last[p] = ev.Offset
			continue
		}
		ev.Cursor = last.Clone()
		ev.Cursor[p] = ev.Offset
		if err := send(ev, false); err != nil {
			return false, err
		}
		last[p] = ev.Offset
	}
	return done, nil
}

func subscribeError(err error, last order.Cursor) error {
	resume := "watch again"
	if last != nil {
		resume = "resume with after_cursor=" + last.String()
	}
	switch {
	case errors.Is(err, ErrTooManyWatchers):
		return &order.Error{Kind: order.KindResourceExhausted, Reason: order.ReasonTooManyWatchers, Err: err,
			Msg: "this replica serves as many watchers as it may; try again later or on another replica, or raise its limit"}
	case errors.Is(err, ErrStopped):
		return &order.Error{Kind: order.KindUnavailable, Reason: order.ReasonShuttingDown, Err: err,
			Msg: "the server is shutting down; " + resume}
	}
	return err
}
