package watch

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

func TestSubscribeWaitsForStart(t *testing.T) {
	tests := []struct {
		name     string
		initial  int // events in the log before the hub starts
		tailErrs int // failed Tail calls before the first success
	}{
		{name: "empty log", initial: 0},
		{name: "log with events", initial: 5},
		{name: "tail fails once first", initial: 2, tailErrs: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			log.add(tt.initial)
			log.tailGate = make(chan struct{})
			log.tailErrs = tt.tailErrs
			h := startHub(t, log, 8)

			// Until the hub knows where the log ends, Subscribe waits.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer cancel()
			if s, err := h.Subscribe(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Subscribe before the start = %v, %v; want context.DeadlineExceeded", s, err)
			}
			if n := h.Watchers(); n != 0 {
				t.Fatalf("Watchers = %d after a failed Subscribe, want 0", n)
			}

			type result struct {
				s   *Subscription
				err error
			}
			res := make(chan result, 1)
			go func() {
				s, err := h.Subscribe(context.Background())
				res <- result{s, err}
			}()
			close(log.tailGate)
			var r result
			select {
			case r = <-res:
			case <-time.After(5 * time.Second):
				t.Fatal("Subscribe did not return once the hub started")
			}
			if r.err != nil {
				t.Fatalf("Subscribe = %v", r.err)
			}
			var want order.Offset
			if tt.initial > 0 {
				want = log.at(tt.initial - 1).Offset
			}
			if r.s.From[0] != want {
				t.Errorf("From = %v, want the tail %v", r.s.From, want)
			}
			if n := h.Watchers(); n != 1 {
				t.Errorf("Watchers = %d, want 1", n)
			}
			// Only events after From arrive.
			evs := log.add(1)
			if got := recv(t, r.s); got.Offset != evs[0].Offset {
				t.Errorf("first event %v, want %v", got.Offset, evs[0].Offset)
			}
		})
	}
}

func TestFanOut(t *testing.T) {
	tests := []struct {
		name   string
		subs   int
		events int
		batch  bool // append all at once rather than one at a time
	}{
		{name: "one subscription one event", subs: 1, events: 1},
		{name: "three subscriptions", subs: 3, events: 5},
		{name: "three subscriptions one batch", subs: 3, events: 7, batch: true},
		{name: "more than one read batch", subs: 2, events: readBatch + 100, batch: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			log.add(3)
			h := startHub(t, log, tt.events)
			var subs []*Subscription
			for range tt.subs {
				subs = append(subs, subscribe(t, h.Hub))
			}
			var want []order.Event
			if tt.batch {
				want = log.add(tt.events)
			} else {
				for range tt.events {
					want = append(want, log.add(1)...)
				}
			}
			for i, s := range subs {
				var got []order.Event
				for range tt.events {
					got = append(got, recv(t, s))
				}
				if !slices.Equal(cursors(got), cursors(want)) {
					t.Errorf("subscription %d got %v, want %v", i, cursors(got), cursors(want))
				}
				if got[0].OrderID != want[0].OrderID || got[0].Metadata["i"] != want[0].Metadata["i"] {
					t.Errorf("subscription %d: first event %+v, want %+v", i, got[0], want[0])
				}
				select {
				case ev := <-s.C:
					t.Errorf("subscription %d: unexpected extra event %v", i, ev.Offset)
				default:
				}
				if err := s.Err(); err != nil {
					t.Errorf("subscription %d: Err = %v", i, err)
				}
			}
		})
	}
}

func TestLaggedSubscription(t *testing.T) {
	tests := []struct {
		name   string
		buffer int
		events int
	}{
		{name: "buffer 2", buffer: 2, events: 6},
		{name: "buffer 1", buffer: 1, events: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			h := startHub(t, log, tt.buffer)
			slow := subscribe(t, h.Hub)
			fast := subscribe(t, h.Hub)
			other := subscribe(t, h.Hub)

			var want []order.Event
			for i := range tt.events {
				ev := log.add(1)[0]
				want = append(want, ev)
				for _, s := range []*Subscription{fast, other} {
					if got := recv(t, s); got.Offset != ev.Offset {
						t.Fatalf("event %d: got %v, want %v", i, got.Offset, ev.Offset)
					}
				}
				if i < tt.buffer {
					if err := slow.Err(); err != nil {
						t.Fatalf("slow subscription closed after %d events (buffer %d): %v", i+1, tt.buffer, err)
					}
				}
			}
			select {
			case <-slow.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the slow subscription was not closed")
			}
			if err := slow.Err(); !errors.Is(err, ErrLagged) {
				t.Errorf("slow Err = %v, want ErrLagged", err)
			}
			// What it had buffered is still there, in order.
			for i := range tt.buffer {
				if got := recv(t, slow); got.Offset != want[i].Offset {
					t.Errorf("slow buffered event %d = %v, want %v", i, got.Offset, want[i].Offset)
				}
			}
			select {
			case ev := <-slow.C:
				t.Errorf("slow got %v beyond its buffer", ev.Offset)
			default:
			}
			if n := h.Watchers(); n != 2 {
				t.Errorf("Watchers = %d, want 2", n)
			}
			for _, s := range []*Subscription{fast, other} {
				if err := s.Err(); err != nil {
					t.Errorf("a subscription that kept up was closed: %v", err)
				}
			}
			slow.Close() // closing a dropped subscription is harmless
			if n := h.Watchers(); n != 2 {
				t.Errorf("Watchers = %d after closing the dropped one, want 2", n)
			}
		})
	}
}

func TestSubscriptionClose(t *testing.T) {
	tests := []struct {
		name  string
		subs  int
		close []int // indexes of the subscriptions to close
	}{
		{name: "the only one", subs: 1, close: []int{0}},
		{name: "one of three", subs: 3, close: []int{1}},
		{name: "all of three", subs: 3, close: []int{2, 0, 1}},
		{name: "twice", subs: 2, close: []int{0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			h := startHub(t, log, 4)
			var subs []*Subscription
			for range tt.subs {
				subs = append(subs, subscribe(t, h.Hub))
			}
			if n := h.Watchers(); n != tt.subs {
				t.Fatalf("Watchers = %d, want %d", n, tt.subs)
			}
			closed := map[int]bool{}
			for _, i := range tt.close {
				subs[i].Close()
				closed[i] = true
				if n := h.Watchers(); n != tt.subs-len(closed) {
					t.Errorf("Watchers = %d after closing %v, want %d", n, closed, tt.subs-len(closed))
				}
				select {
				case <-subs[i].Done():
				default:
					t.Errorf("Done of closed subscription %d is not closed", i)
				}
				if err := subs[i].Err(); err != nil {
					t.Errorf("Err of subscription %d closed by its owner = %v, want nil", i, err)
				}
			}
			ev := log.add(1)[0]
			for i, s := range subs {
				if closed[i] {
					continue
				}
				if got := recv(t, s); got.Offset != ev.Offset {
					t.Errorf("open subscription %d got %v, want %v", i, got.Offset, ev.Offset)
				}
			}
			if len(closed) == tt.subs {
				// Nobody received it; make sure the hub has read it before
				// checking that the closed ones got nothing.
				eventually(t, "the hub to pass the event", func() bool {
					s := subscribe(t, h.Hub)
					defer s.Close()
					return !s.From.Behind(ev)
				})
			}
			for i := range closed {
				select {
				case got := <-subs[i].C:
					t.Errorf("closed subscription %d got %v", i, got.Offset)
				default:
				}
			}
		})
	}
}

func TestRunStops(t *testing.T) {
	tests := []struct {
		name    string
		started bool // whether the hub knew the tail before it stopped
		subs    int
	}{
		{name: "running with subscriptions", started: true, subs: 3},
		{name: "running without subscriptions", started: true, subs: 0},
		{name: "before the tail was known", started: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeLog()
			log.add(2)
			if !tt.started {
				log.tailGate = make(chan struct{}) // never opened
			}
			h := startHub(t, log, 4)
			var subs []*Subscription
			for range tt.subs {
				subs = append(subs, subscribe(t, h.Hub))
			}
			// A Subscribe waiting for the start is released by the stop.
			waiting := make(chan error, 1)
			if !tt.started {
				go func() {
					_, err := h.Subscribe(context.Background())
					waiting <- err
				}()
			}
			h.stop(t)
			for i, s := range subs {
				select {
				case <-s.Done():
				default:
					t.Fatalf("subscription %d is not done after Run returned", i)
				}
				if err := s.Err(); !errors.Is(err, ErrStopped) {
					t.Errorf("subscription %d: Err = %v, want ErrStopped", i, err)
				}
			}
			if n := h.Watchers(); n != 0 {
				t.Errorf("Watchers = %d after the stop, want 0", n)
			}
			if !tt.started {
				select {
				case err := <-waiting:
					if !errors.Is(err, ErrStopped) {
						t.Errorf("waiting Subscribe = %v, want ErrStopped", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("a Subscribe waiting for the start was not released by the stop")
				}
			}
			s, err := h.Subscribe(context.Background())
			if !errors.Is(err, ErrStopped) {
				t.Errorf("Subscribe after the stop = %v, %v; want ErrStopped", s, err)
			}
			if n := h.Watchers(); n != 0 {
				t.Errorf("Watchers = %d after a late Subscribe, want 0", n)
			}
		})
	}
}
