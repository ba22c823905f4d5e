package watch

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// rewindLog makes l lose its last n events, as Redis that lost the tail of
// its log, and logs their orders' expirations again after the newest
// cursor it ever had (Redis's clock moved on), with new cursors: repeats.
func rewindLog(l *fakeLog, n int) []order.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	lost := append([]order.Event(nil), l.events[len(l.events)-n:]...)
	next := l.events[len(l.events)-1].Offset
	l.events = l.events[:len(l.events)-n]
	var again []order.Event
	for _, ev := range lost {
		next = order.Offset{Ms: next.Ms + 1}
		ev.Offset = next
		again = append(again, ev)
	}
	l.events = append(l.events, again...)
	l.notify()
	return again
}

// appendNew logs n new expirations after the newest cursor of l.
func appendNew(l *fakeLog, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := l.events[len(l.events)-1].Offset
	for i := range n {
		next = order.Offset{Ms: next.Ms + 1}
		l.events = append(l.events, order.Event{Offset: next, OrderID: fmt.Sprintf("new-%d", i)})
	}
	l.notify()
}

// TestRepeatsNotSentTwice: the log loses its last 5 events while a live
// watcher has them, and their orders expire again. The live watcher gets
// none of them twice, and goes on with new events; a watch from the start
// of the log, and one from the middle of the lost events, get each order
// once.
func TestRepeatsNotSentTwice(t *testing.T) {
	l := newFakeLog()
	l.add(10)
	var repeats, rewinds atomic.Int64
	h := startHubWith(t, l, Options{Buffer: 100, OnRepeat: func() { repeats.Add(1) }, OnRewind: func(int) { rewinds.Add(1) }})
	live := follow(t, h.Hub, nil, nil, nil)
	live.waitSent(t, 0)
	eventually(t, "the live watch subscribed", func() bool { return subscribed(h.Hub) == 1 })
	l.add(10) // ord-10 … ord-19, live
	live.waitSent(t, 10)

	// Redis goes away and comes back having lost ord-15 … ord-19, which
	// expire again.
	l.failLive(errors.New("connection refused"))
	time.Sleep(50 * time.Millisecond)
	rewindLog(l, 5)
	l.failLive(nil)
	appendNew(l, 3)
	eventually(t, "the hub read the new events", func() bool {
		pos, _ := h.Appended()
		return pos != nil && pos[0] == l.at(len(l.events)-1).Offset
	})

	count := func(f *follower) map[string]int {
		m := map[string]int{}
		for _, ev := range f.sentEvents() {
			m[ev.OrderID]++
		}
		return m
	}
	live.waitSent(t, 13)
	time.Sleep(100 * time.Millisecond)
	for id, n := range count(live) {
		if n != 1 {
			t.Errorf("the live watcher got %s %d times", id, n)
		}
	}
	if got := len(live.sentEvents()); got != 13 {
		t.Errorf("the live watcher got %d events; want 13 (ord-10 … ord-19, then 3 new)", got)
	}

	// From the start of the log: the 23 orders once each, the lost ones by
	// their repeats.
	all := follow(t, h.Hub, &order.Offset{}, nil, nil)
	all.waitSent(t, 23)
	time.Sleep(100 * time.Millisecond)
	if got := count(all); len(got) != 23 || len(all.sentEvents()) != 23 {
		t.Errorf("a watch from the start got %d events of %d orders; want 23 of 23", len(all.sentEvents()), len(got))
	}

	// From ord-16's first cursor (lost from the log): ord-17 … ord-19 once,
	// by their repeats, and the 3 new ones; not ord-15 or ord-16 again.
	var c16 order.Offset
	for _, ev := range live.sentEvents() {
		if ev.OrderID == "ord-16" {
			c16 = ev.Offset
		}
	}
	part := follow(t, h.Hub, &c16, nil, nil)
	part.waitSent(t, 6)
	time.Sleep(100 * time.Millisecond)
	got := count(part)
	for _, id := range []string{"ord-15", "ord-16"} {
		if got[id] != 0 {
			t.Errorf("a watch after ord-16's cursor got %s, which it had", id)
		}
	}
	for _, id := range []string{"ord-17", "ord-18", "ord-19"} {
		if got[id] != 1 {
			t.Errorf("a watch after ord-16's cursor got %s %d times, want once", id, got[id])
		}
	}
	if repeats.Load() == 0 {
		t.Errorf("OnRepeat was never called")
	}
	// Found by the read recovering, and not again by the first repeat.
	if got := rewinds.Load(); got != 1 {
		t.Errorf("the rewind was reported %d times (OnRewind); want once", got)
	}
}

// TestRewindFoundByItsFirstRepeat: the log loses its last 5 events and
// their orders expire again, while the hub's reads never fail (a failover
// between two of them). The hub learns that the log went back from the
// first repeat it reads (see publish), reports it once, and the live
// watcher, which had the lost expirations, gets none of them twice.
func TestRewindFoundByItsFirstRepeat(t *testing.T) {
	l := newFakeLog()
	l.add(10)
	var rewinds atomic.Int64
	h := startHubWith(t, l, Options{Buffer: 100, OnRewind: func(int) { rewinds.Add(1) }})
	live := follow(t, h.Hub, nil, nil, nil)
	live.waitSent(t, 0)
	eventually(t, "the live watch subscribed", func() bool { return subscribed(h.Hub) == 1 })
	l.add(10) // ord-10 … ord-19, live
	live.waitSent(t, 10)

	rewindLog(l, 5)
	appendNew(l, 3)
	live.waitSent(t, 13)
	time.Sleep(100 * time.Millisecond)
	if got := rewinds.Load(); got != 1 {
		t.Errorf("the rewind was reported %d times (OnRewind); want once", got)
	}
	seen := map[string]int{}
	for _, ev := range live.sentEvents() {
		if seen[ev.OrderID]++; seen[ev.OrderID] > 1 {
			t.Errorf("the live watcher got %s twice", ev.OrderID)
		}
	}
	if got := len(live.sentEvents()); got != 13 {
		t.Errorf("the live watcher got %d events; want 13 (ord-10 … ord-19, then 3 new)", got)
	}
}

// TestRewindReportedOnce: a rewind found when the hub's read recovers is
// reported once, though the read fails and recovers again before the hub
// has read anything of the new history, so that checkRewind finds the same
// event missing twice.
func TestRewindReportedOnce(t *testing.T) {
	l := newFakeLog()
	l.add(10)
	var rewinds atomic.Int64
	h := startHubWith(t, l, Options{Buffer: 100, OnRewind: func(int) { rewinds.Add(1) }})
	eventually(t, "the hub read the log", func() bool {
		pos, _ := h.Appended()
		return pos != nil && pos[0] == l.at(9).Offset
	})
	l.failLive(errors.New("connection refused"))
	time.Sleep(50 * time.Millisecond)
	l.mu.Lock()
	l.events = l.events[:7] // the last 3 lost, nothing logged since
	l.mu.Unlock()
	l.failLive(nil)
	eventually(t, "the rewind reported", func() bool { return rewinds.Load() >= 1 })
	l.failLive(errors.New("connection refused"))
	time.Sleep(50 * time.Millisecond)
	l.failLive(nil)
	// The recovered read returns, and checkRewind runs, once it has waited
	// readWait for an event that does not come.
	time.Sleep(readWait + 500*time.Millisecond)
	if got := rewinds.Load(); got != 1 {
		t.Errorf("the rewind was reported %d times (OnRewind); want once", got)
	}
}

// BenchmarkRepeatCheck is the repeat check every watcher makes for each
// event of the fan-out (see sendLive), by many watchers at once, on a log
// that never went back: the common case.
func BenchmarkRepeatCheck(b *testing.B) {
	h := NewHub(newFakeLog(), Options{Logger: discard})
	h.memory = newMemories(1)
	h.rewinds = make([]rewind, 1)
	h.pos = make(order.Cursor, 1)
	events := make([]order.Event, 1000)
	for i := range events {
		events[i] = order.Event{Offset: cursorAt(i), OrderID: fmt.Sprintf("ord-%d", i)}
	}
	h.publish(0, events)
	b.RunParallel(func(pb *testing.PB) {
		last := make(order.Cursor, 1)
		cr := make([]crossing, 1)
		i := 0
		for pb.Next() {
			ev := events[i%len(events)]
			if h.hadIt(ev, last, cr) {
				b.Fatal("a new expiration was taken for a repeat")
			}
			last[0] = ev.Offset
			i++
		}
	})
}

// BenchmarkSee is what the hub does for each event it reads: a
// partition's memory filled with 100,000 expirations from empty, as in a
// burst.
func BenchmarkSee(b *testing.B) {
	events := make([]order.Event, rememberExpirations)
	for i := range events {
		events[i] = order.Event{Offset: cursorAt(i), OrderID: fmt.Sprintf("ord-%d", i), Deadline: time.UnixMilli(int64(1e12 + i))}
	}
	for b.Loop() {
		m := newMemories(1)
		for _, ev := range events {
			m[0].see(ev)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(events)), "ns/event")
}
