package watch

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// follower is one Follow call running in a goroutine.
type follower struct {
	cancel context.CancelFunc
	done   chan struct{}
	// position is what Follow returned, cursor its one part in a log of
	// one partition; both are set before done is closed.
	position order.Cursor
	cursor   order.Offset
	err      error

	mu       sync.Mutex
	sent     []order.Event
	live     []bool // whether each sent event came live
	started  int
	lateCall bool // started was called after an event was sent
}

// follow starts h.Follow in a log of one partition; followAt in any.
func follow(t *testing.T, h *Hub, after *order.Offset, startedErr error, onSend func(i int, ev order.Event) error) *follower {
	var pos order.Cursor
	if after != nil {
		pos = order.Cursor{*after}
	}
	return followAt(t, h, pos, startedErr, onSend)
}

// followAt starts h.Follow. onSend, when not nil, runs inside send before the
// event counts as sent, with the index of the event; its error fails the
// send. startedErr is what started returns.
func followAt(t *testing.T, h *Hub, after order.Cursor, startedErr error, onSend func(i int, ev order.Event) error) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{cancel: cancel, done: make(chan struct{})}
	started := func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.started++
		return startedErr
	}
	send := func(ev order.Event, live bool) error {
		f.mu.Lock()
		i := len(f.sent)
		if f.started != 1 {
			f.lateCall = true
		}
		f.mu.Unlock()
		if onSend != nil {
			if err := onSend(i, ev); err != nil {
				return err
			}
		}
		f.mu.Lock()
		f.sent = append(f.sent, ev)
		f.live = append(f.live, live)
		f.mu.Unlock()
		return nil
	}
	go func() {
		defer close(f.done)
		f.position, f.err = h.Follow(ctx, after, started, send)
		if len(f.position) == 1 {
			f.cursor = f.position[0]
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-f.done
	})
	return f
}

func (f *follower) sentEvents() []order.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sent)
}

func (f *follower) startedCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started
}

// waitSent waits until n events were sent.
func (f *follower) waitSent(t *testing.T, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d events sent", n), func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.sent) >= n
	})
}

// wait waits for Follow to return.
func (f *follower) wait(t *testing.T) (order.Offset, error) {
	t.Helper()
	select {
	case <-f.done:
		return f.cursor, f.err
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not return")
		return order.Offset{}, nil
	}
}

// stop cancels Follow's context and waits for it.
func (f *follower) stop(t *testing.T) (order.Offset, error) {
	t.Helper()
	f.cancel()
	return f.wait(t)
}

func checkSent(t *testing.T, f *follower, want []order.Event) {
	t.Helper()
	got := f.sentEvents()
	if !slices.Equal(cursors(got), cursors(want)) {
		t.Fatalf("sent %d events %v\nwant %d events %v", len(got), abbreviate(cursors(got)), len(want), abbreviate(cursors(want)))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started != 1 {
		t.Errorf("started called %d times, want once", f.started)
	}
	if f.lateCall {
		t.Error("an event was sent before started was called")
	}
}

func abbreviate(s []string) []string {
	if len(s) <= 12 {
		return s
	}
	return append(append(slices.Clone(s[:5]), "…"), s[len(s)-5:]...)
}

func TestFollowLive(t *testing.T) {
	tests := []struct {
		name    string
		initial int
		live    int
		batch   bool
	}{
		{name: "empty log one event", initial: 0, live: 1},
		{name: "old events are not sent", initial: 3, live: 4},
		{name: "live events in one batch", initial: 3, live: 5, batch: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			log.add(tt.initial)
			h := startHub(t, log, 64)
			f := follow(t, h.Hub, nil, nil, nil)
			eventually(t, "the watch to subscribe", func() bool { return subscribed(h.Hub) == 1 })
			var want []order.Event
			if tt.batch {
				want = log.add(tt.live)
			} else {
				for range tt.live {
					want = append(want, log.add(1)...)
				}
			}
			f.waitSent(t, tt.live)
			cursor, err := f.stop(t)
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Follow = %v, want context.Canceled", err)
			}
			checkSent(t, f, want)
			if last := want[len(want)-1].Offset; cursor != last {
				t.Errorf("returned cursor %v, want the last sent %v", cursor, last)
			}
			if len(log.checked) != 0 {
				t.Errorf("CheckCursor called with %v for a watch without a cursor", log.checked)
			}
			if n := h.Watchers(); n != 0 {
				t.Errorf("Watchers = %d after Follow returned, want 0", n)
			}
		})
	}
}

func TestFollowNoEventsReturnsStart(t *testing.T) {
	tests := []struct {
		name    string
		initial int
		after   int // index of the cursor to resume after; -1: none
	}{
		{name: "live on an empty log", initial: 0, after: -1},
		{name: "live returns the tail", initial: 4, after: -1},
		{name: "after the tail returns it", initial: 4, after: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			log.add(tt.initial)
			h := startHub(t, log, 8)
			var after *order.Offset
			if tt.after >= 0 {
				c := log.at(tt.after).Offset
				after = &c
			}
			f := follow(t, h.Hub, after, nil, nil)
			eventually(t, "the watch to subscribe", func() bool { return subscribed(h.Hub) == 1 })
			cursor, err := f.stop(t)
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Follow = %v, want context.Canceled", err)
			}
			var want order.Offset
			if tt.initial > 0 {
				want = log.at(tt.initial - 1).Offset
			}
			if cursor != want {
				t.Errorf("returned cursor %v, want the start %v", cursor, want)
			}
			checkSent(t, f, nil)
		})
	}
}

func TestFollowReplay(t *testing.T) {
	const (
		// The hub hands out the events appended during the replay before
		// the watch subscribes: the watch must read them from the log.
		hubAhead = "hub ahead"
		// The hub reads nothing new from the log until the watch has
		// subscribed: events the watch replayed come again live and must
		// be skipped.
		hubBehind = "hub behind"
	)
	tests := []struct {
		name     string
		initial  int
		after    int    // index of the cursor to resume after; -1: the zero cursor
		unseen   int    // events appended while the hub is paused, before the watch starts (hub behind only)
		during   int    // events appended from inside send while replaying
		scenario string // how the hub stands when the watch subscribes
		slow     bool   // the first sends are slow
		live     int
	}{
		{name: "replay then live", initial: 10, after: 2, live: 2},
		{name: "zero cursor replays everything", initial: 10, after: -1, live: 1},
		{name: "after the tail goes live at once", initial: 5, after: 4, live: 3},
		{name: "slow send", initial: 6, after: 0, slow: true, live: 2},
		{name: "appended during the replay, hub ahead", initial: 10, after: 2, during: 2, scenario: hubAhead, live: 2},
		{name: "appended during the replay, hub behind", initial: 10, after: 2, during: 2, scenario: hubBehind, live: 2},
		{name: "replayed events the hub has not read", initial: 10, after: 2, unseen: 4, scenario: hubBehind, live: 2},
		{name: "unread and appended during the replay, hub behind", initial: 6, after: 1, unseen: 3, during: 2, scenario: hubBehind, live: 1},
		{name: "appended during a slow replay, hub ahead", initial: 8, after: 0, during: 5, scenario: hubAhead, slow: true, live: 1},
		{name: "appended during a slow replay, hub behind", initial: 8, after: 0, during: 5, scenario: hubBehind, slow: true, live: 1},
		{name: "one batch less one", initial: replayBatch, after: 0, live: 1},
		{name: "exactly one batch", initial: replayBatch + 1, after: 0, live: 1},
		{name: "one batch and one", initial: replayBatch + 2, after: 0, live: 1},
		{name: "several batches, hub ahead", initial: 2*replayBatch + 500, after: -1, during: 3, scenario: hubAhead, live: 2},
		{name: "several batches, hub behind", initial: 2*replayBatch + 500, after: -1, unseen: 10, during: 3, scenario: hubBehind, live: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			log.add(tt.initial)
			h := startHub(t, log, 64)
			watchers := 1
			var observer *Subscription
			if tt.scenario == hubAhead {
				observer = subscribe(t, h.Hub)
				watchers++
			}
			var after order.Offset
			if tt.after >= 0 {
				after = log.at(tt.after).Offset
			}
			var unseen []order.Event
			if tt.scenario == hubBehind {
				// Subscribing makes sure that the hub has its start
				// position before it is paused.
				subscribe(t, h.Hub).Close()
				log.pauseLive(true)
				unseen = log.add(tt.unseen)
			}
			var (
				duringMu sync.Mutex
				during   []order.Event
			)
			onSend := func(i int, ev order.Event) error {
				if tt.slow && i < 3 {
					time.Sleep(10 * time.Millisecond)
				}
				if i != 1 || tt.during == 0 {
					return nil
				}
				added := log.add(tt.during)
				duringMu.Lock()
				during = added
				duringMu.Unlock()
				if tt.scenario == hubAhead {
					// Wait until the hub has handed them out, so that the
					// watch subscribes past them.
					for _, want := range added {
						select {
						case got := <-observer.C:
							if got.Offset != want.Offset {
								return fmt.Errorf("observer got %v, want %v", got.Offset, want.Offset)
							}
						case <-time.After(5 * time.Second):
							return errors.New("the hub did not publish the events appended during the replay")
						}
					}
				}
				return nil
			}
			f := follow(t, h.Hub, &after, nil, onSend)
			eventually(t, "the watch to subscribe", func() bool { return subscribed(h.Hub) == watchers })
			live := log.add(tt.live)
			if tt.scenario == hubBehind {
				log.pauseLive(false)
			}

			var want []order.Event
			for i := tt.after + 1; i < tt.initial; i++ {
				want = append(want, log.at(i))
			}
			duringMu.Lock()
			if len(during) != tt.during {
				t.Fatalf("%d events appended during the replay, want %d", len(during), tt.during)
			}
			want = append(append(append(want, unseen...), during...), live...)
			duringMu.Unlock()
			f.waitSent(t, len(want))
			// Anything more (a duplicate) would come with the live events;
			// one more live event makes sure the watch has passed them.
			extra := log.add(1)
			want = append(want, extra...)
			f.waitSent(t, len(want))
			cursor, err := f.stop(t)
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Follow = %v, want context.Canceled", err)
			}
			checkSent(t, f, want)
			if last := want[len(want)-1].Offset; cursor != last {
				t.Errorf("returned cursor %v, want the last sent %v", cursor, last)
			}
			if !slices.Equal(log.checked, []order.Offset{after}) {
				t.Errorf("CheckCursor called with %v, want [%v]", log.checked, after)
			}
		})
	}
}

// pauser holds sends while it is paused, as a watcher that stops reading
// for a while does.
type pauser struct {
	mu      sync.Mutex
	resume  chan struct{} // nil while not paused
	blocked chan struct{} // closed when a send is held
}

// pause makes the next sends wait until unpause; paused is closed once one
// waits.
func (p *pauser) pause() (paused <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resume, p.blocked = make(chan struct{}), make(chan struct{})
	return p.blocked
}

func (p *pauser) unpause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume != nil {
		close(p.resume)
		p.resume = nil
	}
}

func (p *pauser) onSend(int, order.Event) error {
	p.mu.Lock()
	resume, blocked := p.resume, p.blocked
	p.mu.Unlock()
	if resume == nil {
		return nil
	}
	select {
	case <-blocked:
	default:
		close(blocked)
	}
	<-resume
	return nil
}

// checkOnceInOrder says whether sent holds every event of want once, each
// partition in order, and each with the position it reaches from the
// watch's start, from.
func checkOnceInOrder(t *testing.T, sent, want []order.Event, from order.Cursor) {
	t.Helper()
	last := from.Clone()
	for i, ev := range sent {
		if !last.Behind(ev) {
			t.Fatalf("event %d (%s, partition %d, %v) is not after %v: out of order or twice", i, ev.OrderID, ev.Partition, ev.Offset, last)
		}
		last[ev.Partition] = ev.Offset
		if ev.Cursor.String() != last.String() {
			t.Fatalf("event %d (%s): position %v, want %v", i, ev.OrderID, ev.Cursor, last)
		}
	}
	got := map[string]bool{}
	for _, ev := range sent {
		got[ev.OrderID] = true
	}
	for _, ev := range want {
		if !got[ev.OrderID] {
			t.Fatalf("event %s was never sent (%d sent, %d wanted)", ev.OrderID, len(sent), len(want))
		}
	}
	if len(sent) != len(want) {
		t.Fatalf("sent %d events, want %d", len(sent), len(want))
	}
}

// TestFollowCatchUp: a watcher that stops reading for a while, long enough
// to overflow its buffer, then reads again, is not cut off: it reads on
// from the log and rejoins the fan-out, and gets every event once, in
// order, keeping its place under MaxWatchers all along.
func TestFollowCatchUp(t *testing.T) {
	const buffer = 4
	tests := []struct {
		name       string
		partitions int
		initial    int
		after      int // -1: no cursor
		pauses     int // times the watcher stops reading
		perPause   int // events appended, per partition, while it does
	}{
		{name: "live", partitions: 1, initial: 2, after: -1, pauses: 1, perPause: 5 * buffer},
		{name: "after a replay", partitions: 1, initial: 6, after: 0, pauses: 1, perPause: 5 * buffer},
		{name: "past one replay batch", partitions: 1, initial: 2, after: -1, pauses: 1, perPause: replayBatch + 10},
		{name: "again and again", partitions: 1, initial: 2, after: -1, pauses: 4, perPause: 3 * buffer},
		{name: "three partitions", partitions: 3, initial: 3, after: -1, pauses: 2, perPause: 2 * buffer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			log.partitions = tt.partitions
			var want []order.Event
			for p := range tt.partitions {
				want = append(want, log.addTo(p, tt.initial)...)
			}
			catchUps := 0
			var mu sync.Mutex
			h := startHubWith(t, log, Options{Buffer: buffer, MaxWatchers: 1, OnCatchUp: func() {
				mu.Lock()
				catchUps++
				mu.Unlock()
			}})
			var after, from order.Cursor
			if tt.after >= 0 {
				after = order.Cursor{log.at(tt.after).Offset}
				from = after
				want = want[tt.after+1:]
			} else {
				// A live watch gets what comes after it subscribed.
				probe := subscribe(t, h.Hub)
				probe.Close()
				from = probe.From
				want = nil
			}
			var p pauser
			f := followAt(t, h.Hub, after, nil, p.onSend)
			t.Cleanup(p.unpause)
			eventually(t, "the watch to subscribe", func() bool { return subscribed(h.Hub) == 1 })
			f.waitSent(t, len(want))
			started := len(want)

			for range tt.pauses {
				paused := p.pause()
				for part := range tt.partitions {
					want = append(want, log.addTo(part, 1)...)
				}
				select {
				case <-paused:
				case <-time.After(5 * time.Second):
					t.Fatal("the watcher did not get the first event of its pause")
				}
				// One event at a time, so that the hub offers each to the
				// stalled watch and overflows its buffer.
				for range tt.perPause - 1 {
					for part := range tt.partitions {
						want = append(want, log.addTo(part, 1)...)
					}
				}
				eventually(t, "the hub to drop the lagging subscription", func() bool { return subscribed(h.Hub) == 0 })
				if n := h.Watchers(); n != 1 {
					t.Fatalf("Watchers = %d while the watch is behind, want 1: it keeps its place", n)
				}
				refused := followAt(t, h.Hub, nil, nil, nil)
				if _, err := refused.wait(t); !errors.Is(err, ErrTooManyWatchers) {
					t.Fatalf("a watch while the only place is kept for a catch-up: %v, want ErrTooManyWatchers", err)
				}
				p.unpause()
				f.waitSent(t, len(want))
				// The watch may rejoin while the hub has still to read
				// the end of the pause from the log (it read it itself),
				// and fall behind again on what the hub then publishes:
				// it is back for good once the hub has read it all.
				eventually(t, "the hub to read the whole log", func() bool {
					h.mu.Lock()
					defer h.mu.Unlock()
					for part := range tt.partitions {
						if tail, _ := log.Tail(context.Background(), part); h.pos[part] != tail {
							return false
						}
					}
					return true
				})
				eventually(t, "the watch to rejoin the fan-out", func() bool { return subscribed(h.Hub) == 1 })
			}
			// Live again: the next events, fewer than the buffer holds,
			// come from the fan-out.
			before := len(f.sentEvents())
			for part := range tt.partitions {
				want = append(want, log.addTo(part, 1)...)
			}
			f.waitSent(t, len(want))
			select {
			case <-f.done:
				t.Fatalf("Follow returned %v; a slow watcher must not be cut off", f.err)
			default:
			}
			f.mu.Lock()
			liveFlags := slices.Clone(f.live)
			f.mu.Unlock()
			for i := before; i < len(liveFlags); i++ {
				if !liveFlags[i] {
					t.Errorf("event %d after the catch-up was replayed, want live", i)
				}
			}
			replayed := 0
			for _, live := range liveFlags[started:] {
				if !live {
					replayed++
				}
			}
			if replayed == 0 {
				t.Error("no event was read from the log: the watch did not catch up from it")
			}
			mu.Lock()
			// A watch that falls behind again while it rejoins catches up
			// once more.
			if catchUps < tt.pauses {
				t.Errorf("OnCatchUp called %d times, want at least %d", catchUps, tt.pauses)
			}
			mu.Unlock()
			if _, err := f.stop(t); !errors.Is(err, context.Canceled) {
				t.Errorf("Follow = %v, want context.Canceled", err)
			}
			sent := f.sentEvents()
			checkOnceInOrder(t, sent, want, from)
			if pos, got := f.position, sent[len(sent)-1].Cursor.String(); pos.String() != got {
				t.Errorf("returned %v, want the last sent position %v", pos, got)
			}
			if n := h.Watchers(); n != 0 {
				t.Errorf("Watchers = %d after the watch ended, want 0", n)
			}
		})
	}
}

// TestFollowCatchUpEnds: a watch that is behind ends, and gives its place
// back, when the log's retention has passed its next event (OUT_OF_RANGE,
// with the position it reached), or when its send fails or its context
// ends while the hub has dropped its subscription.
func TestFollowCatchUpEnds(t *testing.T) {
	const buffer = 2
	errGone := errors.New("client went away")
	tests := []struct {
		name    string
		retain  bool // the log no longer holds the first event that missed the buffer
		failing bool // the held send fails instead of going on
		cancel  bool // the watch's context ends while its send is held
	}{
		{name: "behind the retention", retain: true},
		{name: "send fails while behind", failing: true},
		{name: "context ends while behind", cancel: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			log.add(2)
			h := startHubWith(t, log, Options{Buffer: buffer, MaxWatchers: 1})
			subscribe(t, h.Hub).Close()
			held, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			f := follow(t, h.Hub, nil, nil, func(i int, ev order.Event) error {
				if i != 0 {
					return nil
				}
				close(held)
				<-release
				if tt.failing {
					return errGone
				}
				return nil
			})
			t.Cleanup(func() { once.Do(func() { close(release) }) })
			eventually(t, "the watch to subscribe", func() bool { return subscribed(h.Hub) == 1 })
			first := log.add(1)[0]
			<-held
			more := log.add(buffer + 3)
			missed := more[buffer] // the first that did not fit
			if tt.retain {
				log.mu.Lock()
				log.reject[missed.Offset] = order.Errorf(order.KindOutOfRange, "after_cursor %s is older than the retention period", missed.Offset)
				log.mu.Unlock()
			}
			eventually(t, "the hub to drop the lagging subscription", func() bool { return subscribed(h.Hub) == 0 })
			if tt.cancel {
				f.cancel()
			}
			once.Do(func() { close(release) })
			_, err := f.wait(t)
			pos := f.position
			switch {
			case tt.retain:
				if k := order.KindOf(err); k != order.KindOutOfRange || !errors.Is(err, ErrLagged) {
					t.Fatalf("Follow = %v (kind %d), want KindOutOfRange wrapping ErrLagged", err, k)
				}
				// It sent what its buffer held, then found the gap.
				checkSent(t, f, append([]order.Event{first}, more[:buffer]...))
				last := more[buffer-1].Offset
				if pos.String() != last.String() {
					t.Errorf("returned %v, want the last sent %v", pos, last)
				}
				if msg := err.Error(); !strings.Contains(msg, "after_cursor="+last.String()) {
					t.Errorf("message %q does not give after_cursor=%v", msg, last)
				}
			default:
				if !errors.Is(err, errGone) && !errors.Is(err, context.Canceled) {
					t.Fatalf("Follow = %v, want the send's error or context.Canceled", err)
				}
			}
			if n := h.Watchers(); n != 0 {
				t.Errorf("Watchers = %d after the watch ended, want 0: the place kept for its catch-up leaked", n)
			}
		})
	}
}

func TestFollowHubStops(t *testing.T) {
	tests := []struct {
		name        string
		initial     int
		after       int  // -1: no cursor
		stopFirst   bool // the hub stops before Follow is called
		live        int  // live events received before the stop
		wantCursor  int  // index of the event whose cursor is returned; -1: the zero cursor
		wantStarted int
	}{
		{name: "live after events", initial: 2, after: -1, live: 2, wantCursor: 3, wantStarted: 1},
		{name: "live before any event", initial: 3, after: -1, wantCursor: 2, wantStarted: 1},
		{name: "replayed then live", initial: 5, after: 1, live: 1, wantCursor: 5, wantStarted: 1},
		{name: "stopped already, with a cursor", initial: 5, after: 1, stopFirst: true, wantCursor: 4, wantStarted: 1},
		// Refused before it starts, as a watch past MaxWatchers is.
		{name: "stopped already, without a cursor", initial: 5, after: -1, stopFirst: true, wantCursor: -1, wantStarted: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			log.add(tt.initial)
			h := startHub(t, log, 8)
			if tt.stopFirst {
				h.stop(t)
			}
			var after *order.Offset
			replayed := 0
			if tt.after >= 0 {
				c := log.at(tt.after).Offset
				after = &c
				replayed = tt.initial - tt.after - 1
			}
			f := follow(t, h.Hub, after, nil, nil)
			if !tt.stopFirst {
				eventually(t, "the watch to subscribe", func() bool { return subscribed(h.Hub) == 1 })
				log.add(tt.live)
				f.waitSent(t, replayed+tt.live)
				h.stop(t)
			}
			cursor, err := f.wait(t)
			if k := order.KindOf(err); k != order.KindUnavailable {
				t.Fatalf("Follow = %v (kind %d), want KindUnavailable", err, k)
			}
			if !errors.Is(err, ErrStopped) {
				t.Errorf("Follow = %v, want it to wrap ErrStopped", err)
			}
			var want order.Offset
			if tt.wantCursor >= 0 {
				want = log.at(tt.wantCursor).Offset
			}
			if cursor != want {
				t.Errorf("returned cursor %v, want %v", cursor, want)
			}
			msg := err.Error()
			if tt.stopFirst && tt.after < 0 {
				// A live watch that never started has nothing to resume
				// from: replaying from 0-0 would not be what it asked for.
				if strings.Contains(msg, "after_cursor=") {
					t.Errorf("message %q gives a cursor to a watch that never started", msg)
				}
			} else if !strings.Contains(msg, "after_cursor="+want.String()) {
				t.Errorf("message %q does not give after_cursor=%v", msg, want)
			}
			if n := f.startedCalls(); n != tt.wantStarted {
				t.Errorf("started called %d times, want %d", n, tt.wantStarted)
			}
			if n := len(f.sentEvents()); n != replayed+tt.live {
				t.Errorf("sent %d events, want %d", n, replayed+tt.live)
			}
		})
	}
}

func TestFollowCheckCursorRejects(t *testing.T) {
	tests := []struct {
		name   string
		reject error
	}{
		{name: "out of range", reject: order.Errorf(order.KindOutOfRange, "after_cursor is older than the retention period")},
		{name: "unavailable", reject: order.Unavailable(errors.New("connection refused"))},
		{name: "plain error", reject: errors.New("boom")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			log.add(5)
			after := log.at(1).Offset
			log.reject[after] = tt.reject
			h := startHub(t, log, 8)
			f := follow(t, h.Hub, &after, nil, func(int, order.Event) error {
				return errors.New("send must not be called")
			})
			cursor, err := f.wait(t)
			if err != tt.reject {
				t.Errorf("Follow = %v, want the CheckCursor error %v itself", err, tt.reject)
			}
			if cursor != after {
				t.Errorf("returned cursor %v, want the given %v", cursor, after)
			}
			if n := f.startedCalls(); n != 0 {
				t.Errorf("started called %d times, want never", n)
			}
			if sent := f.sentEvents(); len(sent) != 0 {
				t.Errorf("sent %v, want nothing", cursors(sent))
			}
			if !slices.Equal(log.checked, []order.Offset{after}) {
				t.Errorf("CheckCursor called with %v, want [%v]", log.checked, after)
			}
			if n := h.Watchers(); n != 0 {
				t.Errorf("Watchers = %d, want 0", n)
			}
		})
	}
}

func TestFollowCallbackErrors(t *testing.T) {
	errStarted := errors.New("cannot send the header")
	errSend := errors.New("client went away")
	tests := []struct {
		name       string
		after      int   // -1: no cursor
		startedErr error // returned by started
		failAt     int   // index of the send that fails; -1: none
		live       int
		wantErr    error
		wantCursor int // index of the event whose cursor is returned; -1: the zero cursor
		wantSent   int
	}{
		{name: "started fails with a cursor", after: 1, startedErr: errStarted, failAt: -1, wantErr: errStarted, wantCursor: 1},
		{name: "started fails without a cursor", after: -1, startedErr: errStarted, failAt: -1, wantErr: errStarted, wantCursor: -1},
		{name: "send fails in the replay", after: 0, failAt: 2, wantErr: errSend, wantCursor: 2, wantSent: 2},
		{name: "send fails on the first replayed event", after: 0, failAt: 0, wantErr: errSend, wantCursor: 0, wantSent: 0},
		{name: "send fails live", after: -1, failAt: 1, live: 3, wantErr: errSend, wantCursor: 5, wantSent: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			log.add(5)
			h := startHub(t, log, 8)
			var after *order.Offset
			if tt.after >= 0 {
				c := log.at(tt.after).Offset
				after = &c
			}
			f := follow(t, h.Hub, after, tt.startedErr, func(i int, _ order.Event) error {
				if i == tt.failAt {
					return errSend
				}
				return nil
			})
			if tt.live > 0 {
				eventually(t, "the watch to subscribe", func() bool { return subscribed(h.Hub) == 1 })
				log.add(tt.live)
			}
			cursor, err := f.wait(t)
			if err != tt.wantErr {
				t.Errorf("Follow = %v, want %v", err, tt.wantErr)
			}
			var want order.Offset
			if tt.wantCursor >= 0 {
				want = log.at(tt.wantCursor).Offset
			}
			if cursor != want {
				t.Errorf("returned cursor %v, want %v", cursor, want)
			}
			if n := len(f.sentEvents()); n != tt.wantSent {
				t.Errorf("sent %d events, want %d", n, tt.wantSent)
			}
			if n := f.startedCalls(); n != 1 {
				t.Errorf("started called %d times, want once", n)
			}
			if n := h.Watchers(); n != 0 {
				t.Errorf("Watchers = %d after Follow returned, want 0", n)
			}
		})
	}
}

func TestFollowLeak(t *testing.T) {
	tests := []struct {
		name       string
		n          int
		withCursor bool
		early      bool // cancel each watch as soon as it is started
	}{
		{name: "live watches", n: 300},
		{name: "replaying watches", n: 300, withCursor: true},
		{name: "cancelled at once", n: 300, withCursor: true, early: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			log.add(20)
			h := startHub(t, log, 16)
			// The hub is up and idle.
			subscribe(t, h.Hub).Close()
			before := runtime.NumGoroutine()

			var (
				wg      sync.WaitGroup
				cancels []context.CancelFunc
				mu      sync.Mutex
				errs    []error
				got     = make([]int, tt.n)
			)
			for i := range tt.n {
				ctx, cancel := context.WithCancel(context.Background())
				cancels = append(cancels, cancel)
				var after order.Cursor
				if tt.withCursor {
					after = order.Cursor{log.at(i % 20).Offset}
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := h.Follow(ctx, after, func() error { return nil }, func(order.Event, bool) error {
						mu.Lock()
						got[i]++
						mu.Unlock()
						return nil
					})
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}()
			}
			if tt.early {
				for _, cancel := range cancels {
					cancel()
				}
			}
			eventually(t, fmt.Sprintf("%d watchers", tt.n), func() bool { return tt.early || subscribed(h.Hub) == tt.n })
			log.add(1)
			eventually(t, "every watch to get the live event", func() bool {
				if tt.early {
					return true
				}
				mu.Lock()
				defer mu.Unlock()
				for i, n := range got {
					want := 1
					if tt.withCursor {
						want += 19 - i%20
					}
					if n < want {
						return false
					}
				}
				return true
			})
			for _, cancel := range cancels {
				cancel()
			}
			finished := make(chan struct{})
			go func() { wg.Wait(); close(finished) }()
			select {
			case <-finished:
			case <-time.After(10 * time.Second):
				t.Fatal("Follow calls did not return after their contexts ended")
			}
			for _, err := range errs {
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("Follow = %v, want context.Canceled", err)
				}
			}
			if n := h.Watchers(); n != 0 {
				t.Errorf("Watchers = %d after every watch ended, want 0", n)
			}
			const slack = 3
			deadline := time.Now().Add(5 * time.Second)
			for {
				n := runtime.NumGoroutine()
				if n <= before+slack {
					break
				}
				if time.Now().After(deadline) {
					buf := make([]byte, 1<<16)
					buf = buf[:runtime.Stack(buf, true)]
					t.Fatalf("%d goroutines, %d before the watches: a leak?\n%s", n, before, buf)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// TestFollowPartitions follows a log of three partitions: a watch from the
// start sees every event once, each partition in order, and the position of
// any event resumes after exactly that event in its partition and after
// everything sent before it in the others.
func TestFollowPartitions(t *testing.T) {
	log := newFakeLog()
	log.partitions = 3
	log.addTo(0, 4)
	log.addTo(2, 3)
	log.addTo(1, 2)
	h := startHub(t, log, 64)

	zero := make(order.Cursor, 3)
	f := followAt(t, h.Hub, zero, nil, nil)
	eventually(t, "the replay", func() bool { return len(f.sentEvents()) == 9 })
	eventually(t, "the follower to go live", func() bool { return subscribed(h.Hub) == 1 })
	live := append(log.addTo(1, 2), log.addTo(0, 1)...)
	eventually(t, "the live events", func() bool { return len(f.sentEvents()) == 12 })

	sent := f.sentEvents()
	f.mu.Lock()
	for i, live := range f.live {
		if live != (i >= 9) {
			t.Errorf("event %d (%s) sent with live=%v; the first 9 are replayed, the rest live", i, f.sent[i].OrderID, live)
		}
	}
	f.mu.Unlock()
	last := make(order.Cursor, 3)
	for _, ev := range sent {
		if !last.Behind(ev) {
			t.Fatalf("event %s (partition %d, %v) is not after %v: out of order or twice", ev.OrderID, ev.Partition, ev.Offset, last)
		}
		last[ev.Partition] = ev.Offset
		if ev.Cursor.String() != last.String() {
			t.Errorf("event %s: position %v, want %v", ev.OrderID, ev.Cursor, last)
		}
	}
	ids := map[string]bool{}
	for _, ev := range sent {
		ids[ev.OrderID] = true
	}
	for _, ev := range live {
		if !ids[ev.OrderID] {
			t.Errorf("live event %s was not sent", ev.OrderID)
		}
	}
	if len(ids) != 12 {
		t.Errorf("%d distinct events sent, want 12", len(ids))
	}

	// Resuming from the position of each sent event sends exactly the
	// events that came after it.
	for i, ev := range sent {
		r := followAt(t, h.Hub, ev.Cursor, nil, nil)
		want := len(sent) - i - 1
		eventually(t, "the resumed watch", func() bool { return len(r.sentEvents()) >= want })
		var got, exp []string
		for _, e := range r.sentEvents() {
			got = append(got, e.OrderID)
		}
		for _, e := range sent[i+1:] {
			exp = append(exp, e.OrderID)
		}
		slices.Sort(got)
		slices.Sort(exp)
		if !slices.Equal(got, exp) {
			t.Errorf("resumed after %s (%v): got %v, want %v", ev.OrderID, ev.Cursor, got, exp)
		}
		r.cancel()
	}

	// A position of another number of partitions is refused.
	bad := followAt(t, h.Hub, order.Cursor{{}, {}}, nil, nil)
	<-bad.done
	if order.KindOf(bad.err) != order.KindInvalid || !strings.Contains(bad.err.Error(), "3 partition") {
		t.Errorf("a two-part position on a three-partition log: %v, want InvalidArgument naming the 3 partitions", bad.err)
	}

	// A single "0-0" is the start of every partition.
	all := followAt(t, h.Hub, order.Cursor{{}}, nil, nil)
	eventually(t, "the replay from 0-0", func() bool { return len(all.sentEvents()) == len(sent) })
}
