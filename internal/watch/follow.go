package watch

import (
	"context"
	"errors"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// replayBatch is how many events one read of the log returns while a watch
// catches up.
const replayBatch = 1000

// Follow streams the expiration log to one watcher: with a cursor (after is
// not nil) it first replays every event after it from the log, then goes on
// with live events, each exactly once and in log order. Without one it
// starts at the live position. started is called once the request is known
// to be valid, before anything is sent; send delivers one event.
//
// It returns when ctx ends, send fails or the subscription is closed, with
// the cursor of the last event sent (or the starting position), from which
// the watcher can resume.
func (h *Hub) Follow(ctx context.Context, after *order.Cursor, started func() error, send func(order.Event) error) (order.Cursor, error) {
	var last order.Cursor
	if after != nil {
		last = *after
		if err := h.log.CheckCursor(ctx, last); err != nil {
			return last, err
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
		var err error
		if last, err = h.replay(ctx, last, nil, send); err != nil {
			return last, err
		}
	}
	sub, err := h.Subscribe(ctx)
	if err != nil {
		if after == nil {
			return last, subscribeError(err, nil) // nothing to resume from
		}
		return last, subscribeError(err, &last)
	}
	defer sub.Close()
	if after == nil {
		last = sub.From
	} else if last.Less(sub.From) {
		// Events that came between the replay and the subscription.
		if last, err = h.replay(ctx, last, &sub.From, send); err != nil {
			return last, err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-sub.Done():
			return last, subscribeError(sub.Err(), &last)
		case ev := <-sub.C:
			if !last.Less(ev.Cursor) {
				continue // already replayed
			}
			if err := send(ev); err != nil {
				return last, err
			}
			last = ev.Cursor
		}
	}
}

// replay sends the events after last from the log, up to and including
// until when it is not nil, or to the end of the log.
func (h *Hub) replay(ctx context.Context, last order.Cursor, until *order.Cursor, send func(order.Event) error) (order.Cursor, error) {
	for {
		events, err := h.log.Events(ctx, last, replayBatch, 0)
		if err != nil {
			return last, err
		}
		for _, ev := range events {
			if until != nil && until.Less(ev.Cursor) {
				return last, nil
			}
			if err := send(ev); err != nil {
				return last, err
			}
			last = ev.Cursor
		}
		if len(events) < replayBatch {
			return last, nil
		}
	}
}

func subscribeError(err error, last *order.Cursor) error {
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
