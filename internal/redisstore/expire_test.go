package redisstore_test

import (
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestSubscribed follows Subscribed through the life of the subscription:
// false before Run, true once Redis confirms it, false while a killed
// connection is being replaced, true again after, false once Run stops.
func TestSubscribed(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	s := newStore(t, srv)
	if s.Subscribed() {
		t.Fatalf("Subscribed before Run: true, want false")
	}
	stop := run(t, s)
	waitUntil(t, 5*time.Second, "Subscribed to be true", s.Subscribed)
	if n := numSub(t, admin, expiredChannel); n != 1 {
		t.Fatalf("Subscribed is true, but Redis counts %d subscribers to %s", n, expiredChannel)
	}

	// The subscriber waits at least backoff.First (50ms) before it
	// subscribes again: polling every millisecond sees it down meanwhile.
	killSubscriber(t, admin)
	deadline := time.Now().Add(5 * time.Second)
	for s.Subscribed() {
		if time.Now().After(deadline) {
			t.Fatalf("Subscribed still true 5s after its connection was killed")
		}
		time.Sleep(time.Millisecond)
	}
	waitUntil(t, 5*time.Second, "Subscribed to be true again", s.Subscribed)
	if n := numSub(t, admin, expiredChannel); n != 1 {
		t.Errorf("Subscribed is true again, but Redis counts %d subscribers to %s", n, expiredChannel)
	}

	stop()
	if s.Subscribed() {
		t.Errorf("Subscribed after Run returned: true, want false")
	}
}

// TestSweepCatchesUp checks out orders while no store runs, more than a
// sweeper batch of them, and starts the store more than a second after they
// came due: its first pass expires them all, each once and with its
// metadata, tombstone and event, and OnExpire counts them as caught up,
// while orders due after the start are not.
func TestSweepCatchesUp(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	idle := newStore(t, srv)

	overdue := 2*redisstore.SweepBatch + 17
	pending := map[string]order.Order{}
	for i := range overdue {
		id := "late-" + strconv.Itoa(i)
		var md map[string]string
		if i%3 == 0 {
			md = map[string]string{"i": strconv.Itoa(i), "note": "a b"}
		}
		o, _, err := idle.Checkout(t.Context(), id, 10*time.Millisecond, md)
		if err != nil {
			t.Fatal(err)
		}
		pending[id] = o
	}
	var lastDeadline time.Time
	for _, o := range pending {
		if o.Deadline.After(lastDeadline) {
			lastDeadline = o.Deadline
		}
	}
	time.Sleep(time.Until(lastDeadline.Add(1200 * time.Millisecond)))
	const onTime = 2
	for i := range onTime {
		id := "on-time-" + strconv.Itoa(i)
		o, _, err := idle.Checkout(t.Context(), id, 300*time.Millisecond, nil)
		if err != nil {
			t.Fatal(err)
		}
		pending[id] = o
	}

	var (
		mu                      sync.Mutex
		passes, expired, caught int
	)
	s := redisstore.New(srv.Client(t), redisstore.Options{
		Retention: time.Hour,
		Logger:    testLogger(t),
		OnExpire: func(n, caughtUp int) {
			mu.Lock()
			defer mu.Unlock()
			if n <= 0 || caughtUp < 0 || caughtUp > n {
				t.Errorf("OnExpire(%d, %d): want 0 <= caughtUp <= expired, expired > 0", n, caughtUp)
			}
			passes++
			expired += n
			caught += caughtUp
		},
	})
	run(t, s)
	evs := collect(t, s, order.Offset{}, overdue+onTime)

	seen := map[string]bool{}
	for _, ev := range evs {
		o, ok := pending[ev.OrderID]
		if !ok || seen[ev.OrderID] {
			t.Errorf("event for %q: unknown or repeated", ev.OrderID)
			continue
		}
		seen[ev.OrderID] = true
		if !ev.Deadline.Equal(o.Deadline) || !ev.CreatedAt.Equal(o.CreatedAt) || !maps.Equal(ev.Metadata, o.Metadata) {
			t.Errorf("event %+v; want created_at %v, deadline %v, metadata %v", ev, o.CreatedAt, o.Deadline, o.Metadata)
		}
		got, err := s.Get(t.Context(), ev.OrderID)
		if err != nil {
			t.Fatalf("Get(%s): %v", ev.OrderID, err)
		}
		if got.Status != order.StatusExpired || !got.ClosedAt.Equal(ev.ExpiredAt) || !got.Deadline.Equal(o.Deadline) ||
			!got.CreatedAt.Equal(o.CreatedAt) || !maps.Equal(got.Metadata, o.Metadata) {
			t.Errorf("Get(%s) = %+v; want it expired at the event's %v, as checked out: %+v", ev.OrderID, got, ev.ExpiredAt, o)
		}
	}
	if xlen := streamLength(t, srv); xlen != int64(overdue+onTime) {
		t.Errorf("XLEN of the event stream is %d, want %d", xlen, overdue+onTime)
	}
	// Nothing of the pending orders is left behind: index, pending
	// records and the alarm are gone; the tombstones remain, in the hash
	// of expired orders.
	for pattern, want := range map[string]int{"*:deadlines": 0, "*:pending": 0, "*:alarm": 0, "*:order:*": 0, "*:closed:*": 0} {
		if keys := admin.Keys(t.Context(), pattern).Val(); len(keys) != want {
			t.Errorf("KEYS %s: %d keys, want %d", pattern, len(keys), want)
		}
	}
	if n := admin.HLen(t.Context(), "oe:{0}:expired").Val(); n != int64(overdue+onTime) {
		t.Errorf("HLEN oe:{0}:expired: %d tombstones, want %d", n, overdue+onTime)
	}

	mu.Lock()
	defer mu.Unlock()
	if expired != overdue+onTime || caught != overdue {
		t.Errorf("OnExpire counted %d expired and %d caught up over %d passes; want %d expired, of which the %d due before the store started caught up",
			expired, caught, passes, overdue+onTime, overdue)
	}
}

// TestSweeperKeepsAlarmQuiet checks that a sweeper on time sets the
// partition's alarm again after each sweep, before Redis expires it: Redis
// must not expire it, publishing an expired event for nothing; that no
// order has a key of its own while pending; and that the alarm is deleted
// once nothing is pending.
func TestSweeperKeepsAlarmQuiet(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	s := newStore(t, srv)
	run(t, s)

	const n = 200
	for i := range n {
		ttl := 100*time.Millisecond + time.Duration(i)*time.Millisecond
		if _, _, err := s.Checkout(t.Context(), "k-"+strconv.Itoa(i), ttl, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Pending, an order has no key named after it, only its entries in
	// the partition's index and pending hash.
	if tr := traces(t, admin, "k-"+strconv.Itoa(n-1)); len(tr) != 2 {
		t.Errorf("a pending order leaves %v in Redis; want its entries in the deadline index and the pending hash only", tr)
	}
	if ttl := admin.PTTL(t.Context(), "oe:{0}:alarm").Val(); ttl <= 0 || ttl > 100*time.Millisecond+redisstore.AlarmGrace {
		t.Errorf("the alarm expires in %v; want it set for the earliest deadline and the grace, at most %v", ttl, 100*time.Millisecond+redisstore.AlarmGrace)
	}
	evs := collect(t, s, order.Offset{}, n)
	// Give Redis time to expire whatever it would: past the grace and
	// through a few active-expire cycles.
	time.Sleep(redisstore.AlarmGrace + 300*time.Millisecond)

	// A sweep later than the grace after the earliest deadline finds the
	// alarm expired in Redis's eyes; the sweeper of a loaded machine may
	// be that late, so claims more than 50ms late are forgiven. Any other
	// must have set the alarm again before Redis expired it.
	const forgiven = 50 * time.Millisecond
	late := 0
	for _, ev := range evs {
		if ev.ExpiredAt.Sub(ev.Deadline) >= forgiven {
			late++
		}
	}
	if got := infoInt(t, admin, "stats", "expired_keys", ""); got > int64(late) {
		t.Errorf("Redis expired %d keys itself; the sweeper claimed all but %d of the %d orders within %v of their deadline, and must have set the alarm again before Redis expired it",
			got, late, n, forgiven)
	}
	if keys := admin.Keys(t.Context(), "*:alarm").Val(); len(keys) != 0 {
		t.Errorf("the alarm is left after every order expired: %v", keys)
	}
}

// TestCallExpiryCounted: a call that finds its order due expires it itself
// (no sweeper runs here), and OnExpire counts it as the sweeper's
// expirations are, once, for a single call and for a batch.
func TestCallExpiryCounted(t *testing.T) {
	srv := redistest.Start(t)
	var (
		mu      sync.Mutex
		expired int
	)
	s := redisstore.New(srv.Client(t), redisstore.Options{
		Retention: time.Hour,
		Logger:    testLogger(t),
		OnExpire: func(n, _ int) {
			mu.Lock()
			defer mu.Unlock()
			expired += n
		},
	})
	for _, id := range []string{"due-1", "due-2", "due-3"} {
		if _, _, err := s.Checkout(t.Context(), id, 10*time.Millisecond, nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if o, err := s.Get(t.Context(), "due-1"); err != nil || o.Status != order.StatusExpired {
		t.Fatalf("Get(due-1) = %+v, %v; want it expired", o, err)
	}
	// A checkout of a due order expires it and checks it out anew.
	res := s.BatchCheckout(t.Context(), []order.CheckoutItem{{ID: "due-2", TTL: time.Hour}, {ID: "due-3", TTL: time.Hour}})
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("BatchCheckout item %d: %v", i, r.Err)
		}
	}
	if _, err := s.Get(t.Context(), "due-1"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if expired != 3 {
		t.Errorf("OnExpire counted %d expirations made by calls, want 3", expired)
	}
}

// TestExpiredTombstonesGoWithTheirEvents checks that an expired order's
// tombstone, a field of the partition's hash, goes when its event is
// trimmed from the log a retention after the expiry, and not before; and
// that the trim of an id's first event leaves the tombstone of its second
// expiry, which came after a new checkout of the id.
func TestExpiredTombstonesGoWithTheirEvents(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	const retention = 3 * time.Second
	s := redisstore.New(rdb, redisstore.Options{Retention: retention, Logger: testLogger(t)})
	run(t, s)
	ctx := t.Context()
	hlen := func() int64 {
		t.Helper()
		n, err := rdb.HLen(ctx, "oe:{0}:expired").Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitStatus := func(id string, want order.Status) order.Order {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			o, err := s.Get(ctx, id)
			if err == nil && o.Status == want {
				return o
			}
			if time.Now().After(end) {
				t.Fatalf("Get(%s) = %+v, %v; want status %v", id, o, err, want)
			}
		}
	}
	if err := s.CheckoutMany(ctx, []string{"once", "twice"}, 50*time.Millisecond, ""); err != nil {
		t.Fatal(err)
	}
	first := waitStatus("twice", order.StatusExpired)
	waitStatus("once", order.StatusExpired)
	if n := hlen(); n != 2 {
		t.Fatalf("%d tombstones after two expiries, want 2", n)
	}
	// "twice" again, due well before the retention of its first event
	// passes.
	if _, _, err := s.Checkout(ctx, "twice", 2*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	second := waitStatus("twice", order.StatusExpired)
	// Once is gone with its event, found until then.
	for {
		_, err := s.Get(ctx, "once")
		if order.KindOf(err) == order.KindNotFound {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(first.ClosedAt.Add(retention + 3*time.Second)) {
			t.Fatalf("Get(once) still finds it %v after it expired; the retention is %v", time.Since(first.ClosedAt), retention)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Redis's clock is this machine's: the slack is for rounding to
	// milliseconds.
	if time.Now().Before(first.ClosedAt.Add(retention - 5*time.Millisecond)) {
		t.Fatalf("Get(once) is NotFound %v after it expired, before the retention of %v", time.Since(first.ClosedAt), retention)
	}
	// The trim of twice's first event, in the same pass, left its second
	// tombstone, whose event is not due for trimming yet.
	if time.Now().After(second.ClosedAt.Add(retention)) {
		t.Fatalf("the first events were trimmed %v after twice's second expiry, too late to tell what the trim left", time.Since(second.ClosedAt))
	}
	if got, err := s.Get(ctx, "twice"); err != nil || !got.ClosedAt.Equal(second.ClosedAt) {
		t.Errorf("Get(twice) after the trim of its first event: %+v, %v; want its second expiry, closed at %v", got, err, second.ClosedAt)
	}
	if n := hlen(); n != 1 {
		t.Errorf("%d tombstones once the first events were trimmed, want 1", n)
	}
	// And a retention after the second, nothing is left.
	for end := second.ClosedAt.Add(retention + 3*time.Second); hlen() != 0 || streamLength(t, srv) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d tombstones and %d events %v after the last expiry; the retention is %v", hlen(), streamLength(t, srv), time.Since(second.ClosedAt), retention)
		}
	}
}

// TestTrimInSteps expires more orders at once than one sweep may trim
// (4 batches), and checks that the trim goes on over later sweeps with each
// event and its tombstone removed together: sampled atomically, the log and
// the hash of tombstones always hold as many, until both are empty.
func TestTrimInSteps(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	const retention = time.Second
	s := redisstore.New(rdb, redisstore.Options{Retention: retention, Logger: testLogger(t)})
	run(t, s)
	ctx := t.Context()
	const n = 2500 // more than 4 × the sweep batch of 256
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "step-" + strconv.Itoa(i)
	}
	if err := s.CheckoutMany(ctx, ids, 50*time.Millisecond, ""); err != nil {
		t.Fatal(err)
	}
	both := redis.NewScript(`return {redis.call('XLEN', KEYS[1]), redis.call('HLEN', KEYS[2])}`)
	sizes := func() (events, tombs int64) {
		t.Helper()
		v, err := both.Run(ctx, rdb, []string{"oe:{0}:events", "oe:{0}:expired"}).Int64Slice()
		if err != nil {
			t.Fatal(err)
		}
		return v[0], v[1]
	}
	seen := map[int64]bool{}
	began := time.Now()
	for end := began.Add(retention + 10*time.Second); ; time.Sleep(5 * time.Millisecond) {
		events, tombs := sizes()
		if events != tombs {
			t.Fatalf("%d events and %d tombstones: the trim removed one without the other", events, tombs)
		}
		seen[events] = true
		if events == 0 && len(seen) > 1 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("%d events left %v after the checkout; the retention is %v", events, time.Since(began), retention)
		}
	}
	// Besides 0 and n (and the counts while they expired), the trim left
	// counts between: it went in steps.
	var steps int
	for c := range seen {
		if c > 0 && c < n && (n-c)%1024 == 0 {
			steps++
		}
	}
	if steps == 0 {
		t.Errorf("the log went from %d events to none with no step of 1,024 between (counts seen: %d)", n, len(seen))
	}
}

// TestTrimsOnceASecond checks that a partition's claims trim its log at
// most once a second, whoever claims: the claims between skip the trim's
// commands (trimHorizon's XINFO GROUPS counts the trims), and the first
// claim a second later trims again; a sweep that expires nothing writes
// no mark.
func TestTrimsOnceASecond(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	// Not run: no sweeper claims but the test's calls.
	s := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: testLogger(t)})
	trims := func() int64 { return infoInt(t, admin, "commandstats", "cmdstat_xinfo|groups", "calls") }
	// A sweep that expires nothing writes nothing: an idle store stays
	// as it is (the e2e durability test holds a refused store to that).
	must(t, s.ExpireDue(t.Context()))
	if n := admin.Exists(t.Context(), "oe:{0}:trimmed").Val(); n != 0 {
		t.Errorf("a sweep that expired nothing wrote the trimmed mark")
	}
	expireNow(t, s, "a-1", "a-2")
	start := time.Now()
	if n := trims(); n != 1 {
		t.Fatalf("the first claim trimmed %d times, want 1", n)
	}
	expireNow(t, s, "b-1")
	expireNow(t, s, "c-1", "c-2", "c-3")
	if n := trims(); n != 1 && time.Since(start) < time.Second {
		t.Errorf("three claims within %v trimmed %d times, want 1", time.Since(start), n)
	}
	time.Sleep(time.Until(start.Add(1100 * time.Millisecond)))
	before := trims()
	expireNow(t, s, "d-1")
	if n := trims() - before; n != 1 {
		t.Errorf("a claim a second after the last trim trimmed %d times, want 1", n)
	}
}

// TestTrimGoesOnWithinASecond checks that a claim whose trim stopped at
// its limit (4 batches) leaves the next claim to go on at once, not a
// second later, so that the trims keep up with a busy partition: each of
// the claims expires an order, as on a busy partition (a sweep that
// expires nothing trims anyway).
func TestTrimGoesOnWithinASecond(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	const retention = 500 * time.Millisecond
	// Not run: no sweeper claims but the test's calls.
	s := redisstore.New(srv.Client(t), redisstore.Options{Retention: retention, Logger: testLogger(t)})
	const n = 2500 // more than 2 × the trim's limit of 1,024
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "go-on-" + strconv.Itoa(i)
	}
	expireNow(t, s, ids...)
	if got := streamLength(t, srv); got != n {
		t.Fatalf("%d events after the claims, want %d", got, n)
	}
	time.Sleep(retention + 1100*time.Millisecond) // past the retention and the last trim's second
	var lengths []int64
	start := time.Now()
	for i := range 3 {
		expireNow(t, s, "busy-"+strconv.Itoa(i))
		lengths = append(lengths, streamLength(t, srv))
	}
	// Each claim adds its order's event.
	want := []int64{n - 1024 + 1, n - 2048 + 2, 3}
	if took := time.Since(start); !slices.Equal(lengths, want) && took < time.Second {
		t.Errorf("the log after three claims within %v: %v events; want %v", took, lengths, want)
	}
	if left := admin.HLen(t.Context(), "oe:{0}:expired").Val(); left != 3 {
		t.Errorf("%d tombstones left, want the three claims' own", left)
	}
}

// expireNow checks out orders ids on s (which is not run), makes them due
// and has them claimed, as a sweeper would.
func expireNow(t *testing.T, s *redisstore.Store, ids ...string) {
	t.Helper()
	must(t, s.CheckoutMany(t.Context(), ids, time.Hour, ""))
	must(t, s.MakeDue(t.Context()))
	must(t, s.ExpireDue(t.Context()))
}
