package memstore

import (
	"context"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// group is a consumer group's record. The memory store's log is one
// partition, so a cursor is one offset and every ack id's partition is 0.
type group struct {
	settings order.Group
	// start is the offset the group started after: no event up to it was
	// ever delivered to the group.
	start order.Offset
	// position is the offset of the last event delivered to the group; the
	// events after it are its backlog.
	position order.Offset
	// inFlight holds the events delivered and neither acknowledged nor
	// dead-lettered, by offset.
	inFlight map[order.Offset]*delivery
	// dead holds the dead letters: each event's last delivery, with why it
	// failed.
	dead map[order.Offset]*delivery
}

// spent reports whether a delivery was the event's last and is over: its
// ack deadline passed. The event is then a dead letter, whether or not
// bury has moved it yet.
func (g *group) spent(d *delivery, now time.Time) bool {
	return d.attempt >= g.settings.MaxDeliveries && !now.Before(d.due)
}

// bury makes the event at c, in flight as d, a dead letter whose last
// delivery failed at at for reason.
func (g *group) bury(c order.Offset, d *delivery, reason string, at time.Time) {
	delete(g.inFlight, c)
	d.reason, d.failedAt = reason, at
	g.dead[c] = d
}

// buryLapsed makes dead letters of the events whose last delivery's ack
// deadline passed. Every call that reads or hands out the group's events
// runs it first, so that such an event is a dead letter from its deadline
// on, whether or not a consumer asked for events since. The caller holds
// mu.
func (g *group) buryLapsed(now time.Time) {
	for c, d := range g.inFlight {
		if g.spent(d, now) {
			g.bury(c, d, order.ReasonAckDeadline, d.due)
		}
	}
}

// holders counts the other consumers that hold deliveries, and says
// whether consumer holds one. The caller holds mu.
func (g *group) holders(consumer string) (others int, holds bool) {
	seen := map[string]bool{}
	for _, d := range g.inFlight {
		switch d.consumer {
		case "":
		case consumer:
			holds = true
		default:
			seen[d.consumer] = true
		}
	}
	return len(seen), holds
}

// delivery is an event in flight at a consumer.
type delivery struct {
	// consumer is the consumer it was last delivered to, whose it is until
	// it is due again; empty once it was handed back (nacked, or put back
	// from the dead letters), when it is due to every consumer alike.
	consumer string
	// attempt counts the event's deliveries; 0 for a dead letter put back,
	// which has not been delivered again yet and so counts as backlog.
	attempt int
	// due is when it may be delivered again: its ack deadline, or the end
	// of a nack's retry_after.
	due time.Time
	// first and last are when it was first and last delivered.
	first, last time.Time
	// reason and failedAt say why and when its last delivery failed, once
	// it is a dead letter.
	reason   string
	failedAt time.Time
}

var _ order.GroupStore = (*Store)(nil)

// CreateGroup creates a consumer group, or answers the existing one when it
// was asked for with the same settings.
func (s *Store) CreateGroup(ctx context.Context, g order.Group, start order.Cursor, maxGroups int) (order.Group, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.groups[g.ID]; ok {
		if old.settings.SameSettings(g) {
			return old.settings, false, nil
		}
		return order.Group{}, false, order.GroupExists(old.settings, g)
	}
	pos := s.last
	if start != nil {
		if len(start) != 1 {
			return order.Group{}, false, order.Fail(order.ReasonInvalidCursor, "",
				"start position %s has %d parts, but this log has one partition; pass a single cursor such as \"1732170000000-0\", or \"0-0\" for all that is retained",
				start, len(start))
		}
		if err := s.CheckCursor(ctx, start[0]); err != nil {
			return order.Group{}, false, err
		}
		pos = start[0]
	}
	if len(s.groups) >= maxGroups {
		return order.Group{}, false, order.Fail(order.ReasonTooManyGroups, "",
			"there are %d consumer groups already, the limit; delete one you no longer need, or raise the limit", len(s.groups))
	}
	g.CreatedAt = s.nowMs()
	s.groups[g.ID] = &group{
		settings: g,
		start:    pos,
		position: pos,
		inFlight: make(map[order.Offset]*delivery),
		dead:     make(map[order.Offset]*delivery),
	}
	return g, true, nil
}

// group returns the group under id. The caller holds mu.
func (s *Store) group(id string) (*group, error) {
	g, ok := s.groups[id]
	if !ok {
		return nil, order.GroupNotFound(id)
	}
	return g, nil
}

// Group returns a group and its state.
func (s *Store) Group(_ context.Context, id string) (order.Group, order.GroupState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.group(id)
	if err != nil {
		return order.Group{}, order.GroupState{}, err
	}
	g.buryLapsed(s.nowMs())
	// A dead letter put back is backlog, not in flight: no consumer has
	// it yet.
	redriven := 0
	for _, d := range g.inFlight {
		if d.attempt == 0 {
			redriven++
		}
	}
	next := s.after(g.position)
	st := order.GroupState{
		Position:    order.Cursor{g.position},
		Backlog:     int64(len(s.log) - next + redriven),
		InFlight:    int64(len(g.inFlight) - redriven),
		DeadLetters: int64(len(g.dead)),
	}
	// The oldest unacknowledged event is the oldest in flight or, when
	// none is, the first of the backlog: every event in flight was
	// delivered, so it comes before the backlog.
	if len(g.inFlight) > 0 {
		oldest := slices.MinFunc(slices.Collect(maps.Keys(g.inFlight)), compareOffsets)
		if ev, ok := s.event(oldest); ok {
			st.OldestUnacked = ev.ExpiredAt
		}
	} else if next < len(s.log) {
		st.OldestUnacked = s.log[next].ExpiredAt
	}
	return g.settings, st, nil
}

// Groups returns every group, by id.
func (s *Store) Groups(context.Context) ([]order.Group, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]order.Group, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, g.settings)
	}
	slices.SortFunc(out, func(a, b order.Group) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// DeleteGroup deletes a group, its deliveries and its dead letters.
func (s *Store) DeleteGroup(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.group(id); err != nil {
		return err
	}
	delete(s.groups, id)
	return nil
}

// Deliver hands up to maxEvents events to a consumer: first the due
// redeliveries, oldest first, then the events after the group's position.
// An event that lapsed at this consumer is due to it OwnRedeliveryDelay
// after its deadline.
func (s *Store) Deliver(_ context.Context, groupID, consumer string, maxEvents int) ([]order.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.group(groupID)
	if err != nil {
		return nil, err
	}
	now := s.nowMs()
	g.buryLapsed(now)
	due := now.Add(g.settings.AckDeadline)
	var out []order.Delivery

	own := g.settings.OwnRedeliveryDelay()
	var redeliver []order.Offset
	for c, d := range g.inFlight {
		at := d.due
		if d.consumer == consumer {
			at = at.Add(own)
		}
		if !at.After(now) {
			redeliver = append(redeliver, c)
		}
	}
	slices.SortFunc(redeliver, compareOffsets)
	for _, c := range redeliver {
		if len(out) >= maxEvents {
			break
		}
		d := g.inFlight[c]
		ev, ok := s.event(c)
		if !ok {
			return nil, order.Errorf(order.KindInternal, "consumer group %q has event %s in flight, but the log has no such event", groupID, c)
		}
		d.attempt++
		d.consumer = consumer
		d.due = due
		if d.first.IsZero() {
			d.first = now
		}
		d.last = now
		out = append(out, order.Delivery{AckID: order.AckID{EventID: order.EventID{Offset: c}, Attempt: d.attempt}, Event: ev})
	}

	if len(out) == 0 {
		if holders, holds := g.holders(consumer); !holds && holders >= s.maxGroupConsumers {
			return nil, order.TooManyConsumers(groupID, s.maxGroupConsumers)
		}
	}
	for i := s.after(g.position); i < len(s.log) && len(out) < maxEvents; i++ {
		ev := s.log[i]
		g.inFlight[ev.Offset] = &delivery{consumer: consumer, attempt: 1, due: due, first: now, last: now}
		g.position = ev.Offset
		out = append(out, order.Delivery{AckID: order.AckID{EventID: order.EventID{Offset: ev.Offset}, Attempt: 1}, Event: ev})
	}
	return out, nil
}

// Ack acknowledges deliveries; an acknowledged event leaves the group.
func (s *Store) Ack(_ context.Context, groupID string, ids []order.AckID) ([]order.AckStatus, error) {
	return s.settle(groupID, ids, func(g *group, c order.Offset, _ *delivery, _ time.Time) {
		delete(g.inFlight, c)
	})
}

// Nack hands deliveries back, to be delivered again after retryAfter, at
// most the group's ack deadline, to any consumer. A delivery that was the
// event's last makes it a dead letter at once, failed for reason.
func (s *Store) Nack(_ context.Context, groupID string, ids []order.AckID, retryAfter time.Duration, reason string) ([]order.AckStatus, error) {
	return s.settle(groupID, ids, func(g *group, c order.Offset, d *delivery, now time.Time) {
		if d.attempt >= g.settings.MaxDeliveries {
			g.bury(c, d, order.FailureReason(reason), now)
			return
		}
		d.consumer = ""
		d.due = now.Add(min(max(retryAfter, 0), g.settings.AckDeadline))
	})
}

// Release hands deliveries back uncounted: due at once to any consumer,
// with the attempt they had before. An event released from its first
// delivery (attempt 0 again) is backlog, as a redriven one is.
func (s *Store) Release(_ context.Context, groupID string, ids []order.AckID) ([]order.AckStatus, error) {
	return s.settle(groupID, ids, func(_ *group, _ order.Offset, d *delivery, now time.Time) {
		d.attempt--
		d.consumer = ""
		d.due = now
	})
}

// settle checks each ack id against the group's deliveries and applies done
// to those that name a delivery still in flight before its deadline.
func (s *Store) settle(groupID string, ids []order.AckID, done func(g *group, c order.Offset, d *delivery, now time.Time)) ([]order.AckStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.group(groupID)
	if err != nil {
		return nil, err
	}
	now := s.nowMs()
	out := make([]order.AckStatus, len(ids))
	for i, id := range ids {
		// A spent delivery's event is a dead letter already.
		if d, ok := g.inFlight[id.Offset]; ok && id.Partition == 0 && g.spent(d, now) {
			g.bury(id.Offset, d, order.ReasonAckDeadline, d.due)
		}
		out[i] = s.ackStatus(g, id, now)
		if out[i] == order.AckDone {
			done(g, id.Offset, g.inFlight[id.Offset], now)
		}
	}
	return out, nil
}

// ackStatus says what an ack id names in a group: a delivery in flight
// (AckDone), a later or a lapsed one (AckExpired), an event no longer in
// flight (AckNotInFlight), or nothing the group delivered (AckUnknown). The
// caller holds mu.
func (s *Store) ackStatus(g *group, id order.AckID, now time.Time) order.AckStatus {
	if id.Partition != 0 {
		return order.AckUnknown
	}
	if d, ok := g.inFlight[id.Offset]; ok {
		if d.attempt != id.Attempt || !now.Before(d.due) {
			return order.AckExpired
		}
		return order.AckDone
	}
	if !g.start.Less(id.Offset) || g.position.Less(id.Offset) {
		return order.AckUnknown
	}
	if _, ok := s.event(id.Offset); !ok {
		return order.AckUnknown
	}
	return order.AckNotInFlight
}

// DeadLetters lists a group's dead letters, oldest first. A page token is
// the ID of the last letter of the page before.
func (s *Store) DeadLetters(_ context.Context, groupID, pageToken string, limit int) ([]order.DeadLetter, string, error) {
	if limit <= 0 {
		return nil, "", order.Errorf(order.KindInvalid, "page size must be more than zero (got %d)", limit)
	}
	var after order.Offset
	if pageToken != "" {
		id, ok := order.ParseEventID(pageToken)
		if !ok || id.Partition != 0 {
			return nil, "", order.BadPageToken(pageToken)
		}
		after = id.Offset
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.group(groupID)
	if err != nil {
		return nil, "", err
	}
	g.buryLapsed(s.nowMs())
	var cs []order.Offset
	for c := range g.dead {
		if after.Less(c) {
			cs = append(cs, c)
		}
	}
	slices.SortFunc(cs, compareOffsets)
	var next string
	if len(cs) > limit {
		cs = cs[:limit]
		next = order.EventID{Offset: cs[limit-1]}.String()
	}
	out := make([]order.DeadLetter, 0, len(cs))
	for _, c := range cs {
		ev, ok := s.event(c)
		if !ok {
			return nil, "", order.Errorf(order.KindInternal, "consumer group %q has dead letter %s, but the log has no such event", groupID, c)
		}
		d := g.dead[c]
		out = append(out, order.DeadLetter{ID: order.EventID{Offset: c}, Attempts: d.attempt, Event: ev,
			FirstDelivered: d.first, LastDelivered: d.last, Reason: d.reason, FailedAt: d.failedAt})
	}
	return out, next, nil
}

// Redrive puts dead letters back in flight, due at once with no delivery
// counted, so that the next Deliver hands them out as attempt 1; until
// then they count as backlog.
func (s *Store) Redrive(_ context.Context, groupID string, ids []string) (int, error) {
	cs := make([]order.Offset, 0, len(ids))
	for _, id := range ids {
		if id, ok := order.ParseEventID(id); ok && id.Partition == 0 {
			cs = append(cs, id.Offset)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.group(groupID)
	if err != nil {
		return 0, err
	}
	now := s.nowMs()
	g.buryLapsed(now)
	if len(ids) == 0 {
		cs = slices.Collect(maps.Keys(g.dead))
	}
	n := 0
	for _, c := range cs {
		if _, ok := g.dead[c]; !ok {
			continue
		}
		delete(g.dead, c)
		g.inFlight[c] = &delivery{due: now}
		n++
	}
	return n, nil
}

// oldestNeeded returns the offset of the oldest event some group still
// needs: one in flight, a dead letter, or the first after a group's
// position. ok is false when no group needs any event. The caller holds mu.
func (s *Store) oldestNeeded() (oldest order.Offset, ok bool) {
	need := func(c order.Offset) {
		if !ok || c.Less(oldest) {
			oldest, ok = c, true
		}
	}
	for _, g := range s.groups {
		for c := range g.inFlight {
			need(c)
		}
		for c := range g.dead {
			need(c)
		}
		if i := s.after(g.position); i < len(s.log) {
			need(s.log[i].Offset)
		}
	}
	return oldest, ok
}

// after returns the index in the log of the first event after c. The caller
// holds mu.
func (s *Store) after(c order.Offset) int {
	return sort.Search(len(s.log), func(i int) bool { return c.Less(s.log[i].Offset) })
}

// event returns the logged event at offset c. The caller holds mu.
func (s *Store) event(c order.Offset) (order.Event, bool) {
	i := sort.Search(len(s.log), func(i int) bool { return !s.log[i].Offset.Less(c) })
	if i < len(s.log) && s.log[i].Offset == c {
		return s.log[i], true
	}
	return order.Event{}, false
}

func compareOffsets(a, b order.Offset) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}
