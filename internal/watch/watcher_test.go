package watch

import (
	"errors"
	"fmt"
	"testing"
)

// TestWatcherMoves tries every move between every two states: the moves of
// the lifecycle (written out here, apart from the table the code checks)
// succeed and keep the count of places, any other panics and changes
// nothing.
func TestWatcherMoves(t *testing.T) {
	allowed := map[[2]state]bool{
		{stateNew, stateReplaying}:    true,
		{stateNew, stateLive}:         true,
		{stateReplaying, stateLive}:   true,
		{stateReplaying, stateClosed}: true,
		{stateLive, stateLagged}:      true,
		{stateLive, stateClosed}:      true,
		{stateLagged, stateReplaying}: true,
		{stateLagged, stateClosed}:    true,
	}
	// A legal way to reach each state from new.
	paths := map[state][]state{
		stateNew:       nil,
		stateReplaying: {stateReplaying},
		stateLive:      {stateLive},
		stateLagged:    {stateLive, stateLagged},
		stateClosed:    {stateReplaying, stateClosed},
	}
	// Every state but new and closed holds a place.
	places := func(s state) int {
		if s == stateNew || s == stateClosed {
			return 0
		}
		return 1
	}
	for from := stateNew; from <= stateClosed; from++ {
		for to := stateNew; to <= stateClosed; to++ {
			t.Run(fmt.Sprintf("%v to %v", from, to), func(t *testing.T) {
				h := NewHub(nil, Options{})
				w := &watcher{follows: true}
				for _, s := range paths[from] {
					h.move(w, s, nil)
				}
				sub := w.sub
				err := tryMove(h, w, to)
				if !allowed[[2]state{from, to}] {
					if err == nil {
						t.Fatalf("the move was made; want it refused")
					}
					if w.state != from || h.Watchers() != places(from) || (len(h.subs) == 1) != (from == stateLive) {
						t.Fatalf("a refused move left state %v, %d places and %d subscriptions", w.state, h.Watchers(), len(h.subs))
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if w.state != to || h.Watchers() != places(to) {
					t.Fatalf("state %v with %d places; want %v with %d", w.state, h.Watchers(), to, places(to))
				}
				if live := len(h.subs) == 1 && w.sub != nil; live != (to == stateLive) {
					t.Fatalf("in %v, on the fan-out: %v", to, live)
				}
				if from == stateLive {
					select {
					case <-sub.Done():
					default:
						t.Fatalf("leaving live did not end the subscription")
					}
				}
			})
		}
	}
}

// tryMove makes a move and returns the panic it caused, if any.
func tryMove(h *Hub, w *watcher, to state) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errors.New(fmt.Sprint(r))
		}
	}()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.move(w, to, nil)
	return nil
}
