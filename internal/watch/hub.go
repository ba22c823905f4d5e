// Package watch fans the expiration log out to the watchers of one replica:
// one reader tails the store's log and hands each event to every watcher
// through a bounded buffer, so that a slow watcher can never stall the others
// or make the replica's memory grow without bound.
package watch

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/backoff"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Log is the part of a store the hub reads.
type Log interface {
	// Events returns up to limit events after the cursor; when there are
	// none and wait is positive, it blocks for up to wait.
	Events(ctx context.Context, after order.Cursor, limit int, wait time.Duration) ([]order.Event, error)
	// Tail returns the cursor of the last event.
	Tail(ctx context.Context) (order.Cursor, error)
	// CheckCursor says whether a watch can resume after c without a gap.
	CheckCursor(ctx context.Context, c order.Cursor) error
}

// ErrLagged closes a subscription whose buffer was full: its watcher fell
// too far behind the log.
var ErrLagged = errors.New("watcher fell behind the expiration log")

// ErrStopped closes every subscription when the hub stops.
var ErrStopped = errors.New("server is shutting down")

const (
	// readBatch is how many events one read of the log may return.
	readBatch = 512
	// readWait is how long one read blocks for new events; it also bounds
	// how long the hub takes to notice that it must stop.
	readWait = time.Second
)

// ErrTooManyWatchers refuses a subscription past MaxWatchers.
var ErrTooManyWatchers = errors.New("too many watchers")

// Hub tails the log and fans events out to subscriptions.
type Hub struct {
	// MaxWatchers bounds the open subscriptions; 0 means no bound. Set it
	// before Run.
	MaxWatchers int
	// OnPublish, when set before Run, is called with each event as it
	// reaches the subscriptions, and the time it did.
	OnPublish func(ev order.Event, at time.Time)

	log    Log
	buffer int
	logger *slog.Logger

	ready     chan struct{} // closed once the starting position is known, or on stop
	readyOnce sync.Once

	mu      sync.Mutex
	pos     order.Cursor // the last event handed to subscribers
	subs    map[*Subscription]struct{}
	stopped bool
}

// NewHub returns a hub over log whose subscriptions each buffer up to
// buffer events.
func NewHub(log Log, buffer int, logger *slog.Logger) *Hub {
	if logger == nil {
		logger = slog.Default()
	}
	return &Hub{
		log:    log,
		buffer: buffer,
		logger: logger,
		ready:  make(chan struct{}),
		subs:   make(map[*Subscription]struct{}),
	}
}

// Subscription receives every event after From, in log order, until it is
// closed.
type Subscription struct {
	// From is the hub's position when the subscription began: every event
	// after it arrives on C; events up to it must be read from the log.
	From order.Cursor
	// C delivers the events. It is never closed; watch Done.
	C <-chan order.Event

	ch   chan order.Event
	hub  *Hub
	done chan struct{}
	err  error // set before done is closed
}

// Done is closed when the subscription ends; Err then says why.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err is ErrLagged, ErrStopped or nil (closed by its owner).
func (s *Subscription) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close ends the subscription and frees its buffer.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.drop(s, nil)
}

// Subscribe starts a subscription at the hub's current position. It waits
// until the hub knows where the log ends.
func (h *Hub) Subscribe(ctx context.Context) (*Subscription, error) {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return nil, ErrStopped
	}
	if h.atLimit() {
		return nil, ErrTooManyWatchers
	}
	ch := make(chan order.Event, h.buffer)
	s := &Subscription{From: h.pos, C: ch, ch: ch, hub: h, done: make(chan struct{})}
	h.subs[s] = struct{}{}
	return s, nil
}

// full says whether a subscription would now be refused for MaxWatchers.
func (h *Hub) full() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.atLimit()
}

// atLimit is full for a caller that holds mu.
func (h *Hub) atLimit() bool { return h.MaxWatchers > 0 && len(h.subs) >= h.MaxWatchers }

// Watchers returns the number of open subscriptions.
func (h *Hub) Watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Run tails the log until ctx ends, then closes every subscription with
// ErrStopped.
func (h *Hub) Run(ctx context.Context) error {
	defer h.stop()
	var bo backoff.Backoff
	pause := func(err error, what string) bool {
		h.logger.Warn("watch: cannot read the expiration log; retrying", "op", what, "err", err)
		return bo.Wait(ctx)
	}
	for {
		pos, err := h.log.Tail(ctx)
		if err == nil {
			h.mu.Lock()
			h.pos = pos
			h.mu.Unlock()
			h.readyOnce.Do(func() { close(h.ready) })
			break
		}
		if ctx.Err() != nil || !pause(err, "tail") {
			return nil
		}
	}
	for {
		h.mu.Lock()
		pos := h.pos
		h.mu.Unlock()
		events, err := h.log.Events(ctx, pos, readBatch, readWait)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if !pause(err, "read") {
				return nil
			}
			continue
		}
		bo.Reset()
		h.publish(events)
	}
}

// publish hands events to every subscription. A subscription whose buffer
// is full is closed with ErrLagged rather than waited for.
func (h *Hub) publish(events []order.Event) {
	if len(events) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		for _, ev := range events {
			select {
			case s.ch <- ev:
				continue
			default:
				h.drop(s, ErrLagged)
			}
			break
		}
	}
	h.pos = events[len(events)-1].Cursor
	if h.OnPublish != nil {
		now := time.Now()
		for _, ev := range events {
			h.OnPublish(ev, now)
		}
	}
}

// drop removes a subscription. The caller holds mu.
func (h *Hub) drop(s *Subscription, err error) {
	if _, ok := h.subs[s]; !ok {
		return
	}
	delete(h.subs, s)
	s.err = err
	close(s.done)
}

func (h *Hub) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	h.readyOnce.Do(func() { close(h.ready) })
	for s := range h.subs {
		h.drop(s, ErrStopped)
	}
}
