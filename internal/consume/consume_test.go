package consume_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/consume"
	"github.com/orderexpiry/orderexpiry/internal/memstore"
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/storetest"
	"github.com/orderexpiry/orderexpiry/internal/watch"
)

// never is a poll that never comes within a test: what is delivered was
// woken for.
const never = time.Hour

// wait bounds how long a test waits for what it expects: long, since a
// wake that works answers within milliseconds and one that is missing
// never does.
const wait = 10 * time.Second

// sink is a Sink that holds up to limit deliveries until the test frees
// them, as a stream holds those not acknowledged yet. held is the loop's
// alone; the test reaches it through the mailbox (freed) and wake, as the
// rpc and push sinks are reached.
type sink struct {
	limit int
	held  int
	// room, when set, replaces limit-held: the room reported each time.
	room int
	put  chan order.Delivery
	wake chan struct{}
	// putErr, failErr and wokenErr end the loop from Put, Failed and
	// Woken.
	putErr, failErr, wokenErr error

	mu      sync.Mutex
	freed   int
	look    bool
	fails   int
	roomLog []int
}

func newSink(limit int) *sink {
	return &sink{limit: limit, put: make(chan order.Delivery, 100), wake: make(chan struct{}, 1)}
}

func (s *sink) Room() int {
	r := s.limit - s.held
	if s.room > 0 {
		r = s.room
	}
	s.mu.Lock()
	s.roomLog = append(s.roomLog, r)
	s.mu.Unlock()
	return r
}

func (s *sink) Put(_ context.Context, d order.Delivery) error {
	if s.putErr != nil {
		return s.putErr
	}
	s.held++
	s.put <- d
	return nil
}

func (s *sink) Failed(ctx context.Context, err error) error {
	s.mu.Lock()
	s.fails++
	s.mu.Unlock()
	if s.failErr != nil {
		return fmt.Errorf("%w: %w", s.failErr, err)
	}
	return nil
}

func (s *sink) Wake() <-chan struct{} { return s.wake }

func (s *sink) Woken() (bool, error) {
	if s.wokenErr != nil {
		return false, s.wokenErr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held -= s.freed
	s.freed = 0
	look := s.look
	s.look = false
	return look, nil
}

// free frees n slots and wakes the loop, look telling it to look.
func (s *sink) free(n int, look bool) {
	s.mu.Lock()
	s.freed += n
	s.look = s.look || look
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *sink) failures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fails
}

// next returns the next delivery Put, failing the test after wait.
func (s *sink) next(t *testing.T) order.Delivery {
	t.Helper()
	select {
	case d := <-s.put:
		return d
	case <-time.After(wait):
		t.Fatalf("no delivery within %s", wait)
		return order.Delivery{}
	}
}

// none checks that nothing more is Put for a while.
func (s *sink) none(t *testing.T) {
	t.Helper()
	select {
	case d := <-s.put:
		t.Fatalf("delivered %s, want nothing more", d.Event.OrderID)
	case <-time.After(100 * time.Millisecond):
	}
}

var group = order.Group{ID: "g", AckDeadline: time.Minute, MaxDeliveries: 5}

// newStore starts a memory store with the group.
func newStore(t *testing.T) *memstore.Store {
	t.Helper()
	s := memstore.New(memstore.Options{Retention: time.Hour})
	storetest.RunStore(t, s)
	if _, _, err := s.CreateGroup(t.Context(), group, nil, 10); err != nil {
		t.Fatal(err)
	}
	return s
}

// expire checks out orders that expire at once and waits until the group
// has them ready.
func expire(t *testing.T, s *memstore.Store, ids ...string) {
	t.Helper()
	_, before, err := s.Group(t.Context(), group.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, _, err := s.Checkout(t.Context(), id, time.Millisecond, nil); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(wait)
	for {
		_, st, err := s.Group(t.Context(), group.ID)
		if err != nil {
			t.Fatal(err)
		}
		if st.Backlog >= before.Backlog+int64(len(ids)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d orders not expired after %s: %+v", len(ids), wait, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// run starts Run and returns a function that waits for its error.
func run(t *testing.T, ctx context.Context, src consume.Source, sk consume.Sink) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- consume.Run(ctx, src, sk) }()
	var once sync.Once
	var err error
	ended := func() error {
		once.Do(func() {
			select {
			case err = <-done:
			case <-time.After(wait):
				t.Fatalf("Run did not end within %s", wait)
			}
		})
		return err
	}
	t.Cleanup(func() {
		cancel()
		_ = ended()
	})
	return ended
}

func orderIDs(ds ...order.Delivery) []string {
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.Event.OrderID)
	}
	slices.Sort(ids)
	return ids
}

// TestDeliversWhatIsReady: a loop first takes what is ready from every
// partition, without a wake.
func TestDeliversWhatIsReady(t *testing.T) {
	s := newStore(t)
	expire(t, s, "a", "b")
	sk := newSink(10)
	run(t, t.Context(), consume.Source{Store: s, Group: group, Consumer: "c", Poll: never}, sk)
	if got := orderIDs(sk.next(t), sk.next(t)); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("delivered %v, want [a b]", got)
	}
	sk.none(t)
}

// TestFullBatchLooksAgain: a batch that filled the room may have left more
// behind; the loop takes it at once, without waiting for a wake.
func TestFullBatchLooksAgain(t *testing.T) {
	s := newStore(t)
	expire(t, s, "a", "b", "c")
	sk := newSink(0)
	sk.room = 1
	run(t, t.Context(), consume.Source{Store: s, Group: group, Consumer: "c", Poll: never}, sk)
	if got := orderIDs(sk.next(t), sk.next(t), sk.next(t)); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("delivered %v, want [a b c]", got)
	}
}

// TestWakesOnAppend: an event appended to the log goes out at once, not at
// the next poll.
func TestWakesOnAppend(t *testing.T) {
	s := newStore(t)
	hub := watch.NewHub(s, watch.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	storetest.RunStore(t, hub)
	waitReady(t, hub)
	sk := newSink(10)
	run(t, t.Context(), consume.Source{Store: s, Group: group, Consumer: "c", Appended: hub.Appended, Poll: never}, sk)
	sk.none(t)
	for _, id := range []string{"a", "b"} {
		if _, _, err := s.Checkout(t.Context(), id, time.Millisecond, nil); err != nil {
			t.Fatal(err)
		}
		if d := sk.next(t); d.Event.OrderID != id {
			t.Fatalf("delivered %s, want %s", d.Event.OrderID, id)
		}
	}
}

// waitReady waits until the hub knows the log's position: Appended gives
// a channel that the next event closes.
func waitReady(t *testing.T, hub *watch.Hub) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		if pos, _ := hub.Appended(); pos != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hub has no position after %s", wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRoomBoundsAndWake: the loop hands on no more than the sink has room
// for, and takes more once the sink wakes it with room again.
func TestRoomBoundsAndWake(t *testing.T) {
	s := newStore(t)
	expire(t, s, "a", "b", "c", "d", "e")
	sk := newSink(2)
	run(t, t.Context(), consume.Source{Store: s, Group: group, Consumer: "c", Poll: never}, sk)
	got := orderIDs(sk.next(t), sk.next(t))
	sk.none(t)
	sk.free(1, true)
	got = append(got, orderIDs(sk.next(t))...)
	sk.none(t)
	sk.free(2, true)
	got = append(got, orderIDs(sk.next(t), sk.next(t))...)
	slices.Sort(got)
	if !slices.Equal(got, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("delivered %v, want [a b c d e]", got)
	}
	sk.mu.Lock()
	defer sk.mu.Unlock()
	for _, r := range sk.roomLog {
		if r < 0 || r > 2 {
			t.Fatalf("room went to %d, outside 0 to 2: %v", r, sk.roomLog)
		}
	}
}

// TestWokenWithoutLook: a wake that frees a slot but does not ask for a
// look takes nothing from the store; the next look does.
func TestWokenWithoutLook(t *testing.T) {
	s := newStore(t)
	expire(t, s, "a", "b")
	sk := newSink(1)
	run(t, t.Context(), consume.Source{Store: s, Group: group, Consumer: "c", Poll: never}, sk)
	sk.next(t)
	sk.free(1, false)
	sk.none(t)
	sk.free(0, true)
	sk.next(t)
}

// TestPollFindsRedeliveries: what no wake announces (a redelivery whose
// retry_after ran out) is found by the poll.
func TestPollFindsRedeliveries(t *testing.T) {
	s := newStore(t)
	expire(t, s, "a")
	sk := newSink(10)
	run(t, t.Context(), consume.Source{Store: s, Group: group, Consumer: "c", Poll: 20 * time.Millisecond}, sk)
	d := sk.next(t)
	if _, err := s.Nack(t.Context(), group.ID, []order.AckID{d.AckID}, 50*time.Millisecond, ""); err != nil {
		t.Fatal(err)
	}
	if again := sk.next(t); again.Event.OrderID != "a" || again.AckID.Attempt != 2 {
		t.Fatalf("delivered %s attempt %d, want a attempt 2", again.Event.OrderID, again.AckID.Attempt)
	}
}

// TestDropRepeats: the deliveries DropRepeats leaves out are not handed
// on.
func TestDropRepeats(t *testing.T) {
	s := newStore(t)
	expire(t, s, "a", "b")
	sk := newSink(10)
	drop := func(_ context.Context, _ order.GroupStore, g string, ds []order.Delivery) []order.Delivery {
		if g != group.ID {
			t.Errorf("DropRepeats of group %q, want %q", g, group.ID)
		}
		return slices.DeleteFunc(ds, func(d order.Delivery) bool { return d.Event.OrderID == "a" })
	}
	run(t, t.Context(), consume.Source{Store: s, Group: group, Consumer: "c", DropRepeats: drop, Poll: never}, sk)
	if d := sk.next(t); d.Event.OrderID != "b" {
		t.Fatalf("delivered %s, want b only", d.Event.OrderID)
	}
	sk.none(t)
}

// failing is a store whose Deliver fails, fails times: after taking what
// is ready when take is set, before otherwise.
type failing struct {
	*memstore.Store
	take  bool
	mu    sync.Mutex
	fails int
}

var errDown = errors.New("store down")

func (f *failing) Deliver(ctx context.Context, g, consumer string, n int) ([]order.Delivery, error) {
	f.mu.Lock()
	fail := f.fails > 0
	if fail {
		f.fails--
	}
	f.mu.Unlock()
	if fail && !f.take {
		return nil, errDown
	}
	ds, err := f.Store.Deliver(ctx, g, consumer, n)
	if err == nil && fail {
		err = errDown
	}
	return ds, err
}

// TestStoreErrorEnds: a sink that ends on a store error ends the loop with
// it, after it was handed what the store took before the error.
func TestStoreErrorEnds(t *testing.T) {
	s := newStore(t)
	expire(t, s, "a")
	sk := newSink(10)
	sk.failErr = errors.New("stream ends")
	ended := run(t, t.Context(), consume.Source{Store: &failing{Store: s, take: true, fails: 1}, Group: group, Consumer: "c", Poll: never}, sk)
	if err := ended(); !errors.Is(err, sk.failErr) || !errors.Is(err, errDown) {
		t.Fatalf("Run = %v, want the sink's error for the store's", err)
	}
	if d := sk.next(t); d.Event.OrderID != "a" {
		t.Fatalf("delivered %s, want a", d.Event.OrderID)
	}
}

// TestStoreErrorRetried: a sink that lets the loop go on has it try again
// after a backoff, without a wake.
func TestStoreErrorRetried(t *testing.T) {
	s := newStore(t)
	expire(t, s, "a")
	f := &failing{Store: s, fails: 2}
	sk := newSink(10)
	run(t, t.Context(), consume.Source{Store: f, Group: group, Consumer: "c", Poll: never}, sk)
	if d := sk.next(t); d.Event.OrderID != "a" {
		t.Fatalf("delivered %s, want a", d.Event.OrderID)
	}
	if n := sk.failures(); n != 2 {
		t.Fatalf("the sink heard %d failures, want 2", n)
	}
}

// TestSinkEnds: an error of Put or Woken ends the loop with it.
func TestSinkEnds(t *testing.T) {
	s := newStore(t)
	expire(t, s, "a")
	put := newSink(10)
	put.putErr = errors.New("stream broken")
	if err := run(t, t.Context(), consume.Source{Store: s, Group: group, Consumer: "c", Poll: never}, put)(); !errors.Is(err, put.putErr) {
		t.Fatalf("Run = %v, want Put's error", err)
	}
	woken := newSink(10)
	woken.wokenErr = errors.New("stopping")
	ended := run(t, t.Context(), consume.Source{Store: s, Group: group, Consumer: "other", Poll: never}, woken)
	woken.free(0, true)
	if err := ended(); !errors.Is(err, woken.wokenErr) {
		t.Fatalf("Run = %v, want Woken's error", err)
	}
}

// TestEndsWithContext: Run returns the context's error when it ends.
func TestEndsWithContext(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	ended := run(t, ctx, consume.Source{Store: s, Group: group, Consumer: "c", Poll: never}, newSink(10))
	cancel()
	if err := ended(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

// partitioned is the memory store as a store of two partitions that can
// deliver from one (partition 0 holds every event): it records the
// partitions asked, and says when Deliver looked at them all.
type partitioned struct {
	*memstore.Store
	looked chan struct{}
	mu     sync.Mutex
	asked  []int
}

func (p *partitioned) Deliver(ctx context.Context, g, consumer string, n int) ([]order.Delivery, error) {
	defer func() {
		select {
		case p.looked <- struct{}{}:
		default:
		}
	}()
	return p.Store.Deliver(ctx, g, consumer, n)
}

func (p *partitioned) DeliverPartition(ctx context.Context, partition int, g, consumer string, n int) ([]order.Delivery, error) {
	p.mu.Lock()
	p.asked = append(p.asked, partition)
	p.mu.Unlock()
	if partition != 0 {
		return nil, nil
	}
	return p.Store.Deliver(ctx, g, consumer, n)
}

func (p *partitioned) partitionsAsked() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.asked)
}

// TestAppendAsksPartitionsThatGrew: woken by the log, the loop asks only
// the partitions whose position moved.
func TestAppendAsksPartitionsThatGrew(t *testing.T) {
	s := newStore(t)
	p := &partitioned{Store: s, looked: make(chan struct{}, 1)}
	var mu sync.Mutex
	pos := order.Cursor{{Ms: 1}, {Ms: 1}}
	grew := make(chan struct{})
	appended := func() (order.Cursor, <-chan struct{}) {
		mu.Lock()
		defer mu.Unlock()
		return pos.Clone(), grew
	}
	// grow moves the position to next and wakes the loop.
	grow := func(next order.Cursor) {
		mu.Lock()
		defer mu.Unlock()
		pos = next
		close(grew)
		grew = make(chan struct{})
	}
	sk := newSink(10)
	run(t, t.Context(), consume.Source{Store: p, Group: group, Consumer: "c", Appended: appended, Poll: never}, sk)
	// The first look, at every partition, finds nothing.
	select {
	case <-p.looked:
	case <-time.After(wait):
		t.Fatalf("no first look within %s", wait)
	}
	expire(t, s, "a")
	grow(order.Cursor{{Ms: 1}, {Ms: 2}})
	sk.none(t)
	if asked := p.partitionsAsked(); !slices.Equal(asked, []int{1}) {
		t.Fatalf("asked partitions %v, want [1], the one that grew", asked)
	}
	grow(order.Cursor{{Ms: 2}, {Ms: 2}})
	if d := sk.next(t); d.Event.OrderID != "a" {
		t.Fatalf("delivered %s, want a", d.Event.OrderID)
	}
	if asked := p.partitionsAsked(); !slices.Equal(asked, []int{1, 0}) {
		t.Fatalf("asked partitions %v, want [1 0]", asked)
	}
}
