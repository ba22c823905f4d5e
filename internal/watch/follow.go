package watch

import (
	"context"
	"errors"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// replayBatch is how many events one read of the log returns while a watch
// catches up.
const replayBatch = 1000

// Follow streams the expiration log to one watcher: with a position (after
// is not nil) it first replays every event after it from the log, partition
// by partition, then goes on with live events, each exactly once and in its
// partition's order. Without one it starts at the live position. started is
// called once the request is known to be valid, before anything is sent;
// send delivers one event, whose Position is set. live says the event comes
// from the hub's fan-out, where every watcher sends the same Event; a
// replayed event carries this watcher's own Position.
//
// It returns when ctx ends, send fails or the subscription is closed, with
// the position after the last event sent (or the starting position), from
// which the watcher can resume.
func (h *Hub) Follow(ctx context.Context, after order.Position, started func() error, send func(ev order.Event, live bool) error) (order.Position, error) {
	last := after.Clone()
	if after != nil {
		var err error
		if last, err = h.checkPosition(ctx, last); err != nil {
			return after, err
		}
	}
	// Refused past the limit before the header goes out, so that the caller
	// gets RESOURCE_EXHAUSTED (HTTP 429) rather than a watch that was
	// accepted and ends at once. Subscribe enforces the limit for the rare
	// watch that passes here at the same moment as another.
	if h.full() {
		return last, subscribeError(ErrTooManyWatchers, nil)
	}
	if err := started(); err != nil {
		return last, err
	}
	// Catch up before subscribing, so that a long replay does not fill the
	// live buffer.
	if after != nil {
		if err := h.replay(ctx, last, nil, send); err != nil {
			return last, err
		}
	}
	sub, err := h.Subscribe(ctx)
	if err != nil {
		if after == nil {
			return last, subscribeError(err, nil) // nothing to resume from
		}
		return last, subscribeError(err, last)
	}
	defer sub.Close()
	if after == nil {
		last = sub.From
	} else if err := h.replay(ctx, last, sub.From, send); err != nil {
		// Events that came between the replay and the subscription.
		return last, err
	}
	for {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-sub.Done():
			return last, subscribeError(sub.Err(), last)
		case ev := <-sub.C:
			if !last.Behind(ev) {
				continue // already replayed
			}
			if err := send(ev, true); err != nil {
				return last, err
			}
			last[ev.Partition] = ev.Cursor
		}
	}
}

// CheckPosition is checkPosition, for a consumer group's start.
func (h *Hub) CheckPosition(ctx context.Context, p order.Position) (order.Position, error) {
	return h.checkPosition(ctx, p)
}

// checkPosition says whether a watch can resume after p without a gap, and
// returns p with one part per partition: a single zero cursor ("0-0") is
// the start of every partition, so that "0-0" replays the whole retained
// log whatever the number of partitions.
func (h *Hub) checkPosition(ctx context.Context, p order.Position) (order.Position, error) {
	n, err := h.log.Partitions(ctx)
	if err != nil {
		return p, err
	}
	if len(p) == 1 && p[0].IsZero() {
		p = make(order.Position, n)
	}
	if len(p) != n {
		return p, order.Errorf(order.KindInvalid, "after_cursor %s has %d part(s), but this service's expiration log has %d partition(s): it does not come from this service; pass the cursor field of a received event", p, len(p), n)
	}
	if err := h.log.CheckCursor(ctx, p...); err != nil {
		return p, err
	}
	return p, nil
}

// replay sends the events after last from the log, partition by partition,
// up to and including until when it is not nil, or to the end of the log.
// It moves last forward, in place, with each event sent.
func (h *Hub) replay(ctx context.Context, last, until order.Position, send func(order.Event, bool) error) error {
	for p := range last {
		if until != nil && !last[p].Less(until[p]) {
			continue
		}
		for {
			events, err := h.log.Events(ctx, p, last[p], replayBatch, 0)
			if err != nil {
				return err
			}
			done := len(events) < replayBatch
			for _, ev := range events {
				if until != nil && until[p].Less(ev.Cursor) {
					done = true
					break
				}
				ev.Position = last.Clone()
				ev.Position[p] = ev.Cursor
				if err := send(ev, false); err != nil {
					return err
				}
				last[p] = ev.Cursor
			}
			if done {
				break
			}
		}
	}
	return nil
}

func subscribeError(err error, last order.Position) error {
	resume := "watch again"
	if last != nil {
		resume = "resume with after_cursor=" + last.String()
	}
	switch {
	case errors.Is(err, ErrLagged):
		return &order.Error{Kind: order.KindResourceExhausted, Err: err,
			Msg: "this watcher fell too far behind the expiration log and was closed; " + resume}
	case errors.Is(err, ErrTooManyWatchers):
		return &order.Error{Kind: order.KindResourceExhausted, Err: err,
			Msg: "this replica serves as many watchers as it may (its max-watchers limit); try again later or on another replica"}
	case errors.Is(err, ErrStopped):
		return &order.Error{Kind: order.KindUnavailable, Err: err,
			Msg: "the server is shutting down; " + resume}
	}
	return err
}
