package storetest

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// maxGroups is the limit on groups the tests pass to CreateGroup when they
// do not test the limit itself.
const maxGroups = 100

// groupStore returns the consumer groups of a store, or fails the test when
// the store has none.
func groupStore(t *testing.T, s order.Store) order.GroupStore {
	t.Helper()
	gs, ok := s.(order.GroupStore)
	if !ok {
		t.Fatalf("the store %T does not implement order.GroupStore: consumer groups are part of the store contract", s)
	}
	return gs
}

// settings returns the settings of a group to create.
func settings(id string, ackDeadline time.Duration, maxDeliveries int) order.Group {
	return order.Group{ID: id, AckDeadline: ackDeadline, MaxDeliveries: maxDeliveries}
}

// createGroup creates a group that must be new.
func createGroup(t *testing.T, gs order.GroupStore, g order.Group, start order.Cursor) order.Group {
	t.Helper()
	got, created, err := gs.CreateGroup(t.Context(), g, start, maxGroups)
	if err != nil {
		t.Fatalf("CreateGroup(%s, start %v): %v", g.ID, start, err)
	}
	if !created {
		t.Fatalf("CreateGroup(%s): created = false, want a new group", g.ID)
	}
	return got
}

// zeroCursor returns the cursor before every event of the store's log.
func zeroCursor(t *testing.T, s order.Store) order.Cursor {
	t.Helper()
	return make(order.Cursor, partitions(t, s))
}

// expire checks out orders under the ids and lets them expire, one after
// another in that order, and returns their events in that order.
func expire(t *testing.T, s order.Store, ids ...string) []order.Event {
	t.Helper()
	// One after another, each checked out once the one before expired:
	// the tests take the events' order for the order they expired in
	// (the oldest unacknowledged, the next delivered), and orders due
	// 5 ms apart in two partitions were once expired the other way round
	// by their two sweepers.
	out := make([]order.Event, len(ids))
	for i, id := range ids {
		after := tails(t, s)
		checkout(t, s, id, 20*time.Millisecond, nil)
		out[i] = waitEvents(t, s, after, 1, func(ev order.Event) bool { return ev.OrderID == id })[0]
	}
	return out
}

// groupState returns a group's state.
func groupState(t *testing.T, gs order.GroupStore, id string) order.GroupState {
	t.Helper()
	_, st, err := gs.Group(t.Context(), id)
	if err != nil {
		t.Fatalf("Group(%s): %v", id, err)
	}
	return st
}

// checkState checks a group's state against want; want.Position is checked
// only when it is set.
func checkState(t *testing.T, when string, gs order.GroupStore, id string, want order.GroupState) {
	t.Helper()
	st := groupState(t, gs, id)
	if want.Position != nil && !slices.Equal(st.Position, want.Position) {
		t.Errorf("%s: group %s at position %v, want %v", when, id, st.Position, want.Position)
	}
	if st.Backlog != want.Backlog || st.InFlight != want.InFlight || st.DeadLetters != want.DeadLetters {
		t.Errorf("%s: group %s has backlog %d, in flight %d, dead letters %d; want %d, %d, %d",
			when, id, st.Backlog, st.InFlight, st.DeadLetters, want.Backlog, want.InFlight, want.DeadLetters)
	}
	if !st.OldestUnacked.Equal(want.OldestUnacked) {
		t.Errorf("%s: group %s has its oldest unacknowledged event from %v, want %v", when, id, st.OldestUnacked, want.OldestUnacked)
	}
}

// deliver calls Deliver once.
func deliver(t *testing.T, gs order.GroupStore, group, consumer string, max int) []order.Delivery {
	t.Helper()
	ds, err := gs.Deliver(t.Context(), group, consumer, max)
	if err != nil {
		t.Fatalf("Deliver(%s, %s, %d): %v", group, consumer, max, err)
	}
	if len(ds) > max {
		t.Fatalf("Deliver(%s, %s, %d) returned %d deliveries, more than asked for", group, consumer, max, len(ds))
	}
	return ds
}

// deliverN calls Deliver until n deliveries have come, and fails the test
// when they do not come within eventTimeout. A store of several partitions
// may hand out what is due over several calls.
func deliverN(t *testing.T, gs order.GroupStore, group, consumer string, n int) []order.Delivery {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	var got []order.Delivery
	for len(got) < n {
		if time.Now().After(deadline) {
			t.Fatalf("Deliver(%s, %s): %d of %d deliveries came within %v: %v", group, consumer, len(got), n, eventTimeout, deliveryIDs(got))
		}
		ds := deliver(t, gs, group, consumer, n-len(got))
		got = append(got, ds...)
		if len(ds) == 0 {
			time.Sleep(10 * time.Millisecond) // polling: Deliver does not wait
		}
	}
	return got
}

// deliverNone checks that nothing is due for a group.
func deliverNone(t *testing.T, gs order.GroupStore, group, consumer, why string) {
	t.Helper()
	if ds := deliver(t, gs, group, consumer, 100); len(ds) != 0 {
		t.Errorf("Deliver(%s, %s) = %v, want none: %s", group, consumer, deliveryIDs(ds), why)
	}
}

// deliverUntilDead calls Deliver, which must hand out nothing, until the
// group has the wanted number of dead letters: an event that had all its
// deliveries is never delivered again, only counted as a dead letter.
func deliverUntilDead(t *testing.T, gs order.GroupStore, group string, want int64) {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	for {
		if ds := deliver(t, gs, group, "c-dead", 100); len(ds) != 0 {
			t.Fatalf("Deliver(%s) = %v, want none: every event had all its deliveries", group, deliveryIDs(ds))
		}
		st := groupState(t, gs, group)
		if st.DeadLetters == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s has %d dead letters after %v, want %d", group, st.DeadLetters, eventTimeout, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkDeliveries checks that deliveries are of the wanted events, each
// once, with the given attempt.
func checkDeliveries(t *testing.T, what string, ds []order.Delivery, want []order.Event, attempt int) {
	t.Helper()
	byID := map[string]order.Delivery{}
	for _, d := range ds {
		if _, dup := byID[d.Event.OrderID]; dup {
			t.Errorf("%s: %s delivered twice", what, d.Event.OrderID)
		}
		byID[d.Event.OrderID] = d
	}
	if len(ds) != len(want) {
		t.Errorf("%s: delivered %v, want %v", what, deliveryIDs(ds), orderIDs(want))
	}
	for _, ev := range want {
		d, ok := byID[ev.OrderID]
		if !ok {
			t.Errorf("%s: %s not delivered; delivered %v", what, ev.OrderID, deliveryIDs(ds))
			continue
		}
		if d.Event.Partition != ev.Partition || d.Event.Offset != ev.Offset || !d.Event.ExpiredAt.Equal(ev.ExpiredAt) || !d.Event.Deadline.Equal(ev.Deadline) {
			t.Errorf("%s: delivered event %+v, want the logged %+v", what, d.Event, ev)
		}
		if want := (order.AckID{EventID: ev.ID(), Attempt: attempt}); d.AckID != want {
			t.Errorf("%s: %s delivered with ack id %v, want %v", what, ev.OrderID, d.AckID, want)
		}
	}
}

// byOrder maps deliveries by their order ids.
func byOrder(ds []order.Delivery) map[string]order.Delivery {
	m := make(map[string]order.Delivery, len(ds))
	for _, d := range ds {
		m[d.Event.OrderID] = d
	}
	return m
}

func deliveryIDs(ds []order.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Event.OrderID + "#" + strconv.Itoa(d.AckID.Attempt)
	}
	return out
}

func ackIDs(ds []order.Delivery) []order.AckID {
	out := make([]order.AckID, len(ds))
	for i, d := range ds {
		out[i] = d.AckID
	}
	return out
}

// ack acknowledges ack ids and checks each one's outcome.
func ack(t *testing.T, gs order.GroupStore, group string, want order.AckStatus, ids ...order.AckID) {
	t.Helper()
	got, err := gs.Ack(t.Context(), group, ids)
	if err != nil {
		t.Fatalf("Ack(%s, %v): %v", group, ids, err)
	}
	checkStatuses(t, "Ack", got, want, ids)
}

// nack hands ack ids back and checks each one's outcome.
func nack(t *testing.T, gs order.GroupStore, group string, retryAfter time.Duration, want order.AckStatus, ids ...order.AckID) {
	t.Helper()
	got, err := gs.Nack(t.Context(), group, ids, retryAfter, "")
	if err != nil {
		t.Fatalf("Nack(%s, %v, %v): %v", group, ids, retryAfter, err)
	}
	checkStatuses(t, "Nack", got, want, ids)
}

func checkStatuses(t *testing.T, op string, got []order.AckStatus, want order.AckStatus, ids []order.AckID) {
	t.Helper()
	if len(got) != len(ids) {
		t.Fatalf("%s of %d ids answered %d statuses, want one per id", op, len(ids), len(got))
	}
	for i, st := range got {
		if st != want {
			t.Errorf("%s(%v) = %v, want %v", op, ids[i], st, want)
		}
	}
}

// testGroupCreate: creating a group, again with the same or other settings,
// past the limit, from too old a start; listing, reading and deleting
// groups; and NotFound for every call on an unknown group.
func testGroupCreate(t *testing.T, su suite) {
	s := su.start(t, retention)
	gs := groupStore(t, s)
	ctx := t.Context()

	asked := settings("orders", 10*time.Second, 3)
	before := time.Now()
	g, created, err := gs.CreateGroup(ctx, asked, nil, maxGroups)
	after := time.Now()
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	if !created || !g.SameSettings(asked) {
		t.Errorf("CreateGroup = %+v, created %v; want %+v, created", g, created, asked)
	}
	checkWithin(t, "created_at", g.CreatedAt, before, after)

	again, created, err := gs.CreateGroup(ctx, asked, zeroCursor(t, s), maxGroups)
	if err != nil || created || !again.SameSettings(asked) || !again.CreatedAt.Equal(g.CreatedAt) {
		t.Errorf("CreateGroup again with the same settings = %+v, created %v, %v; want the existing %+v, not created", again, created, err, g)
	}
	for _, other := range []struct {
		g     order.Group
		field string
	}{
		{settings("orders", 20*time.Second, 3), "ack_deadline"},
		{settings("orders", 10*time.Second, 4), "max_deliveries"},
	} {
		_, _, err := gs.CreateGroup(ctx, other.g, nil, maxGroups)
		wantKind(t, "CreateGroup with another "+other.field, err, order.KindAlreadyExists)
		if err != nil && !strings.Contains(err.Error(), other.field) {
			t.Errorf("CreateGroup with another %s: %q does not name the setting that differs", other.field, err)
		}
	}

	got, _, err := gs.Group(ctx, "orders")
	if err != nil {
		t.Fatalf("Group: %v", err)
	}
	if !got.SameSettings(asked) || !got.CreatedAt.Equal(g.CreatedAt) {
		t.Errorf("Group = %+v, want %+v", got, g)
	}
	checkState(t, "a new group on an empty log", gs, "orders", order.GroupState{Position: tails(t, s)})

	createGroup(t, gs, settings("b-group", time.Second, 1), nil)
	createGroup(t, gs, settings("a-group", time.Minute, 7), nil)
	list, err := gs.Groups(ctx)
	if err != nil {
		t.Fatalf("Groups: %v", err)
	}
	var ids []string
	for _, g := range list {
		ids = append(ids, g.ID)
	}
	if want := []string{"a-group", "b-group", "orders"}; !slices.Equal(ids, want) {
		t.Errorf("Groups = %v, want %v", ids, want)
	}
	if len(list) == 3 && !list[0].SameSettings(settings("a-group", time.Minute, 7)) {
		t.Errorf("Groups: %+v, want the settings it was created with", list[0])
	}

	// Three groups exist: a fourth is past a limit of three, an existing
	// one is still answered.
	_, _, err = gs.CreateGroup(ctx, settings("extra", time.Second, 1), nil, 3)
	wantKind(t, "CreateGroup past the limit", err, order.KindResourceExhausted)
	if _, created, err := gs.CreateGroup(ctx, asked, nil, 3); err != nil || created {
		t.Errorf("CreateGroup of an existing group at the limit: created %v, %v; want it answered", created, err)
	}
	_, _, err = gs.Group(ctx, "extra")
	wantKind(t, "Group of a group refused at the limit", err, order.KindNotFound)

	old := zeroCursor(t, s)
	for p := range old {
		old[p] = order.Offset{Ms: uint64(time.Now().Add(-retention - time.Minute).UnixMilli())}
	}
	_, _, err = gs.CreateGroup(ctx, settings("old", time.Second, 1), old, maxGroups)
	wantKind(t, "CreateGroup starting before retention", err, order.KindOutOfRange)
	_, _, err = gs.Group(ctx, "old")
	wantKind(t, "Group of a group refused for its start", err, order.KindNotFound)

	if err := gs.DeleteGroup(ctx, "a-group"); err != nil {
		t.Fatalf("DeleteGroup: %v", err)
	}
	_, _, err = gs.Group(ctx, "a-group")
	wantKind(t, "Group after DeleteGroup", err, order.KindNotFound)
	wantKind(t, "DeleteGroup again", gs.DeleteGroup(ctx, "a-group"), order.KindNotFound)
	if list, err := gs.Groups(ctx); err != nil || len(list) != 2 {
		t.Errorf("Groups after DeleteGroup = %+v, %v; want b-group and orders", list, err)
	}
	// The id is free again, for other settings too.
	createGroup(t, gs, settings("a-group", time.Second, 2), nil)

	id := order.AckID{EventID: order.EventID{Offset: order.Offset{Ms: 1}}, Attempt: 1}
	unknown := []struct {
		name string
		call func() error
	}{
		{"Group", func() error { _, _, err := gs.Group(ctx, "nope"); return err }},
		{"DeleteGroup", func() error { return gs.DeleteGroup(ctx, "nope") }},
		{"Deliver", func() error { _, err := gs.Deliver(ctx, "nope", "c", 10); return err }},
		{"Ack", func() error { _, err := gs.Ack(ctx, "nope", []order.AckID{id}); return err }},
		{"Nack", func() error { _, err := gs.Nack(ctx, "nope", []order.AckID{id}, 0, ""); return err }},
		{"DeadLetters", func() error { _, _, err := gs.DeadLetters(ctx, "nope", "", 10); return err }},
		{"Redrive", func() error { _, err := gs.Redrive(ctx, "nope", nil); return err }},
	}
	for _, u := range unknown {
		wantKind(t, u.name+" of an unknown group", u.call(), order.KindNotFound)
	}
}

// testGroupDelete: deleting a group deletes its deliveries and dead letters;
// a group created again under its id starts afresh.
func testGroupDelete(t *testing.T, su suite) {
	s := su.start(t, retention)
	gs := groupStore(t, s)
	g := settings("g", 30*time.Second, 1)
	createGroup(t, gs, g, zeroCursor(t, s))
	evs := expire(t, s, "del-0", "del-1")
	ds := deliverN(t, gs, "g", "c1", 2)
	// One in flight, one a dead letter.
	nack(t, gs, "g", 0, order.AckDone, byOrder(ds)["del-1"].AckID)
	deliverUntilDead(t, gs, "g", 1)

	if err := gs.DeleteGroup(t.Context(), "g"); err != nil {
		t.Fatalf("DeleteGroup: %v", err)
	}
	createGroup(t, gs, g, zeroCursor(t, s))
	checkState(t, "created again", gs, "g", order.GroupState{Position: zeroCursor(t, s), Backlog: 2, OldestUnacked: evs[0].ExpiredAt})
	if letters, _, err := gs.DeadLetters(t.Context(), "g", "", 10); err != nil || len(letters) != 0 {
		t.Errorf("DeadLetters of the group created again = %d letters, %v; want none", len(letters), err)
	}
	// The old ack ids name nothing the new group delivered.
	ack(t, gs, "g", order.AckUnknown, ackIDs(ds)...)
	checkDeliveries(t, "Deliver to the group created again", deliverN(t, gs, "g", "c2", 2), evs, 1)
}

// testGroupStart: a group gets every event after its start, once, whether
// it starts now, from all that is retained, or after a cursor; and every
// group gets every event.
func testGroupStart(t *testing.T, su suite) {
	s := su.start(t, retention)
	gs := groupStore(t, s)
	a := expire(t, s, "a-0", "a-1", "a-2")
	afterA := tails(t, s)
	b := expire(t, s, "b-0", "b-1", "b-2")
	now := tails(t, s)
	createGroup(t, gs, settings("now", 30*time.Second, 5), nil)
	createGroup(t, gs, settings("all", 30*time.Second, 5), zeroCursor(t, s))
	createGroup(t, gs, settings("after-a", 30*time.Second, 5), afterA)
	c := expire(t, s, "c-0", "c-1", "c-2")

	tests := []struct {
		group string
		start order.Cursor
		want  []order.Event
	}{
		{"now", now, c},
		{"all", zeroCursor(t, s), slices.Concat(a, b, c)},
		{"after-a", afterA, slices.Concat(b, c)},
	}
	for _, tt := range tests {
		t.Run(tt.group, func(t *testing.T) {
			checkState(t, "before any delivery", gs, tt.group, order.GroupState{
				Position: tt.start, Backlog: int64(len(tt.want)), OldestUnacked: oldest(tt.want),
			})
			ds := deliverN(t, gs, tt.group, "c1", len(tt.want))
			checkDeliveries(t, "Deliver", ds, tt.want, 1)
			deliverNone(t, gs, tt.group, "c1", "every event was delivered and is in flight")
			checkState(t, "after delivering all", gs, tt.group, order.GroupState{
				Position: tails(t, s), InFlight: int64(len(tt.want)), OldestUnacked: oldest(tt.want),
			})
		})
	}
}

// oldest returns when the earliest of some events was logged.
func oldest(evs []order.Event) time.Time {
	var t time.Time
	for _, ev := range evs {
		if t.IsZero() || ev.ExpiredAt.Before(t) {
			t = ev.ExpiredAt
		}
	}
	return t
}

// testGroupConsumers: two consumers of a group, pulling at once, never get
// the same event while it is in flight, and between them get every event;
// an acknowledged event is never delivered again.
func testGroupConsumers(t *testing.T, su suite) {
	s := su.start(t, retention)
	gs := groupStore(t, s)
	createGroup(t, gs, settings("g", 30*time.Second, 5), nil)
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = "w-" + strconv.Itoa(i)
	}
	evs := expire(t, s, ids...)

	var (
		mu  sync.Mutex
		all []order.Delivery
		by  = map[string]string{} // order id -> consumer
	)
	deadline := time.Now().Add(eventTimeout)
	var wg sync.WaitGroup
	for _, consumer := range []string{"c1", "c2"} {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				ds, err := gs.Deliver(t.Context(), "g", consumer, 3)
				if err != nil {
					t.Errorf("Deliver(%s): %v", consumer, err)
					return
				}
				if len(ds) > 3 {
					t.Errorf("Deliver(%s, 3) returned %d deliveries", consumer, len(ds))
				}
				mu.Lock()
				for _, d := range ds {
					if other, dup := by[d.Event.OrderID]; dup {
						t.Errorf("%s delivered to %s while in flight at %s", d.Event.OrderID, consumer, other)
					}
					by[d.Event.OrderID] = consumer
				}
				all = append(all, ds...)
				done := len(all) >= len(evs)
				mu.Unlock()
				if done {
					return
				}
				time.Sleep(time.Millisecond) // let the other consumer in
			}
		})
	}
	wg.Wait()
	checkDeliveries(t, "Deliver to two consumers", all, evs, 1)
	n := 0
	for _, c := range by {
		if c == "c1" {
			n++
		}
	}
	t.Logf("c1 got %d events, c2 %d", n, len(by)-n)
	deliverNone(t, gs, "g", "c1", "every event is in flight")
	deliverNone(t, gs, "g", "c2", "every event is in flight")

	ack(t, gs, "g", order.AckDone, ackIDs(all)...)
	checkState(t, "after acknowledging all", gs, "g", order.GroupState{Position: tails(t, s)})
	deliverNone(t, gs, "g", "c1", "every event was acknowledged")
}

// testGroupConsumerLimit: at most order.DefaultMaxGroupConsumers consumers
// hold deliveries of a group; past it a consumer that holds nothing and
// finds no redelivery due is refused, KindResourceExhausted, while the
// holders go on; one that settled all it held takes no place. (A
// partitioned store bounds each partition; the runs on one partition check
// the bound.)
func testGroupConsumerLimit(t *testing.T, su suite) {
	const limit = order.DefaultMaxGroupConsumers
	s := su.start(t, retention)
	gs := groupStore(t, s)
	if len(tails(t, s)) > 1 {
		t.Skip("a partitioned store bounds the consumers of each partition; the runs on one partition check the bound")
	}
	createGroup(t, gs, settings("g", time.Minute, 5), nil)
	const events = limit + 11
	for i := range events {
		checkout(t, s, "cl-"+strconv.Itoa(i), 20*time.Millisecond, nil)
	}
	for deadline := time.Now().Add(30 * time.Second); groupState(t, gs, "g").Backlog < events; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the group's backlog is %d after 30s, want %d", groupState(t, gs, "g").Backlog, events)
		}
	}
	var held []order.Delivery
	for i := range limit - 1 {
		held = append(held, deliverN(t, gs, "g", "holder-"+strconv.Itoa(i), 1)...)
	}
	// Each is the last place's holder for a moment, then holds nothing.
	for i := range 10 {
		ds := deliverN(t, gs, "g", "passer-"+strconv.Itoa(i), 1)
		ack(t, gs, "g", order.AckDone, ackIDs(ds)...)
	}
	held = append(held, deliverN(t, gs, "g", "holder-last", 1)...)
	refused := func(consumer string) {
		t.Helper()
		if ds, err := gs.Deliver(t.Context(), "g", consumer, 1); order.KindOf(err) != order.KindResourceExhausted || len(ds) != 0 {
			t.Fatalf("Deliver to %s past %d holding consumers: %d deliveries, %v; want KindResourceExhausted", consumer, limit, len(ds), err)
		}
	}
	refused("extra")
	refused("passer-0")
	ack(t, gs, "g", order.AckDone, held[0].AckID)
	deliverN(t, gs, "g", "extra", 1)
	refused("passer-1")
}

// testGroupAck: the outcome of each kind of ack id.
func testGroupAck(t *testing.T, su suite) {
	s := su.start(t, retention)
	gs := groupStore(t, s)
	before := expire(t, s, "before-0")
	createGroup(t, gs, settings("g", 30*time.Second, 5), nil)
	evs := expire(t, s, "k-0", "k-1", "k-2")
	ds := deliverN(t, gs, "g", "c1", 3)
	checkDeliveries(t, "Deliver", ds, evs, 1)

	ack(t, gs, "g", order.AckDone, ds[0].AckID)
	ack(t, gs, "g", order.AckNotInFlight, ds[0].AckID)
	// The stores deliver partition by partition, so ds[0] need not be
	// evs[0].
	var unacked []order.Event
	for _, ev := range evs {
		if ev.OrderID != ds[0].Event.OrderID {
			unacked = append(unacked, ev)
		}
	}
	checkState(t, "after one ack", gs, "g", order.GroupState{InFlight: 2, OldestUnacked: oldest(unacked)})

	last := evs[2]
	unknown := []struct {
		name string
		id   order.AckID
	}{
		{"a partition the log does not have", order.AckID{EventID: order.EventID{Partition: partitions(t, s), Offset: last.Offset}, Attempt: 1}},
		{"a cursor after the group's position", order.AckID{EventID: order.EventID{Partition: last.Partition, Offset: order.Offset{Ms: last.Offset.Ms + 1000}}, Attempt: 1}},
		// Just before the second event, after the group's start: a cursor
		// that the group passed, of no event.
		{"a cursor of no event", order.AckID{EventID: order.EventID{Partition: evs[1].Partition, Offset: order.Offset{Ms: evs[1].Offset.Ms - 1, Seq: 999999}}, Attempt: 1}},
		{"an event before the group's start", order.AckID{EventID: before[0].ID(), Attempt: 1}},
	}
	for _, u := range unknown {
		got, err := gs.Ack(t.Context(), "g", []order.AckID{u.id})
		if err != nil || len(got) != 1 || got[0] != order.AckUnknown {
			t.Errorf("Ack of %s (%v) = %v, %v; want [unknown]", u.name, u.id, got, err)
		}
	}

	// One call, each id's own outcome, in order; an unknown id fails the
	// call for none of the others.
	ids := []order.AckID{unknown[1].id, ds[1].AckID, ds[0].AckID, ds[2].AckID}
	got, err := gs.Ack(t.Context(), "g", ids)
	if err != nil {
		t.Fatalf("Ack(%v): %v", ids, err)
	}
	if want := []order.AckStatus{order.AckUnknown, order.AckDone, order.AckNotInFlight, order.AckDone}; !slices.Equal(got, want) {
		t.Errorf("Ack(%v) = %v, want %v", ids, got, want)
	}
	if got, err := gs.Ack(t.Context(), "g", nil); err != nil || len(got) != 0 {
		t.Errorf("Ack of no ids = %v, %v; want no statuses", got, err)
	}
	checkState(t, "after acknowledging all", gs, "g", order.GroupState{Position: tails(t, s)})
}

// testGroupRedelivery: an event not acknowledged within its ack deadline is
// delivered again, to any consumer, one attempt higher; the earlier ack id
// has expired; an acknowledged event never comes back.
func testGroupRedelivery(t *testing.T, su suite) {
	const ackDeadline = 250 * time.Millisecond
	s := su.start(t, retention)
	gs := groupStore(t, s)
	createGroup(t, gs, settings("g", ackDeadline, 5), nil)
	evs := expire(t, s, "r-0", "r-1")
	sent := time.Now()
	ds := deliverN(t, gs, "g", "c1", 2)
	checkDeliveries(t, "Deliver", ds, evs, 1)
	deliverNone(t, gs, "g", "c2", "both events are in flight at c1")
	if time.Since(sent) > ackDeadline/2 {
		t.Fatalf("delivery took %v, too close to the ack deadline of %v to test it", time.Since(sent), ackDeadline)
	}
	byID := byOrder(ds)
	ack(t, gs, "g", order.AckDone, byID["r-0"].AckID)
	checkState(t, "one acknowledged, one in flight", gs, "g", order.GroupState{Position: tails(t, s), InFlight: 1, OldestUnacked: evs[1].ExpiredAt})

	again := deliverN(t, gs, "g", "c2", 1)
	if d := time.Since(sent); d < ackDeadline-clockSlack {
		t.Errorf("redelivered %v after the delivery, before the ack deadline of %v", d, ackDeadline)
	}
	checkDeliveries(t, "Deliver after the ack deadline", again, evs[1:], 2)
	ack(t, gs, "g", order.AckExpired, byID["r-1"].AckID)
	checkState(t, "redelivered", gs, "g", order.GroupState{Position: tails(t, s), InFlight: 1, OldestUnacked: evs[1].ExpiredAt})
	ack(t, gs, "g", order.AckDone, again[0].AckID)
	ack(t, gs, "g", order.AckNotInFlight, again[0].AckID)

	// An ack after the deadline, before anyone took the event again, has
	// expired as well; the event is delivered again.
	late := expire(t, s, "r-late")
	d := deliverN(t, gs, "g", "c1", 1)
	checkDeliveries(t, "Deliver", d, late, 1)
	time.Sleep(ackDeadline + 50*time.Millisecond) // the deadline must pass: nothing to wait on
	ack(t, gs, "g", order.AckExpired, d[0].AckID)
	d = deliverN(t, gs, "g", "c1", 1)
	checkDeliveries(t, "Deliver after an expired ack", d, late, 2)
	ack(t, gs, "g", order.AckDone, d[0].AckID)
	checkState(t, "all acknowledged", gs, "g", order.GroupState{Position: tails(t, s)})

	time.Sleep(ackDeadline + 50*time.Millisecond) // past every ack deadline
	deliverNone(t, gs, "g", "c1", "every event was acknowledged, so none is delivered again")
}

// testGroupOwnRedelivery: an event that lapsed at a consumer goes to another
// consumer first; to the one that let it lapse only OwnRedeliveryDelay after
// its deadline. A nacked event is due at once to the consumer that nacked it
// too.
func testGroupOwnRedelivery(t *testing.T, su suite) {
	const ackDeadline = 400 * time.Millisecond
	s := su.start(t, retention)
	gs := groupStore(t, s)
	g := createGroup(t, gs, settings("g", ackDeadline, 5), nil)
	own := g.OwnRedeliveryDelay()
	evs := expire(t, s, "o-0")

	sent := time.Now()
	d1 := deliverN(t, gs, "g", "c1", 1)
	checkDeliveries(t, "Deliver", d1, evs, 1)
	time.Sleep(time.Until(sent.Add(ackDeadline + clockSlack))) // past the deadline: nothing to wait on
	deliverNone(t, gs, "g", "c1", "the event lapsed at c1: it is due to another consumer first")
	if time.Since(sent) > ackDeadline+own-clockSlack {
		t.Fatalf("%v passed since the delivery, too long to tell the ack deadline %v from the delay of %v", time.Since(sent), ackDeadline, own)
	}
	before := time.Now()
	d2 := deliverN(t, gs, "g", "c2", 1)
	checkDeliveries(t, "Deliver to another consumer after the ack deadline", d2, evs, 2)

	// c2 lets it lapse too, and takes it back itself, but only after the
	// delay.
	d3 := deliverN(t, gs, "g", "c2", 1)
	if d := time.Since(before); d < ackDeadline+own-clockSlack {
		t.Errorf("c2 got back the event that lapsed at it %v after its delivery, before the ack deadline %v and the delay %v", d, ackDeadline, own)
	}
	checkDeliveries(t, "Deliver to the same consumer after the delay", d3, evs, 3)

	nack(t, gs, "g", 0, order.AckDone, d3[0].AckID)
	nacked := time.Now()
	d4 := deliverN(t, gs, "g", "c2", 1)
	if d := time.Since(nacked); d > own/2 {
		t.Errorf("the consumer that nacked an event got it back %v after the nack, want at once", d)
	}
	checkDeliveries(t, "Deliver after a nack", d4, evs, 4)
	ack(t, gs, "g", order.AckDone, d4[0].AckID)
	checkState(t, "acknowledged", gs, "g", order.GroupState{Position: tails(t, s)})
}

// testGroupNack: a nack hands an event back for delivery after retry_after,
// at once for zero, never later than the ack deadline.
func testGroupNack(t *testing.T, su suite) {
	const (
		ackDeadline = 2 * time.Second
		retryAfter  = 300 * time.Millisecond
	)
	s := su.start(t, retention)
	gs := groupStore(t, s)
	createGroup(t, gs, settings("g", ackDeadline, 10), nil)
	evs := expire(t, s, "n-0")
	d1 := deliverN(t, gs, "g", "c1", 1)

	nacked := time.Now()
	nack(t, gs, "g", 0, order.AckDone, d1[0].AckID)
	d2 := deliverN(t, gs, "g", "c2", 1)
	if d := time.Since(nacked); d > ackDeadline/2 {
		t.Errorf("redelivered %v after a nack with no retry_after, want at once", d)
	}
	checkDeliveries(t, "Deliver after a nack", d2, evs, 2)
	nack(t, gs, "g", 0, order.AckExpired, d1[0].AckID)

	nacked = time.Now()
	nack(t, gs, "g", retryAfter, order.AckDone, d2[0].AckID)
	deliverNone(t, gs, "g", "c1", "the nack's retry_after has not passed")
	checkState(t, "handed back", gs, "g", order.GroupState{Position: tails(t, s), InFlight: 1, OldestUnacked: evs[0].ExpiredAt})
	d3 := deliverN(t, gs, "g", "c1", 1)
	if d := time.Since(nacked); d < retryAfter-clockSlack || d > ackDeadline*3/4 {
		t.Errorf("redelivered %v after a nack with retry_after %v, want after it and well before the ack deadline %v", d, retryAfter, ackDeadline)
	}
	checkDeliveries(t, "Deliver after retry_after", d3, evs, 3)

	// A retry_after longer than the ack deadline is cut to it.
	nacked = time.Now()
	nack(t, gs, "g", time.Hour, order.AckDone, d3[0].AckID)
	d4 := deliverN(t, gs, "g", "c2", 1)
	if d := time.Since(nacked); d < ackDeadline-clockSlack {
		t.Errorf("redelivered %v after a nack with retry_after 1h, want after the ack deadline %v", d, ackDeadline)
	}
	checkDeliveries(t, "Deliver after a long retry_after", d4, evs, 4)

	ack(t, gs, "g", order.AckDone, d4[0].AckID)
	nack(t, gs, "g", 0, order.AckNotInFlight, d4[0].AckID)
	nack(t, gs, "g", 0, order.AckUnknown, order.AckID{EventID: order.EventID{Partition: evs[0].Partition, Offset: order.Offset{Ms: evs[0].Offset.Ms + 1000}}, Attempt: 1})
	checkState(t, "acknowledged", gs, "g", order.GroupState{Position: tails(t, s)})
	deliverNone(t, gs, "g", "c1", "the event was acknowledged")
}

// testGroupDeadLetters: an event that had max_deliveries deliveries becomes
// a dead letter; dead letters are listed page by page and put back, some or
// all, to be delivered again from attempt 1.
func testGroupDeadLetters(t *testing.T, su suite) {
	s := su.start(t, retention)
	gs := groupStore(t, s)
	ctx := t.Context()
	createGroup(t, gs, settings("g", 30*time.Second, 2), nil)
	evs := expire(t, s, "dl-0", "dl-1", "dl-2", "dl-3", "dl-4")

	ds := deliverN(t, gs, "g", "c1", 5)
	checkDeliveries(t, "first delivery", ds, evs, 1)
	nack(t, gs, "g", 0, order.AckDone, ackIDs(ds)...)
	ds = deliverN(t, gs, "g", "c2", 5)
	checkDeliveries(t, "second delivery", ds, evs, 2)
	nack(t, gs, "g", 0, order.AckDone, ackIDs(ds)...)
	deliverUntilDead(t, gs, "g", 5)
	checkState(t, "all dead letters", gs, "g", order.GroupState{Position: tails(t, s), DeadLetters: 5})
	ack(t, gs, "g", order.AckNotInFlight, ackIDs(ds)...)

	// Page by page, two at a time.
	var letters []order.DeadLetter
	var sizes []int
	token := ""
	for range 10 {
		page, next, err := gs.DeadLetters(ctx, "g", token, 2)
		if err != nil {
			t.Fatalf("DeadLetters(page token %q): %v", token, err)
		}
		letters = append(letters, page...)
		sizes = append(sizes, len(page))
		if next == "" {
			break
		}
		token = next
	}
	if !slices.Equal(sizes, []int{2, 2, 1}) {
		t.Errorf("pages of 2 over 5 dead letters have %v letters, want [2 2 1]", sizes)
	}
	checkLetters(t, "DeadLetters", letters, evs, 2)

	for _, bad := range []string{"nope", "0/abc", "-1/1-0"} {
		_, _, err := gs.DeadLetters(ctx, "g", bad, 2)
		wantKind(t, "DeadLetters with page token "+strconv.Quote(bad), err, order.KindInvalid)
	}

	// Redrive two by id; a well-formed id of no dead letter is skipped.
	redriven := map[string]bool{letters[0].Event.OrderID: true, letters[3].Event.OrderID: true}
	unknownID := order.EventID{Offset: order.Offset{Ms: 1}}.String()
	n, err := gs.Redrive(ctx, "g", []string{letters[0].ID.String(), letters[3].ID.String(), unknownID})
	if err != nil || n != 2 {
		t.Errorf("Redrive of two dead letters and an unknown one = %d, %v; want 2", n, err)
	}
	var some, rest []order.Event
	for _, ev := range evs {
		if redriven[ev.OrderID] {
			some = append(some, ev)
		} else {
			rest = append(rest, ev)
		}
	}
	left, next, err := gs.DeadLetters(ctx, "g", "", 10)
	if err != nil || next != "" {
		t.Fatalf("DeadLetters after a redrive: next %q, %v", next, err)
	}
	checkLetters(t, "DeadLetters after a redrive", left, rest, 2)
	checkState(t, "two redriven", gs, "g", order.GroupState{Position: tails(t, s), Backlog: 2, DeadLetters: 3, OldestUnacked: oldest(some)})
	rd := deliverN(t, gs, "g", "c1", 2)
	checkDeliveries(t, "Deliver after a redrive", rd, some, 1)

	// Redrive all.
	if n, err := gs.Redrive(ctx, "g", nil); err != nil || n != 3 {
		t.Errorf("Redrive of all = %d, %v; want 3", n, err)
	}
	if left, _, err := gs.DeadLetters(ctx, "g", "", 10); err != nil || len(left) != 0 {
		t.Errorf("DeadLetters after redriving all: %d letters, %v; want none", len(left), err)
	}
	ra := deliverN(t, gs, "g", "c2", 3)
	checkDeliveries(t, "Deliver after redriving all", ra, rest, 1)
	ack(t, gs, "g", order.AckDone, ackIDs(slices.Concat(rd, ra))...)
	checkState(t, "all acknowledged", gs, "g", order.GroupState{Position: tails(t, s)})
	if n, err := gs.Redrive(ctx, "g", nil); err != nil || n != 0 {
		t.Errorf("Redrive with no dead letters = %d, %v; want 0", n, err)
	}
}

// testGroupLastAttempt: an event whose last delivery is nacked is a dead
// letter at once, and one whose last delivery lapses is one from its ack
// deadline on, in the group's state and its list of dead letters, without
// any Deliver to move it; put back, both are backlog until delivered again.
func testGroupLastAttempt(t *testing.T, su suite) {
	const ackDeadline = 300 * time.Millisecond
	s := su.start(t, retention)
	gs := groupStore(t, s)
	ctx := t.Context()
	createGroup(t, gs, settings("g", ackDeadline, 1), nil)
	evs := expire(t, s, "la-nacked", "la-lapsed")
	nacked, lapsed := evs[0], evs[1]
	sent := time.Now()
	ds := deliverN(t, gs, "g", "c1", 2)
	checkDeliveries(t, "Deliver", ds, evs, 1)
	byID := byOrder(ds)

	// With a retry_after, so that the event would not be due again before
	// the checks below if the nack only handed it back.
	nack(t, gs, "g", time.Minute, order.AckDone, byID[nacked.OrderID].AckID)
	if time.Since(sent) > ackDeadline/2 {
		t.Fatalf("delivery and nack took %v, too close to the ack deadline of %v to test it", time.Since(sent), ackDeadline)
	}
	checkState(t, "the last attempt nacked", gs, "g", order.GroupState{Position: tails(t, s), InFlight: 1, DeadLetters: 1, OldestUnacked: lapsed.ExpiredAt})
	letters, _, err := gs.DeadLetters(ctx, "g", "", 10)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	checkLetters(t, "DeadLetters after a nack of the last attempt", letters, evs[:1], 1)
	ack(t, gs, "g", order.AckNotInFlight, byID[nacked.OrderID].AckID)

	time.Sleep(time.Until(sent.Add(ackDeadline + clockSlack))) // past the deadline: nothing to wait on
	checkState(t, "the last attempt lapsed", gs, "g", order.GroupState{Position: tails(t, s), DeadLetters: 2})
	letters, _, err = gs.DeadLetters(ctx, "g", "", 10)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	checkLetters(t, "DeadLetters after the last attempt lapsed", letters, evs, 1)
	ack(t, gs, "g", order.AckNotInFlight, byID[lapsed.OrderID].AckID)

	if n, err := gs.Redrive(ctx, "g", nil); err != nil || n != 2 {
		t.Fatalf("Redrive of all = %d, %v; want 2", n, err)
	}
	checkState(t, "redriven", gs, "g", order.GroupState{Position: tails(t, s), Backlog: 2, OldestUnacked: oldest(evs)})
	again := deliverN(t, gs, "g", "c2", 2)
	checkDeliveries(t, "Deliver after the redrive", again, evs, 1)
	checkState(t, "redelivered", gs, "g", order.GroupState{Position: tails(t, s), InFlight: 2, OldestUnacked: oldest(evs)})
	ack(t, gs, "g", order.AckDone, ackIDs(again)...)
	checkState(t, "acknowledged", gs, "g", order.GroupState{Position: tails(t, s)})
}

// testGroupRelease: a released delivery is due again at once, to any
// consumer, with the attempt it had: a release of an event's last delivery
// never makes it a dead letter, and one of a first delivery is backlog
// again.
func testGroupRelease(t *testing.T, su suite) {
	const ackDeadline = 5 * time.Second
	s := su.start(t, retention)
	gs := groupStore(t, s)
	ctx := t.Context()
	createGroup(t, gs, settings("g", ackDeadline, 2), nil)
	evs := expire(t, s, "rl-0")
	d1 := deliverN(t, gs, "g", "c1", 1)
	release := func(want order.AckStatus, ids ...order.AckID) {
		t.Helper()
		st, err := gs.Release(ctx, "g", ids)
		if err != nil {
			t.Fatalf("Release: %v", err)
		}
		checkStatuses(t, "Release", st, want, ids)
	}
	released := time.Now()
	release(order.AckDone, d1[0].AckID)
	checkState(t, "the first delivery released", gs, "g", order.GroupState{Position: tails(t, s), Backlog: 1, OldestUnacked: evs[0].ExpiredAt})
	d2 := deliverN(t, gs, "g", "c1", 1)
	if d := time.Since(released); d > ackDeadline/2 {
		t.Errorf("redelivered %v after a release, want at once", d)
	}
	checkDeliveries(t, "Deliver after a release of attempt 1", d2, evs, 1)

	nack(t, gs, "g", 0, order.AckDone, d2[0].AckID)
	d3 := deliverN(t, gs, "g", "c2", 1)
	checkDeliveries(t, "Deliver after a nack", d3, evs, 2)
	// The last delivery released: handed back, not a dead letter.
	release(order.AckDone, d3[0].AckID)
	checkState(t, "the last delivery released", gs, "g", order.GroupState{Position: tails(t, s), InFlight: 1, OldestUnacked: evs[0].ExpiredAt})
	d4 := deliverN(t, gs, "g", "c1", 1)
	checkDeliveries(t, "Deliver after a release of the last attempt", d4, evs, 2)
	ack(t, gs, "g", order.AckDone, d4[0].AckID)
	release(order.AckNotInFlight, d4[0].AckID)
	checkState(t, "acknowledged", gs, "g", order.GroupState{Position: tails(t, s)})
}

// checkLetters checks that dead letters are of the wanted events, each once,
// oldest first in each partition, with the given attempts.
func checkLetters(t *testing.T, what string, letters []order.DeadLetter, want []order.Event, attempts int) {
	t.Helper()
	byID := map[string]order.DeadLetter{}
	last := map[int]order.Offset{}
	for _, l := range letters {
		if _, dup := byID[l.Event.OrderID]; dup {
			t.Errorf("%s: %s listed twice", what, l.Event.OrderID)
		}
		byID[l.Event.OrderID] = l
		if c, ok := last[l.Event.Partition]; ok && !c.Less(l.Event.Offset) {
			t.Errorf("%s: %s (%v) listed after %v of its partition, want oldest first", what, l.Event.OrderID, l.Event.Offset, c)
		}
		last[l.Event.Partition] = l.Event.Offset
	}
	if len(letters) != len(want) {
		t.Errorf("%s: %d letters, want %v", what, len(letters), orderIDs(want))
	}
	for _, ev := range want {
		l, ok := byID[ev.OrderID]
		if !ok {
			t.Errorf("%s: no dead letter of %s", what, ev.OrderID)
			continue
		}
		if l.ID != ev.ID() || l.Attempts != attempts || l.Event.Offset != ev.Offset || !l.Event.ExpiredAt.Equal(ev.ExpiredAt) {
			t.Errorf("%s: %+v, want id %s, %d attempts, the logged event %+v", what, l, ev.ID(), attempts, ev)
		}
	}
}

// testGroupState follows a group's state through deliveries, acks, a dead
// letter and a redrive.
func testGroupState(t *testing.T, su suite) {
	s := su.start(t, retention)
	gs := groupStore(t, s)
	// All of partition 0, so that they are delivered in this order.
	ids := idsOf(t, s, 0, "st-", 3)
	evs := expire(t, s, ids...)
	zero := zeroCursor(t, s)
	at := func(c order.Offset) order.Cursor {
		p := zero.Clone()
		p[0] = c
		return p
	}
	createGroup(t, gs, settings("g", 30*time.Second, 1), zero)
	checkState(t, "created", gs, "g", order.GroupState{Position: zero, Backlog: 3, OldestUnacked: evs[0].ExpiredAt})

	d0 := deliverN(t, gs, "g", "c1", 1)
	checkDeliveries(t, "first Deliver", d0, evs[:1], 1)
	checkState(t, "one delivered", gs, "g", order.GroupState{Position: at(evs[0].Offset), Backlog: 2, InFlight: 1, OldestUnacked: evs[0].ExpiredAt})
	ack(t, gs, "g", order.AckDone, d0[0].AckID)
	checkState(t, "one acknowledged", gs, "g", order.GroupState{Position: at(evs[0].Offset), Backlog: 2, OldestUnacked: evs[1].ExpiredAt})

	ds := deliverN(t, gs, "g", "c1", 2)
	checkDeliveries(t, "second Deliver", ds, evs[1:], 1)
	d1, d2 := byOrder(ds)[ids[1]], byOrder(ds)[ids[2]]
	checkState(t, "all delivered", gs, "g", order.GroupState{Position: at(evs[2].Offset), InFlight: 2, OldestUnacked: evs[1].ExpiredAt})
	ack(t, gs, "g", order.AckDone, d2.AckID)
	checkState(t, "the newer acknowledged", gs, "g", order.GroupState{Position: at(evs[2].Offset), InFlight: 1, OldestUnacked: evs[1].ExpiredAt})

	// A dead letter is not unacknowledged: the group gave up on it.
	nack(t, gs, "g", 0, order.AckDone, d1.AckID)
	deliverUntilDead(t, gs, "g", 1)
	checkState(t, "the older a dead letter", gs, "g", order.GroupState{Position: at(evs[2].Offset), DeadLetters: 1})
	if n, err := gs.Redrive(t.Context(), "g", nil); err != nil || n != 1 {
		t.Fatalf("Redrive = %d, %v; want 1", n, err)
	}
	checkState(t, "redriven", gs, "g", order.GroupState{Position: at(evs[2].Offset), Backlog: 1, OldestUnacked: evs[1].ExpiredAt})
}

// testGroupRetention: trimming keeps every event a group still needs (not
// yet delivered, in flight, or a dead letter), long past retention, and
// trims the events once no group needs them. An event before a needed one,
// that no group needs, may be kept with it: a Redis stream is trimmed in
// whole nodes of entries, so only the memory store's own test asks that it
// go first.
func testGroupRetention(t *testing.T, su suite) {
	const keep = time.Second
	tests := []struct {
		name string
		// hold makes the group need y; x, before it, was delivered and
		// acknowledged.
		hold func(t *testing.T, gs order.GroupStore, y order.Event)
		// release gets y from the group, checks it and lets it go.
		release func(t *testing.T, gs order.GroupStore, y order.Event)
	}{
		{
			"not delivered",
			func(*testing.T, order.GroupStore, order.Event) {},
			func(t *testing.T, gs order.GroupStore, y order.Event) {
				d := deliverN(t, gs, "g", "c1", 1)
				checkDeliveries(t, "Deliver long after retention", d, []order.Event{y}, 1)
				ack(t, gs, "g", order.AckDone, d[0].AckID)
			},
		},
		{
			"in flight",
			func(t *testing.T, gs order.GroupStore, y order.Event) {
				checkDeliveries(t, "Deliver", deliverN(t, gs, "g", "c1", 1), []order.Event{y}, 1)
			},
			func(t *testing.T, gs order.GroupStore, y order.Event) {
				nack(t, gs, "g", 0, order.AckDone, order.AckID{EventID: y.ID(), Attempt: 1})
				d := deliverN(t, gs, "g", "c1", 1)
				checkDeliveries(t, "Deliver after a nack long after retention", d, []order.Event{y}, 2)
				ack(t, gs, "g", order.AckDone, d[0].AckID)
			},
		},
		{
			"dead letter",
			func(t *testing.T, gs order.GroupStore, y order.Event) {
				for attempt := 1; attempt <= 2; attempt++ {
					d := deliverN(t, gs, "g", "c1", 1)
					checkDeliveries(t, "Deliver", d, []order.Event{y}, attempt)
					nack(t, gs, "g", 0, order.AckDone, d[0].AckID)
				}
				deliverUntilDead(t, gs, "g", 1)
			},
			func(t *testing.T, gs order.GroupStore, y order.Event) {
				letters, _, err := gs.DeadLetters(t.Context(), "g", "", 10)
				if err != nil {
					t.Fatalf("DeadLetters: %v", err)
				}
				checkLetters(t, "DeadLetters long after retention", letters, []order.Event{y}, 2)
				if n, err := gs.Redrive(t.Context(), "g", nil); err != nil || n != 1 {
					t.Fatalf("Redrive = %d, %v; want 1", n, err)
				}
				d := deliverN(t, gs, "g", "c1", 1)
				checkDeliveries(t, "Deliver after a redrive long after retention", d, []order.Event{y}, 1)
				ack(t, gs, "g", order.AckDone, d[0].AckID)
			},
		},
		{
			"group deleted",
			func(*testing.T, order.GroupStore, order.Event) {},
			func(t *testing.T, gs order.GroupStore, y order.Event) {
				if err := gs.DeleteGroup(t.Context(), "g"); err != nil {
					t.Fatalf("DeleteGroup: %v", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := su.start(t, keep)
			gs := groupStore(t, s)
			createGroup(t, gs, settings("g", 30*time.Second, 2), nil)
			// Both of partition 0, x before y: the log can lose x and keep y.
			ids := idsOf(t, s, 0, "ret-", 2)
			evs := expire(t, s, ids...)
			x, y := evs[0], evs[1]
			d := deliverN(t, gs, "g", "c1", 1)
			checkDeliveries(t, "Deliver", d, evs[:1], 1)
			ack(t, gs, "g", order.AckDone, d[0].AckID)
			tt.hold(t, gs, y)

			// Past retention and a trim or two more, y is still there.
			time.Sleep(time.Until(y.ExpiredAt.Add(keep + 1500*time.Millisecond)))
			if countFor(allEvents(t, s), y.OrderID) != 1 {
				t.Fatalf("the event of %s was trimmed %v after it was logged, while the group still needed it", y.OrderID, time.Since(y.ExpiredAt))
			}
			tt.release(t, gs, y)
			// No group needs either now.
			released := time.Now()
			waitTrimmed(t, s, x, released)
			waitTrimmed(t, s, y, released)
		})
	}
}

// waitTrimmed waits until trimming has dropped an event older than
// retention that no group needs since the given time, and fails the test
// when that takes more than a few seconds.
func waitTrimmed(t *testing.T, s order.Store, ev order.Event, since time.Time) {
	t.Helper()
	const bound = 3 * time.Second
	for countFor(allEvents(t, s), ev.OrderID) != 0 {
		if time.Since(since) > bound {
			t.Fatalf("the event of %s is still in the log %v after it was logged, although no group needs it", ev.OrderID, time.Since(ev.ExpiredAt))
		}
		time.Sleep(50 * time.Millisecond) // polling: nothing announces a trim
	}
}

// PushSettings returns the settings of a push group to create, with a
// secret in the Standard Webhooks form.
func PushSettings(id, url string) order.Group {
	g := settings(id, 10*time.Second, 3)
	g.Push = order.PushConfig{URL: url, Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", MaxConcurrency: 4, Timeout: 1500 * time.Millisecond}
	return g
}

// testGroupPush: a group's push endpoint and secret are kept with it, read
// back by Group and Groups as created; creating it again with other push
// settings is KindAlreadyExists naming them, never showing a secret; a
// group without push has none.
func testGroupPush(t *testing.T, su suite) {
	s := su.start(t, retention)
	gs := groupStore(t, s)
	ctx := t.Context()

	asked := PushSettings("hooks", "https://hooks.example.com/expired?team=a%20b")
	g := createGroup(t, gs, asked, nil)
	if g.Push != asked.Push {
		t.Errorf("CreateGroup answered push settings %v, want %v", g.Push, asked.Push)
	}
	createGroup(t, gs, settings("pull", time.Second, 1), nil)
	got, _, err := gs.Group(ctx, "hooks")
	if err != nil {
		t.Fatalf("Group: %v", err)
	}
	if got.Push != asked.Push || got.Push.Secret != asked.Push.Secret {
		t.Errorf("Group: push settings %v, want %v (the secret too, which the deliverer signs with)", got.Push, asked.Push)
	}
	list, err := gs.Groups(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("Groups = %+v, %v; want hooks and pull", list, err)
	}
	if list[0].Push != asked.Push || list[0].Push.Secret != asked.Push.Secret {
		t.Errorf("Groups: hooks has push settings %v, want %v", list[0].Push, asked.Push)
	}
	if list[1].Push.Enabled() || list[1].Push != (order.PushConfig{}) {
		t.Errorf("Groups: pull has push settings %v, want none", list[1].Push)
	}
	if again, created, err := gs.CreateGroup(ctx, asked, nil, maxGroups); err != nil || created || again.Push != asked.Push {
		t.Errorf("CreateGroup again with the same push settings = %v, created %v, %v; want the existing group", again.Push, created, err)
	}

	other := func(f func(*order.PushConfig)) order.Group {
		g := asked
		f(&g.Push)
		return g
	}
	for _, o := range []struct {
		g     order.Group
		names string
	}{
		{other(func(p *order.PushConfig) { p.URL = "https://elsewhere.example.com/" }), "push url"},
		{other(func(p *order.PushConfig) { p.Secret = "whsec_bm90IHRoZSBzYW1lIHNlY3JldCBhdCBhbGwh" }), "push secret"},
		{other(func(p *order.PushConfig) { p.MaxConcurrency = 5 }), "push max_concurrency"},
		{other(func(p *order.PushConfig) { p.Timeout = time.Second }), "push timeout"},
		{other(func(p *order.PushConfig) { *p = order.PushConfig{} }), "push url"},
	} {
		_, _, err := gs.CreateGroup(ctx, o.g, nil, maxGroups)
		wantKind(t, "CreateGroup with another "+o.names, err, order.KindAlreadyExists)
		if err == nil {
			continue
		}
		if !strings.Contains(err.Error(), o.names) {
			t.Errorf("CreateGroup with another %s: %q does not name it", o.names, err)
		}
		for _, secret := range []string{asked.Push.Secret, o.g.Push.Secret} {
			if secret != "" && strings.Contains(err.Error(), strings.TrimPrefix(secret, "whsec_")) {
				t.Errorf("CreateGroup with another %s: %q shows a secret", o.names, err)
			}
		}
	}
}

// testGroupDeadLetterWhy: a dead letter says why its last delivery failed,
// when, and when its first and last deliveries were: the reason of a nack
// of the last attempt ("nacked" for none), or "ack deadline passed" at its
// last delivery's deadline when that lapsed, whatever earlier nacks said.
func testGroupDeadLetterWhy(t *testing.T, su suite) {
	const ackDeadline = 400 * time.Millisecond
	s := su.start(t, retention)
	gs := groupStore(t, s)
	ctx := t.Context()
	createGroup(t, gs, settings("g", ackDeadline, 2), nil)
	evs := expire(t, s, "why-nacked", "why-bare", "why-lapsed")
	first := time.Now()
	ds := deliverN(t, gs, "g", "c1", 3)
	nackWith := func(reason string, ids ...order.AckID) {
		t.Helper()
		st, err := gs.Nack(ctx, "g", ids, 0, reason)
		if err != nil {
			t.Fatalf("Nack: %v", err)
		}
		checkStatuses(t, "Nack", st, order.AckDone, ids)
	}
	nackWith("first try", ackIDs(ds)...)
	time.Sleep(50 * time.Millisecond) // so that the two deliveries' times differ
	second := time.Now()
	ds = deliverN(t, gs, "g", "c2", 3)
	checkDeliveries(t, "second delivery", ds, evs, 2)
	byID := byOrder(ds)
	nackWith("card declined", byID["why-nacked"].AckID)
	nacked := time.Now()
	nackWith("", byID["why-bare"].AckID)
	time.Sleep(time.Until(second.Add(ackDeadline + clockSlack)))
	done := time.Now()

	letters, _, err := gs.DeadLetters(ctx, "g", "", 10)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	checkLetters(t, "DeadLetters", letters, evs, 2)
	within := func(what string, got, from, to time.Time) {
		t.Helper()
		if got.Before(from.Add(-clockSlack)) || got.After(to.Add(clockSlack)) {
			t.Errorf("%s is %v, want between %v and %v", what, got.Format(time.StampMilli), from.Format(time.StampMilli), to.Format(time.StampMilli))
		}
	}
	for _, l := range letters {
		id := l.Event.OrderID
		within(id+" first delivery", l.FirstDelivered, first, second)
		within(id+" last delivery", l.LastDelivered, second, nacked)
		switch id {
		case "why-nacked":
			if l.Reason != "card declined" {
				t.Errorf("%s: reason %q, want the nack's %q", id, l.Reason, "card declined")
			}
			within(id+" failure", l.FailedAt, second, nacked)
		case "why-bare":
			if l.Reason != order.ReasonNacked {
				t.Errorf("%s: reason %q, want %q for a nack without one", id, l.Reason, order.ReasonNacked)
			}
			within(id+" failure", l.FailedAt, second, done)
		case "why-lapsed":
			if l.Reason != order.ReasonAckDeadline {
				t.Errorf("%s: reason %q, want %q (not the first attempt's nack)", id, l.Reason, order.ReasonAckDeadline)
			}
			if !l.FailedAt.Equal(l.LastDelivered.Add(ackDeadline)) {
				t.Errorf("%s: failed at %v, want its last delivery %v plus the ack deadline %v", id, l.FailedAt, l.LastDelivered, ackDeadline)
			}
		}
	}

	// Put back and delivered again, an event starts afresh: a dead letter
	// again, it shows only its new deliveries.
	if n, err := gs.Redrive(ctx, "g", []string{letters[0].ID.String()}); err != nil || n != 1 {
		t.Fatalf("Redrive = %d, %v; want 1", n, err)
	}
	third := time.Now()
	again := deliverN(t, gs, "g", "c1", 1)
	nackWith("again", again[0].AckID)
	again = deliverN(t, gs, "g", "c1", 1)
	nackWith("and again", again[0].AckID)
	letters, _, err = gs.DeadLetters(ctx, "g", "", 10)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	i := slices.IndexFunc(letters, func(l order.DeadLetter) bool { return l.Event.OrderID == again[0].Event.OrderID })
	if i < 0 {
		t.Fatalf("the redriven event %s is not a dead letter again: %+v", again[0].Event.OrderID, letters)
	}
	l := letters[i]
	within("redriven first delivery", l.FirstDelivered, third, time.Now())
	if l.Reason != "and again" || l.Attempts != 2 {
		t.Errorf("redriven dead letter: reason %q after %d attempts, want %q after 2", l.Reason, l.Attempts, "and again")
	}
}
