package watch

import (
	"context"
	"math"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Redis can lose the tail of its log and go on: with appendfsync everysec
// it acknowledges writes up to a second or two before they reach the disk,
// so a crash, or a restart from an older copy of its data, takes back the
// last expirations. Their orders are then pending again, past their
// deadline, and expire a second time, with new cursors: watchers and groups
// that had the first expiration would receive the order twice.
//
// The hub remembers the identity of each expiration it read (the order id
// and its deadline, which no other expiration shares) and the cursor where
// it first read it, for the last rememberExpirations expirations of the
// log (shared out among its partitions). An expiration whose identity it remembers at an earlier
// cursor is a repeat of that one. The hub also notes where each partition
// went back: the last cursor it had read there (rewind), every event after
// which comes from the new history; it learns it when its read of the
// partition recovers after a failure and the log no longer holds that
// event (checkRewind), or else from the first repeat it reads.
//
// Whoever reads the log (a watcher, a group on this replica) has a
// position in the old history: where it was when it met the first event of
// the new one (crossing). A repeat whose first expiration is at or before
// that position is one it had, and it is not sent again; one after it is
// the first it sees of that order, and is sent once:
//
//   - A watcher that had the lost expirations live skips their repeats; a
//     watch that starts (or resumes) from before them receives them once.
//   - A group's position is what this replica delivered to it: a group
//     whose consumers are served by other replicas may receive a repeat of
//     what those delivered, like any redelivery, since Redis lost the
//     group's own record of it. A repeat skipped is acknowledged.
//
// Orders whose first expiration the hub did not read, or no longer
// remembers, are delivered again as a new expiration; the identity is the
// key consumers drop repeats by (docs/api.md).

// rememberExpirations is how many expirations the hub remembers, shared
// out among the partitions, each remembering at least minRemembered:
// measured, 11 MiB of heap for 100,000 with order ids of 32 bytes, 21 MiB
// with ids of 128 bytes. Redis with appendfsync everysec loses
// two seconds of its log at most: the window holds them at 50,000
// expirations a second.
const (
	rememberExpirations = 100_000
	minRemembered       = 1024
)

// identity names an expiration whatever its cursor: its order and deadline.
type identity struct {
	orderID  string
	deadline int64 // unix ms
}

func identityOf(ev order.Event) identity {
	return identity{orderID: ev.OrderID, deadline: ev.Deadline.UnixMilli()}
}

// memory is what the hub remembers of one partition: a ring of the last
// expirations read, and the cursor where each identity was first read.
type memory struct {
	limit int // the most identities it holds
	first map[identity]order.Offset
	ring  []identity
	next  int
}

// newMemories returns the memories of n partitions.
func newMemories(n int) []memory {
	ms := make([]memory, n)
	for i := range ms {
		ms[i].limit = max(rememberExpirations/max(n, 1), minRemembered)
	}
	return ms
}

// see remembers ev unless its identity is remembered already, and returns
// what repeatOf does: the hub reads each event through it, with one lookup
// of the identity where repeatOf then remember took two (a tenth of the
// service's CPU in benchmark 1b's burst went to the two).
func (m *memory) see(ev order.Event) (order.Offset, bool) {
	id := identityOf(ev)
	if c0, ok := m.first[id]; ok {
		return c0, c0.Less(ev.Offset)
	}
	if m.first == nil {
		// At their full size at once: grown through a burst, the map and
		// the ring were copied a dozen times (450 → 230 ns an event, by
		// the benchmark that is now BenchmarkSee).
		m.first = make(map[identity]order.Offset, m.limit)
		m.ring = make([]identity, 0, m.limit)
	}
	if len(m.ring) < m.limit {
		m.ring = append(m.ring, id)
	} else {
		delete(m.first, m.ring[m.next])
		m.ring[m.next] = id
		m.next = (m.next + 1) % len(m.ring)
	}
	m.first[id] = ev.Offset
	return order.Offset{}, false
}

// repeatOf returns the cursor of the earlier expiration that ev repeats, or
// false.
func (m *memory) repeatOf(ev order.Event) (order.Offset, bool) {
	c0, ok := m.first[identityOf(ev)]
	if !ok || !c0.Less(ev.Offset) {
		return order.Offset{}, false
	}
	return c0, true
}

// rewind is where a partition's log went back: the last event the hub had
// read before (from), and how many times it went back (seq, 0: never).
type rewind struct {
	from order.Offset
	seq  int
}

// noteRewind records that partition p's log went back after from, and
// says whether that is news: a later from than the last rewind's. The
// caller holds mu.
func (h *Hub) noteRewind(p int, from order.Offset) bool {
	r := &h.rewinds[p]
	if !r.from.Less(from) {
		return false
	}
	r.from = from
	r.seq++
	h.rewound.Store(true)
	return true
}

// crossing is a reader's position in the old history of a partition that
// went back: where it was when it met the first event after rewind seq.
type crossing struct {
	seq int
	at  order.Offset
}

// isRepeatHad says whether ev, next for a reader of its partition at
// last (whose crossing is cr), repeats an expiration that the reader had,
// and moves cr when ev is the first event of a new history it meets.
func (h *Hub) isRepeatHad(ev order.Event, last order.Offset, cr *crossing) bool {
	// A reader's crossing moves only after a rewind, and a repeat is one
	// it had only at or before its crossing: with no rewind, none is.
	if !h.rewound.Load() {
		return false
	}
	h.mu.Lock()
	if ev.Partition < 0 || ev.Partition >= len(h.memory) {
		h.mu.Unlock()
		return false
	}
	c0, repeat := h.memory[ev.Partition].repeatOf(ev)
	rw := h.rewinds[ev.Partition]
	h.mu.Unlock()
	if rw.seq != cr.seq && rw.from.Less(ev.Offset) {
		*cr = crossing{seq: rw.seq, at: last}
	}
	if !repeat || cr.at.Less(c0) {
		return false
	}
	h.repeatSkipped()
	return true
}

// hadIt is isRepeatHad for a watcher at last, with its crossings.
func (h *Hub) hadIt(ev order.Event, last order.Cursor, cr []crossing) bool {
	return h.isRepeatHad(ev, last[ev.Partition], &cr[ev.Partition])
}

func (h *Hub) repeatSkipped() {
	if h.opts.OnRepeat != nil {
		h.opts.OnRepeat()
	}
}

// groupMark is how far this replica delivered a group's events in one
// partition, and its crossing.
type groupMark struct {
	at order.Offset
	cr crossing
}

// DropRepeats takes the deliveries a store made to a group on this replica:
// it records how far each partition's deliveries went, and acknowledges
// and leaves out the repeats of expirations that this replica delivered to
// the group before (see the top of this file). It returns the others.
func (h *Hub) DropRepeats(ctx context.Context, gs order.GroupStore, group string, ds []order.Delivery) []order.Delivery {
	if len(ds) == 0 {
		return ds
	}
	out := ds[:0:0]
	var drop []order.AckID
	h.groupsMu.Lock()
	if h.delivered == nil {
		h.delivered = map[string]map[int]*groupMark{}
	}
	marks := h.delivered[group]
	if marks == nil {
		marks = map[int]*groupMark{}
		h.delivered[group] = marks
	}
	for _, d := range ds {
		m := marks[d.Event.Partition]
		if m == nil {
			m = &groupMark{}
			marks[d.Event.Partition] = m
		}
		if h.isRepeatHad(d.Event, m.at, &m.cr) {
			drop = append(drop, d.AckID)
			continue
		}
		if m.at.Less(d.Event.Offset) {
			m.at = d.Event.Offset
		}
		out = append(out, d)
	}
	h.groupsMu.Unlock()
	if len(drop) > 0 {
		// Not acknowledged, a repeat comes again after its ack deadline
		// and is left out again.
		if _, err := gs.Ack(ctx, group, drop); err != nil {
			h.opts.Logger.Warn("watch: could not acknowledge the repeats of expirations the group had; they come again after their ack deadline", "group", group, "repeats", len(drop), "err", err)
		}
	}
	return out
}

// before returns the cursor just before c.
func before(c order.Offset) order.Offset {
	if c.Seq > 0 {
		return order.Offset{Ms: c.Ms, Seq: c.Seq - 1}
	}
	return order.Offset{Ms: c.Ms - 1, Seq: math.MaxUint64}
}

// checkRewind says whether partition p's log still holds the event at
// after, the last one the hub read, once a read recovers from a failure;
// when it does not, Redis lost the tail of its log, and the hub logs it.
func (h *Hub) checkRewind(ctx context.Context, p int, after order.Offset) {
	if after.IsZero() {
		return
	}
	events, err := h.log.Events(ctx, p, before(after), 1, 0)
	if err != nil || (len(events) > 0 && events[0].Offset == after) {
		return
	}
	h.mu.Lock()
	noted := h.noteRewind(p, after)
	h.mu.Unlock()
	if noted {
		h.reportRewind(ctx, p, after)
	}
}

// reportRewind logs and counts that partition p's log went back after the
// event at from, once the hub has noted it (noteRewind), however it found
// out: its read recovering (checkRewind) or the first repeat it read
// (publish).
func (h *Hub) reportRewind(ctx context.Context, p int, from order.Offset) {
	tail, _ := h.log.Tail(ctx, p)
	h.opts.Logger.Error("watch: the expiration log went back: Redis lost the tail of its log (a crash with appendfsync everysec, a restart from older data, a failover to a replica that lacked it). "+
		"The orders of the lost expirations are pending again and expire again; watchers and groups that had them are not sent them twice (see docs/reliability.md)",
		"partition", p, "last_read", from.String(), "log_tail", tail.String())
	if h.opts.OnRewind != nil {
		h.opts.OnRewind(p)
	}
}
