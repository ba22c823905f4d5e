package watch

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// gate holds sends until it is opened.
type gate struct {
	ch   chan struct{}
	open func()
}

// newGate returns a closed gate.
func newGate() *gate {
	ch := make(chan struct{})
	return &gate{ch: ch, open: sync.OnceFunc(func() { close(ch) })}
}

// onSend holds every send until the gate is open.
func (g *gate) onSend(int, order.Event) error {
	<-g.ch
	return nil
}

// openAtCleanup opens the gates when the test ends, before the cleanups of
// the followers created so far wait for them (cleanups run last first).
func openAtCleanup(t *testing.T, gates ...*gate) {
	t.Cleanup(func() {
		for _, g := range gates {
			g.open()
		}
	})
}

// TestFollowReplayTakesItsPlace: a watch with a cursor counts against
// MaxWatchers from before it replays, so that past the limit further
// watches, with a cursor or live, are refused at once, before they start;
// the place comes back when a watch ends.
func TestFollowReplayTakesItsPlace(t *testing.T) {
	log := newFakeLog()
	log.add(10)
	h := startHubWith(t, log, Options{Buffer: 64, MaxWatchers: 2})
	gateFirst, gateSecond := newGate(), newGate()
	zero := order.Offset{}
	first := follow(t, h.Hub, &zero, nil, gateFirst.onSend)
	second := follow(t, h.Hub, &zero, nil, gateSecond.onSend)
	openAtCleanup(t, gateFirst, gateSecond)
	eventually(t, "both watches to replay", func() bool { return first.startedCalls() == 1 && second.startedCalls() == 1 })
	if n := h.Watchers(); n != 2 {
		t.Fatalf("Watchers = %d while two watches replay, want 2", n)
	}
	for _, after := range []*order.Offset{&zero, nil} {
		f := follow(t, h.Hub, after, nil, nil)
		_, err := f.wait(t)
		if order.KindOf(err) != order.KindResourceExhausted || !errors.Is(err, ErrTooManyWatchers) {
			t.Fatalf("a watch past the limit (cursor %v): %v, want ErrTooManyWatchers", after, err)
		}
		if n := f.startedCalls(); n != 0 {
			t.Fatalf("a refused watch was started %d times", n)
		}
	}
	gateFirst.open()
	first.stop(t)
	if n := h.Watchers(); n != 1 {
		t.Fatalf("Watchers = %d after one of two replaying watches ended, want 1", n)
	}
	third := follow(t, h.Hub, nil, nil, nil)
	// A live watch subscribes, then calls started: wait for both.
	eventually(t, "a live watch to take the freed place", func() bool { return subscribed(h.Hub) == 1 && third.startedCalls() > 0 })
	if n := third.startedCalls(); n != 1 {
		t.Fatalf("started called %d times", n)
	}
}

// TestFollowReplaysBounded: MaxReplays watches replay at once and the
// others wait their turn; a watch that does not take its events gives its
// slot back after replayHold, and every watch gets every event once the
// senders go on.
func TestFollowReplaysBounded(t *testing.T) {
	log := newFakeLog()
	all := log.add(10)
	h := startHubWith(t, log, Options{Buffer: 64, MaxReplays: 2})
	senders := newGate()
	zero := order.Offset{}
	var followers []*follower
	for range 5 {
		followers = append(followers, follow(t, h.Hub, &zero, nil, senders.onSend))
	}
	openAtCleanup(t, senders)
	eventually(t, "every watch to start", func() bool {
		for _, f := range followers {
			if f.startedCalls() != 1 {
				return false
			}
		}
		return true
	})
	eventually(t, "two replays to read", func() bool { return log.reads() == 2 })
	time.Sleep(replayHold / 2)
	if n := log.reads(); n != 2 {
		t.Fatalf("%d replays read the log at once, want 2", n)
	}
	// The two blocked senders give their slots back.
	start := time.Now()
	eventually(t, "stalled replays to give their slots up", func() bool { return log.reads() >= 4 })
	if waited := time.Since(start) + replayHold/2; waited < replayHold*9/10 {
		t.Errorf("the slots came back after %s, before replayHold (%s)", waited, replayHold)
	}
	senders.open()
	for i, f := range followers {
		f.waitSent(t, len(all))
		if got := f.sentEvents(); !equalCursors(got, all) {
			t.Errorf("watch %d sent %v, want %v", i, cursors(got), cursors(all))
		}
	}
}

func equalCursors(a, b []order.Event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Offset != b[i].Offset {
			return false
		}
	}
	return true
}

// TestFollowLiveWhileTheLogFails: while the hub cannot read the log, a
// live watch is refused with KindUnavailable before it starts, instead of
// being left without events; once the hub reads again, live watches are
// accepted and get events. A hub that cannot find where the log ends at
// its start refuses them too, rather than keeping them waiting.
func TestFollowLiveWhileTheLogFails(t *testing.T) {
	t.Run("reads fail", func(t *testing.T) {
		log := newFakeLog()
		log.add(3)
		h := startHub(t, log, 8)
		subscribe(t, h.Hub).Close() // the hub has started
		log.failLive(errors.New("connection refused"))
		// Until the hub has seen its read fail, a live watch may still be
		// accepted; it is then closed and tried again.
		var err error
		eventually(t, "a live watch to be refused", func() bool {
			f := follow(t, h.Hub, nil, nil, nil)
			select {
			case <-f.done:
			case <-time.After(20 * time.Millisecond):
				f.stop(t)
				return false
			}
			if n := f.startedCalls(); n != 0 {
				t.Fatalf("a refused live watch was started %d times", n)
			}
			_, err = f.wait(t)
			return true
		})
		if order.KindOf(err) != order.KindUnavailable {
			t.Fatalf("a live watch while the hub cannot read: %v, want KindUnavailable", err)
		}
		// A watch with a cursor reads the log itself.
		after := log.at(0).Offset
		f := follow(t, h.Hub, &after, nil, nil)
		f.waitSent(t, 2)
		f.stop(t)

		log.failLive(nil)
		var live *follower
		eventually(t, "a live watch to be accepted", func() bool {
			live = follow(t, h.Hub, nil, nil, nil)
			select {
			case <-live.done:
				return false
			case <-time.After(50 * time.Millisecond):
				return live.startedCalls() == 1
			}
		})
		want := log.add(1)
		live.waitSent(t, 1)
		checkSent(t, live, want)
	})
	t.Run("the start fails", func(t *testing.T) {
		log := newFakeLog()
		log.tailErrs = 2
		h := startHub(t, log, 8)
		f := follow(t, h.Hub, nil, nil, nil)
		if _, err := f.wait(t); order.KindOf(err) != order.KindUnavailable {
			t.Fatalf("a live watch while the hub cannot start: %v, want KindUnavailable", err)
		}
		subscribe(t, h.Hub).Close() // the hub has started
		live := follow(t, h.Hub, nil, nil, nil)
		eventually(t, "the live watch to subscribe", func() bool { return subscribed(h.Hub) == 1 })
		want := log.add(1)
		live.waitSent(t, 1)
		checkSent(t, live, want)
	})
}
