package watch

import (
	"context"
	"fmt"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// state is where a watcher stands with its hub. A watcher holds one place
// under MaxWatchers in every state from its admission until it is closed, so
// the hub counts places rather than subscriptions and reservations.
//
// The moves, all made by Hub.move under the hub's lock:
//
//	stateNew       → stateReplaying  admit: a watch of Follow with a position, before it reads the log
//	stateNew       → stateLive       admit: Subscribe, or a watch of Follow without a position
//	stateReplaying → stateLive       join: the replay reached the log's end; the place it held goes to the subscription
//	stateLive      → stateLagged     publish: the buffer of a watch of Follow overflowed; the hub keeps its place
//	stateLagged    → stateReplaying  resume: Follow sent what the buffer held and reads on from the log
//	stateLive      → stateClosed     Close, leave, stop, or a buffer overflow of a plain Subscribe
//	stateReplaying → stateClosed     leave, or join when ctx ended or the hub stopped
//	stateLagged    → stateClosed     leave: the watch ended before it read on from the log
//
// Any other move is a bug in this package, and panics.
type state int

const (
	// stateNew is a watcher not yet admitted: it holds no place.
	stateNew state = iota
	// stateReplaying reads the log (see Follow), off the fan-out: a watch
	// that starts at a position, or one catching up after it lagged. Its
	// reads take the MaxReplays slots (replaySlot) one batch at a time; so
	// does the short replay of a watcher just gone live, of the events
	// between its replay and its subscription.
	stateReplaying
	// stateLive is on the fan-out: its subscription is in the hub's subs
	// and gets each event the hub reads.
	stateLive
	// stateLagged was taken off the fan-out when its buffer overflowed
	// (its subscription ended with ErrLagged); the hub kept its place for
	// the catch-up that Follow is to start.
	stateLagged
	// stateClosed holds no place and moves no more.
	stateClosed
)

var stateNames = [...]string{"new", "replaying", "live", "lagged", "closed"}

func (s state) String() string { return stateNames[s] }

// moves lists, by state, the states a watcher may move to (see state).
var moves = [...][]state{
	stateNew:       {stateReplaying, stateLive},
	stateReplaying: {stateLive, stateClosed},
	stateLive:      {stateLagged, stateClosed},
	stateLagged:    {stateReplaying, stateClosed},
	stateClosed:    nil,
}

// watcher is one watch's record with the hub; the hub's lock guards it.
type watcher struct {
	state state
	// follows says the watcher is a watch of Follow, which catches up from
	// the log when it lags (stateLagged) rather than being closed.
	follows bool
	// sub is its subscription, from when it goes live until it leaves
	// stateLive.
	sub *Subscription
}

// move moves w to state to and keeps the hub's books: a watcher takes a
// place when admitted and gives it back when closed; going live it gets a
// subscription on the fan-out, and leaving stateLive that subscription ends
// with why. The caller holds mu. A move that the lifecycle does not allow
// panics.
func (h *Hub) move(w *watcher, to state, why error) {
	legal := false
	for _, s := range moves[w.state] {
		legal = legal || s == to
	}
	if !legal {
		panic(fmt.Sprintf("watch: a watcher cannot move from %v to %v", w.state, to))
	}
	switch w.state {
	case stateNew:
		h.placed++
	case stateLive:
		delete(h.subs, w.sub)
		w.sub.err = why
		close(w.sub.done)
		w.sub = nil
	}
	switch to {
	case stateLive:
		ch := make(chan order.Event, h.opts.Buffer)
		w.sub = &Subscription{From: h.pos.Clone(), C: ch, ch: ch, hub: h, w: w, done: make(chan struct{})}
		h.subs[w.sub] = struct{}{}
	case stateClosed:
		h.placed--
	}
	w.state = to
}

// admit takes a place under MaxWatchers for a new watcher and moves it to
// first: stateLive, once the hub knows where the log ends, or
// stateReplaying, at once. It returns the watcher and, live, its
// subscription (read here, under mu: the hub may close it as soon as mu is
// free). It refuses with ErrTooManyWatchers at the limit, and a live
// watcher with ErrStopped once the hub stopped.
func (h *Hub) admit(ctx context.Context, first state, follows bool) (*watcher, *Subscription, error) {
	if first == stateLive {
		select {
		case <-h.ready:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if first == stateLive && h.stopped {
		return nil, nil, ErrStopped
	}
	if h.atLimit() {
		return nil, nil, ErrTooManyWatchers
	}
	w := &watcher{follows: follows}
	h.move(w, first, nil)
	return w, w.sub, nil
}

// join moves a replaying watcher onto the fan-out, in the place it holds,
// once the hub knows where the log ends; it returns the subscription. When
// ctx ends first or the hub stopped, it closes the watcher instead.
func (h *Hub) join(ctx context.Context, w *watcher) (*Subscription, error) {
	var err error
	select {
	case <-h.ready:
	case <-ctx.Done():
		err = ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil && h.stopped {
		err = ErrStopped
	}
	if err != nil {
		h.move(w, stateClosed, nil)
		return nil, err
	}
	h.move(w, stateLive, nil)
	return w.sub, nil
}

// resume moves a lagged watcher back to replaying: the place the hub kept
// is its catch-up's.
func (h *Hub) resume(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.move(w, stateReplaying, nil)
}

// leave closes a watcher in whatever state it is, giving back its place;
// one the hub closed already (it stopped) is left as it is.
func (h *Hub) leave(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.state != stateClosed {
		h.move(w, stateClosed, nil)
	}
}

// atLimit says whether a watcher would now be refused for MaxWatchers. The
// caller holds mu.
func (h *Hub) atLimit() bool {
	return h.opts.MaxWatchers > 0 && h.placed >= h.opts.MaxWatchers
}

// Watchers returns the number of watchers that hold a place: open
// subscriptions, and watches replaying or catching up from the log.
func (h *Hub) Watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.placed
}
