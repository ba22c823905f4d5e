package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// fakeLog is an in-memory Log: a slice of events guarded by a mutex, with a
// channel that is closed and replaced whenever something changes, to wake
// the readers that wait.
type fakeLog struct {
	mu      sync.Mutex
	events  []order.Event
	changed chan struct{}
	// livePaused makes waiting reads (the hub's) see nothing new until
	// resumed; reads that do not wait (replays) are not affected.
	livePaused bool
	// tailGate, when not nil, holds Tail until it is closed.
	tailGate chan struct{}
	// tailErrs is how many calls to Tail fail before one succeeds.
	tailErrs int
	// reject maps cursors to the error CheckCursor gives for them.
	reject  map[order.Offset]error
	checked []order.Offset
	// partitions is the number of partitions; add appends to partition 0,
	// addTo to any.
	partitions int
	// liveErr, when set, is what waiting reads (the hub's) return.
	liveErr error
	// replayReads counts the reads that do not wait (replays').
	replayReads int
}

func newFakeLog() *fakeLog {
	return &fakeLog{changed: make(chan struct{}), reject: make(map[order.Offset]error), partitions: 1}
}

// cursorAt is the cursor of the i-th event (from 0): three events per
// millisecond, so that both parts of a cursor matter.
func cursorAt(i int) order.Offset {
	return order.Offset{Ms: 1_700_000_000_000 + uint64(i/3), Seq: uint64(i % 3)}
}

// notify wakes the waiting readers. The caller holds mu.
func (l *fakeLog) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// add appends n events to partition 0 and returns them.
func (l *fakeLog) add(n int) []order.Event { return l.addTo(0, n) }

// addTo appends n events to a partition and returns them.
func (l *fakeLog) addTo(p, n int) []order.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []order.Event
	for range n {
		i := len(l.events)
		ev := order.Event{
			Partition: p,
			Offset:    cursorAt(i),
			OrderID:   fmt.Sprintf("ord-%d", i),
			ExpiredAt: time.UnixMilli(int64(cursorAt(i).Ms)),
			Metadata:  map[string]string{"i": fmt.Sprint(i)},
		}
		l.events = append(l.events, ev)
		out = append(out, ev)
	}
	l.notify()
	return out
}

// at returns the i-th event.
func (l *fakeLog) at(i int) order.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.events[i]
}

// failLive makes the hub's reads fail with err, or succeed again with nil.
func (l *fakeLog) failLive(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.liveErr = err
	l.notify()
}

// reads is the number of replay reads so far.
func (l *fakeLog) reads() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.replayReads
}

func (l *fakeLog) pauseLive(paused bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.livePaused = paused
	l.notify()
}

func (l *fakeLog) Partitions(context.Context) (int, error) { return l.partitions, nil }

func (l *fakeLog) Events(ctx context.Context, p int, after order.Offset, limit int, wait time.Duration) ([]order.Event, error) {
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	l.mu.Lock()
	if wait <= 0 {
		l.replayReads++
	}
	l.mu.Unlock()
	for {
		l.mu.Lock()
		if err := l.liveErr; err != nil && wait > 0 {
			l.mu.Unlock()
			return nil, err
		}
		var out []order.Event
		if wait <= 0 || !l.livePaused {
			i := sort.Search(len(l.events), func(i int) bool { return after.Less(l.events[i].Offset) })
			for _, ev := range l.events[i:] {
				if ev.Partition == p && len(out) < limit {
					out = append(out, ev)
				}
			}
		}
		changed := l.changed
		l.mu.Unlock()
		if len(out) > 0 || wait <= 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timeout:
			return nil, nil
		case <-changed:
		}
	}
}

func (l *fakeLog) Tail(ctx context.Context, p int) (order.Offset, error) {
	l.mu.Lock()
	gate := l.tailGate
	l.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return order.Offset{}, ctx.Err()
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tailErrs > 0 {
		l.tailErrs--
		return order.Offset{}, errors.New("tail: connection refused")
	}
	for _, ev := range slices.Backward(l.events) {
		if ev.Partition == p {
			return ev.Offset, nil
		}
	}
	return order.Offset{}, nil
}

func (l *fakeLog) CheckCursor(_ context.Context, offsets ...order.Offset) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range offsets {
		l.checked = append(l.checked, c)
		if err := l.reject[c]; err != nil {
			return err
		}
	}
	return nil
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// runningHub is a hub with Run going in a goroutine.
type runningHub struct {
	*Hub
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returns
	err    error         // what Run returned
}

// stop ends Run and waits for it.
func (h *runningHub) stop(t *testing.T) {
	t.Helper()
	h.cancel()
	select {
	case <-h.done:
		if h.err != nil {
			t.Errorf("Run = %v, want nil", h.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// startHub starts a hub over log, stopped when the test ends.
func startHub(t *testing.T, log Log, buffer int) *runningHub {
	t.Helper()
	return startHubWith(t, log, Options{Buffer: buffer})
}

// startHubWith starts a hub with the given options, logging nowhere.
func startHubWith(t *testing.T, log Log, opts Options) *runningHub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	opts.Logger = discard
	h := &runningHub{Hub: NewHub(log, opts), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		h.err = h.Run(ctx)
	}()
	t.Cleanup(func() { h.stop(t) })
	return h
}

// subscribed is the number of subscriptions of h, without the watches
// still replaying (which Watchers counts too).
func subscribed(h *Hub) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// subscribe subscribes, failing the test on error.
func subscribe(t *testing.T, h *Hub) *Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := h.Subscribe(ctx)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	return s
}

// recv returns the next event of s, failing the test if none comes.
func recv(t *testing.T, s *Subscription) order.Event {
	t.Helper()
	select {
	case ev := <-s.C:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatalf("no event within 5s (done: %v)", s.Err())
		return order.Event{}
	}
}

// eventually polls cond until it holds, failing the test after 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func cursors(evs []order.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Offset.String()
	}
	return out
}
