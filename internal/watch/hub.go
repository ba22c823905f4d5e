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

	"golang.org/x/sync/errgroup"

	"github.com/orderexpiry/orderexpiry/internal/backoff"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Log is the part of a store the hub reads: an expiration log made of a
// fixed number of partitions, each in order.
type Log interface {
	// Partitions returns the number of partitions; it never changes.
	Partitions(ctx context.Context) (int, error)
	// Events returns up to limit events of a partition after the cursor;
	// when there are none and wait is positive, it blocks for up to wait.
	Events(ctx context.Context, partition int, after order.Cursor, limit int, wait time.Duration) ([]order.Event, error)
	// Tail returns the cursor of a partition's last event.
	Tail(ctx context.Context, partition int) (order.Cursor, error)
	// CheckCursor says whether a watch can resume after each cursor, each
	// of its partition, without a gap.
	CheckCursor(ctx context.Context, cursors ...order.Cursor) error
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

// Options configure a hub.
type Options struct {
	// Buffer is how many events a subscription may fall behind before it
	// is closed; at least 1.
	Buffer int
	// MaxWatchers bounds the open subscriptions; 0 means no bound.
	MaxWatchers int
	// OnPublish, when set, is called with each event as it reaches the
	// subscriptions, and the time it did.
	OnPublish func(ev order.Event, at time.Time)
	// Logger receives the hub's warnings; nil means slog.Default().
	Logger *slog.Logger
}

// Hub tails the log and fans events out to subscriptions.
type Hub struct {
	opts Options
	log  Log

	ready     chan struct{} // closed once the starting position is known, or on stop
	readyOnce sync.Once

	mu      sync.Mutex
	pos     order.Position // the last event of each partition handed to subscribers
	subs    map[*Subscription]struct{}
	stopped bool
	// appended is closed and replaced each time events reach the hub (see
	// Appended).
	appended chan struct{}
}

// NewHub returns a hub over log.
func NewHub(log Log, opts Options) *Hub {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.Buffer = max(opts.Buffer, 1)
	return &Hub{
		opts:     opts,
		log:      log,
		ready:    make(chan struct{}),
		subs:     make(map[*Subscription]struct{}),
		appended: make(chan struct{}),
	}
}

// Subscription receives every event after From, in log order, until it is
// closed.
type Subscription struct {
	// From is the hub's position when the subscription began: every event
	// after it arrives on C; events up to it must be read from the log.
	From order.Position
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
	ch := make(chan order.Event, h.opts.Buffer)
	s := &Subscription{From: h.pos.Clone(), C: ch, ch: ch, hub: h, done: make(chan struct{})}
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
func (h *Hub) atLimit() bool { return h.opts.MaxWatchers > 0 && len(h.subs) >= h.opts.MaxWatchers }

// Watchers returns the number of open subscriptions.
func (h *Hub) Watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Run tails every partition of the log until ctx ends, then closes every
// subscription with ErrStopped.
func (h *Hub) Run(ctx context.Context) error {
	defer h.stop()
	var bo backoff.Backoff
	n, err := h.log.Partitions(ctx)
	for err != nil {
		if ctx.Err() != nil || !h.pause(ctx, &bo, err, "partitions") {
			return nil
		}
		n, err = h.log.Partitions(ctx)
	}
	pos := make(order.Position, n)
	for p := 0; p < n; {
		c, err := h.log.Tail(ctx, p)
		if err == nil {
			pos[p] = c
			p++
			continue
		}
		if ctx.Err() != nil || !h.pause(ctx, &bo, err, "tail") {
			return nil
		}
	}
	h.mu.Lock()
	h.pos = pos
	h.mu.Unlock()
	h.readyOnce.Do(func() { close(h.ready) })

	// One reader per partition: a partition whose Redis is failing over
	// must not hold up the others' events.
	g, ctx := errgroup.WithContext(ctx)
	for p := range n {
		g.Go(func() error { h.tail(ctx, p, pos[p]); return nil })
	}
	return g.Wait()
}

// tail reads one partition of the log from after until ctx ends.
func (h *Hub) tail(ctx context.Context, p int, after order.Cursor) {
	var bo backoff.Backoff
	for {
		events, err := h.log.Events(ctx, p, after, readBatch, readWait)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !h.pause(ctx, &bo, err, "read") {
				return
			}
			continue
		}
		bo.Reset()
		if len(events) > 0 {
			h.publish(p, events)
			after = events[len(events)-1].Cursor
		}
	}
}

// pause logs a failed read of the log and waits before the next try; it
// returns false when ctx ended meanwhile.
func (h *Hub) pause(ctx context.Context, bo *backoff.Backoff, err error, what string) bool {
	h.opts.Logger.Warn("watch: cannot read the expiration log; retrying", "op", what, "err", err)
	return bo.Wait(ctx)
}

// publish hands events of partition p to every subscription, each with the
// position the hub reaches with it. A subscription whose buffer is full is
// closed with ErrLagged rather than waited for.
func (h *Hub) publish(p int, events []order.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range events {
		h.pos[p] = events[i].Cursor
		events[i].Position = h.pos.Clone()
	}
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
	close(h.appended)
	h.appended = make(chan struct{})
	if h.opts.OnPublish != nil {
		now := time.Now()
		for _, ev := range events {
			h.opts.OnPublish(ev, now)
		}
	}
}

// Appended returns the hub's position, one cursor per partition (nil
// before the hub knows it), and a channel closed when the next events
// reach it: a consumer of a group waits on it for new events, and reads
// the partitions whose cursor moved, without holding a subscription.
func (h *Hub) Appended() (order.Position, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pos.Clone(), h.appended
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
