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
	"sync/atomic"
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
	Events(ctx context.Context, partition int, after order.Offset, limit int, wait time.Duration) ([]order.Event, error)
	// Tail returns the cursor of a partition's last event.
	Tail(ctx context.Context, partition int) (order.Offset, error)
	// CheckCursor says whether a watch can resume after each cursor, each
	// of its partition, without a gap.
	CheckCursor(ctx context.Context, cursors ...order.Offset) error
}

// ErrLagged closes a subscription whose buffer was full: its watcher fell
// too far behind the log. Follow then reads on from the log (see Follow).
var ErrLagged = errors.New("watcher fell behind the expiration log")

// ErrStopped closes every subscription when the hub stops.
var ErrStopped = errors.New("server is shutting down")

const (
	// readBatch is how many events one read of the log may return. In
	// a burst each read waits in Redis behind the sweepers' claims
	// (about 2 ms each), so the reader keeps up only by taking more
	// events a trip: in benchmark 1b (100,000 due within a second) the
	// time from an order's claim to its REST watcher was, in seven runs
	// of each, p50 9 to 15 ms and p99 24 to 49 ms with 1,024 against p50
	// 12 to 65 ms and p99 40 to 106 ms with 512.
	readBatch = 1024
	// readWait is how long one read blocks for new events; it also bounds
	// how long the hub takes to notice that it must stop.
	readWait = time.Second
)

// ErrTooManyWatchers refuses a subscription past MaxWatchers.
var ErrTooManyWatchers = errors.New("too many watchers")

// DefaultMaxReplays is the number of watches that may replay at once when
// MaxReplays is not set: enough to keep a replica busy catching watchers
// up, few enough that their batches of events (up to replayBatch each) stay
// a few megabytes in all.
const DefaultMaxReplays = 8

// Options configure a hub.
type Options struct {
	// Buffer is how many events a subscription may fall behind before it
	// is closed (a watch of Follow then reads on from the log); at least 1.
	Buffer int
	// MaxWatchers bounds the open subscriptions, counting the watches
	// still replaying before they subscribe; 0 means no bound.
	MaxWatchers int
	// MaxReplays bounds the watches that replay from the log at once; the
	// others wait their turn (see Follow). 0 means DefaultMaxReplays.
	MaxReplays int
	// OnPublish, when set, is called with each event as it reaches the
	// subscriptions, and the time it did.
	OnPublish func(ev order.Event, at time.Time)
	// OnCatchUp, when set, is called each time a watch of Follow falls
	// behind its buffer and so is to read on from the log. The hub calls it
	// with its lock held: it must be quick and must not call the hub.
	OnCatchUp func()
	// OnRepeat, when set, is called for each repeat of an expiration that
	// a watcher or a group is not sent (see repeats.go).
	OnRepeat func()
	// OnRewind, when set, is called when the hub finds that a partition's
	// log lost events it had read (see repeats.go).
	OnRewind func(partition int)
	// Logger receives the hub's warnings; nil means slog.Default().
	Logger *slog.Logger
}

// Hub tails the log and fans events out to subscriptions.
type Hub struct {
	opts Options
	log  Log

	ready     chan struct{} // closed once the starting position is known, or on stop
	readyOnce sync.Once
	// startFailed is closed when a first attempt to find the starting
	// position fails, so that a live watch need not wait for it.
	startFailed     chan struct{}
	startFailedOnce sync.Once

	// replays holds a token per replay reading or sending a batch.
	replays     chan struct{}
	replaysOnce sync.Once

	mu  sync.Mutex
	pos order.Cursor // the last event of each partition handed to subscribers
	// subs is the fan-out: the subscriptions of the watchers in stateLive.
	subs map[*Subscription]struct{}
	// placed counts the watchers that hold a place under MaxWatchers:
	// those in every state but new and closed (see state).
	placed int
	// failing holds, by partition, why the hub's last read of it failed,
	// until one succeeds; -1 stands for the start, before the hub knows
	// where the log ends.
	failing map[int]error
	stopped bool
	// appended is closed and replaced each time events reach the hub (see
	// Appended).
	appended chan struct{}
	// memory holds, by partition, the last expirations read (see
	// repeats.go); delivered, by group and partition, the furthest event
	// delivered to the group on this replica.
	memory  []memory
	rewinds []rewind
	// rewound is set once any partition's log went back: until then no
	// event is a repeat a reader had, and the check of each event by each
	// reader takes no lock.
	rewound atomic.Bool
	// groupsMu guards delivered, which DropRepeats reads and writes
	// around calls that take mu.
	groupsMu  sync.Mutex
	delivered map[string]map[int]*groupMark
}

// NewHub returns a hub over log.
func NewHub(log Log, opts Options) *Hub {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.Buffer = max(opts.Buffer, 1)
	return &Hub{
		opts:        opts,
		log:         log,
		ready:       make(chan struct{}),
		startFailed: make(chan struct{}),
		subs:        make(map[*Subscription]struct{}),
		failing:     make(map[int]error),
		appended:    make(chan struct{}),
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
	w    *watcher // whose subscription it is
	done chan struct{}
	err  error // set before done is closed
	// missed is the first event that did not fit in the buffer, set when
	// the subscription is closed with ErrLagged.
	missed order.Event
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
	if s.w.sub == s {
		s.hub.move(s.w, stateClosed, nil)
	}
}

// Subscribe starts a subscription at the hub's current position. It waits
// until the hub knows where the log ends.
func (h *Hub) Subscribe(ctx context.Context) (*Subscription, error) {
	_, sub, err := h.admit(ctx, stateLive, false)
	return sub, err
}

// readable waits until the hub has tried to find where the log ends, and
// returns why it cannot read the log now (KindUnavailable), or nil: a live
// watch gets its events from the hub's reads alone, so while they fail it
// would be accepted and left silent.
func (h *Hub) readable(ctx context.Context) error {
	select {
	case <-h.ready:
	case <-h.startFailed:
	case <-ctx.Done():
		return ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, err := range h.failing {
		return order.Unavailable(err)
	}
	return nil
}

// failed records that a read of partition p (-1: the start) failed.
func (h *Hub) failed(p int, err error) {
	h.mu.Lock()
	h.failing[p] = err
	h.mu.Unlock()
	if p < 0 {
		h.startFailedOnce.Do(func() { close(h.startFailed) })
	}
}

// recovered records that a read of partition p (-1: the start) succeeded.
func (h *Hub) recovered(p int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.failing, p)
}

// replaySlot waits for one of the MaxReplays slots, for one batch of a
// replay, and returns the function that gives it back (it may be called
// more than once). It fails when ctx ends.
func (h *Hub) replaySlot(ctx context.Context) (func(), error) {
	h.replaysOnce.Do(func() {
		n := h.opts.MaxReplays
		if n <= 0 {
			n = DefaultMaxReplays
		}
		h.replays = make(chan struct{}, n)
	})
	select {
	case h.replays <- struct{}{}:
		return sync.OnceFunc(func() { <-h.replays }), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Run tails every partition of the log until ctx ends, then closes every
// subscription with ErrStopped.
func (h *Hub) Run(ctx context.Context) error {
	defer h.stop()
	var bo backoff.Backoff
	n, err := h.log.Partitions(ctx)
	for err != nil {
		if ctx.Err() != nil || !h.pause(ctx, &bo, -1, err, "partitions") {
			return nil
		}
		n, err = h.log.Partitions(ctx)
	}
	pos := make(order.Cursor, n)
	for p := 0; p < n; {
		c, err := h.log.Tail(ctx, p)
		if err == nil {
			pos[p] = c
			p++
			continue
		}
		if ctx.Err() != nil || !h.pause(ctx, &bo, -1, err, "tail") {
			return nil
		}
	}
	h.mu.Lock()
	h.pos = pos
	h.memory = newMemories(n)
	h.rewinds = make([]rewind, n)
	delete(h.failing, -1)
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
func (h *Hub) tail(ctx context.Context, p int, after order.Offset) {
	var bo backoff.Backoff
	failing := false
	for {
		events, err := h.log.Events(ctx, p, after, readBatch, readWait)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failing = true
			if !h.pause(ctx, &bo, p, err, "read") {
				return
			}
			continue
		}
		if failing {
			failing = false
			h.recovered(p)
			h.checkRewind(ctx, p, after)
		}
		bo.Reset()
		if len(events) > 0 {
			if from, wentBack := h.publish(p, events); wentBack {
				h.reportRewind(ctx, p, from)
			}
			after = events[len(events)-1].Offset
		}
	}
}

// pause records and logs a failed read of partition p of the log (-1: of
// where it ends, at the start) and waits before the next try; it returns
// false when ctx ended meanwhile.
func (h *Hub) pause(ctx context.Context, bo *backoff.Backoff, p int, err error, what string) bool {
	h.failed(p, err)
	h.opts.Logger.Warn("watch: cannot read the expiration log; retrying", "op", what, "err", err)
	return bo.Wait(ctx)
}

// publish hands events of partition p to every subscription, each with the
// position the hub reaches with it. A subscription whose buffer is full is
// closed with ErrLagged rather than waited for; a watch of Follow keeps its
// place under MaxWatchers (stateLagged) to catch up from the log. It
// returns where the log went back, and true, when one of the events is the
// first repeat of a rewind the hub had not noticed, for the caller to
// report once it has let go of mu.
func (h *Hub) publish(p int, events []order.Event) (wentBackAfter order.Offset, wentBack bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range events {
		// The first repeat tells where the log went back, if the hub did
		// not notice it when its read recovered.
		if c0, ok := h.memory[p].see(events[i]); ok && h.rewinds[p].from.Less(c0) && h.noteRewind(p, h.pos[p]) {
			wentBackAfter, wentBack = h.pos[p], true
		}
		h.pos[p] = events[i].Offset
		events[i].Cursor = h.pos.Clone()
	}
	for s := range h.subs {
		for _, ev := range events {
			select {
			case s.ch <- ev:
				continue
			default:
				s.missed = ev
				if s.w.follows {
					if h.opts.OnCatchUp != nil {
						h.opts.OnCatchUp()
					}
					h.move(s.w, stateLagged, ErrLagged)
				} else {
					h.move(s.w, stateClosed, ErrLagged)
				}
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
	return wentBackAfter, wentBack
}

// Appended returns the hub's position, one cursor per partition (nil
// before the hub knows it), and a channel closed when the next events
// reach it: a consumer of a group waits on it for new events, and reads
// the partitions whose cursor moved, without holding a subscription.
func (h *Hub) Appended() (order.Cursor, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pos.Clone(), h.appended
}

func (h *Hub) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	h.readyOnce.Do(func() { close(h.ready) })
	for s := range h.subs {
		h.move(s.w, stateClosed, ErrStopped)
	}
}
