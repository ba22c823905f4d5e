package redisstore_test

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
	"github.com/orderexpiry/orderexpiry/internal/storetest"
)

var _ order.Store = (*redisstore.Store)(nil)

// expiredChannel is where Redis publishes the expired-key events of db 0.
const expiredChannel = "__keyevent@0__:expired"

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, retention time.Duration) order.Store {
		srv := redistest.Start(t)
		return redisstore.New(srv.Client(t), redisstore.Options{Retention: retention, Logger: testLogger(t)})
	})
}

// TestConformancePartitioned runs the suite on one Redis with the orders
// spread over several partitions, as on a cluster.
func TestConformancePartitioned(t *testing.T) {
	storetest.Run(t, func(t *testing.T, retention time.Duration) order.Store {
		srv := redistest.Start(t)
		return redisstore.New(srv.Client(t), redisstore.Options{Retention: retention, Logger: testLogger(t), Partitions: 5})
	})
}

// TestConformanceStrict runs the suite in the strict durability mode, on a
// Redis that fsyncs its AOF at every write and has a replica: every write
// goes through the wait, and answers as in the fast mode.
func TestConformanceStrict(t *testing.T) {
	if testing.Short() {
		t.Skip("the suite a second time, with a replica: not in -short")
	}
	storetest.Run(t, func(t *testing.T, retention time.Duration) order.Store {
		srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
		host, port, _ := net.SplitHostPort(srv.Addr)
		redistest.Start(t, "--replicaof", host, port)
		return redisstore.New(srv.Client(t), redisstore.Options{Retention: retention, Logger: testLogger(t), Partitions: 3, Durability: redisstore.DurabilityStrict})
	})
}

// TestPartitionsRecorded checks that the number of partitions is the one
// recorded at the first start, whatever a later start asks for.
func TestPartitionsRecorded(t *testing.T) {
	srv := redistest.Start(t)
	first := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: 3})
	if n, err := first.Partitions(t.Context()); err != nil || n != 3 {
		t.Fatalf("first start asking for 3: Partitions = %d, %v; want 3", n, err)
	}
	if _, _, err := first.Checkout(t.Context(), "kept", time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	logs := &redistest.LockedBuffer{}
	later := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil)), Partitions: 8})
	if n, err := later.Partitions(t.Context()); err != nil || n != 3 {
		t.Fatalf("later start asking for 8: Partitions = %d, %v; want the recorded 3", n, err)
	}
	if !strings.Contains(logs.String(), "asked=8") {
		t.Errorf("no warning that the 8 partitions asked for are ignored; logs:\n%s", logs)
	}
	if o, err := later.Get(t.Context(), "kept"); err != nil || o.Status != order.StatusPending {
		t.Errorf("Get(kept) on the later start: %v, %v; want the pending order", o.Status, err)
	}
	if got := srv.Client(t).Get(t.Context(), "oe:partitions").Val(); got != "3" {
		t.Errorf("oe:partitions = %q, want 3", got)
	}
}

func TestRunEnablesExpiredEvents(t *testing.T) {
	tests := []struct {
		name    string
		initial string // notify-keyspace-events when Redis starts
		keep    string // flags that must still be set
	}{
		{"off", "", ""},
		{"keyspace generic events", "Kg", "Kg"},
		{"all keyspace events", "AK", "AK"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t, "--notify-keyspace-events", tt.initial)
			admin := srv.Client(t)
			run(t, newStore(t, srv))

			var flags string
			waitUntil(t, 5*time.Second, "notify-keyspace-events to include E and x", func() bool {
				flags = notifyFlags(t, admin)
				return strings.Contains(flags, "E") && strings.ContainsAny(flags, "xA")
			})
			for _, f := range tt.keep {
				if !strings.ContainsRune(flags, f) {
					t.Errorf("notify-keyspace-events is %q: the flag %q that was set before is gone", flags, f)
				}
			}
		})
	}
}

func TestExpiresWithoutConfig(t *testing.T) {
	srv := redistest.Start(t, "--rename-command", "CONFIG", "")
	admin := srv.Client(t)
	if err := admin.ConfigGet(t.Context(), "notify-keyspace-events").Err(); err == nil {
		t.Fatalf("CONFIG GET works although CONFIG is renamed away")
	}
	logs := &redistest.LockedBuffer{}
	s := redisstore.New(srv.Client(t), redisstore.Options{
		Retention: time.Hour,
		Logger:    slog.New(slog.NewTextHandler(logs, nil)),
	})
	stop := run(t, s)
	const warning = "cannot enable Redis keyspace events"

	expireOnTime(t, s, s, "first")
	waitUntil(t, 5*time.Second, "the warning about keyspace events", func() bool {
		return strings.Contains(logs.String(), warning)
	})
	if lines := logLines(logs); len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") {
		t.Errorf("the store logged %q, want exactly one warning", lines)
	}

	// The subscriber loses its connection and subscribes again, which
	// checks the setting again: that must not repeat the warning.
	killSubscriber(t, admin)
	waitUntil(t, 5*time.Second, "the subscriber to reconnect", func() bool {
		return strings.Contains(logs.String(), "reconnecting") && numSub(t, admin, expiredChannel) == 1
	})
	expireOnTime(t, s, s, "second")
	stop()
	if n := strings.Count(logs.String(), warning); n != 1 {
		t.Errorf("the warning about keyspace events was logged %d times, want once:\n%s", n, logs)
	}
}

func TestReplicasExpireOnce(t *testing.T) {
	srv := redistest.Start(t)
	replicas := []*redisstore.Store{
		newStore(t, srv),
		newStore(t, srv),
	}
	for _, s := range replicas {
		run(t, s)
	}

	// Each replica checks out half of the orders; their deadlines are
	// spread over half a second, and both replicas sweep them all.
	const n = 500
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				ttl := 200*time.Millisecond + time.Duration(i)*time.Millisecond
				if _, _, err := replicas[i%2].Checkout(t.Context(), "r-"+strconv.Itoa(i), ttl, nil); err != nil {
					t.Errorf("Checkout: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	evs := collect(t, replicas[0], order.Offset{}, n)
	// Once an order due after all of them has expired, every expiry that
	// was going to be logged before it has been.
	if _, _, err := replicas[1].Checkout(t.Context(), "barrier", 200*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, replicas[1], evs[n-1].Offset, 1); got[0].OrderID != "barrier" {
		t.Fatalf("event for %q, want the barrier", got[0].OrderID)
	}
	evs, err := replicas[0].Events(t.Context(), 0, order.Offset{}, 10*n, 0)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, ev := range evs {
		count[ev.OrderID]++
	}
	for i := range n {
		if id := "r-" + strconv.Itoa(i); count[id] != 1 {
			t.Errorf("%s expired %d times, want once", id, count[id])
		}
	}
	if len(evs) != n+1 {
		t.Errorf("the log has %d events, want %d expirations and the barrier", len(evs), n)
	}
	if xlen := streamLength(t, srv); xlen != int64(n+1) {
		t.Errorf("XLEN of the event stream is %d, want %d", xlen, n+1)
	}
}

// TestCheckoutWakesOtherReplicas checks that a checkout on one replica wakes
// the sweeper of another, which would otherwise sleep through the deadline.
// CONFIG is renamed away, so that Redis publishes no expired-key events: the
// checkout's wake-up is the only thing that can wake the sweeper in time.
func TestCheckoutWakesOtherReplicas(t *testing.T) {
	srv := redistest.Start(t, "--rename-command", "CONFIG", "")
	admin := srv.Client(t)
	sweeping := newStore(t, srv)
	run(t, sweeping)
	// This replica is not running: it has no sweeper of its own.
	idle := newStore(t, srv)

	waitUntil(t, 5*time.Second, "the store to subscribe", func() bool { return numSub(t, admin, expiredChannel) == 1 })
	sweepStarted(t, admin)
	// The sweeper now sleeps for MaxSweepSleep unless woken.
	expireOnTime(t, idle, sweeping, "woken")
}

// TestExpiredKeyEventWakesSweeper checks the other way a sweeper learns of an
// order it did not see created: Redis's expired-key event for the
// partition's alarm.
func TestExpiredKeyEventWakesSweeper(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	s := newStore(t, srv)
	run(t, s)

	waitSubscribed(t, admin)
	sweepStarted(t, admin)
	// The sweeper now sleeps for MaxSweepSleep unless woken. The checkout
	// set the partition's alarm to expire in Redis AlarmGrace after the
	// order's deadline, the earliest, as it does when no sweeper swept in
	// time; Redis deletes it within
	// about 100ms more (one active-expire cycle at hz 10, with one key to
	// look at) and publishes the event that must wake the sweeper.
	const ttl = 100 * time.Millisecond
	if err := s.CheckoutUnannounced(t.Context(), "unannounced", ttl); err != nil {
		t.Fatal(err)
	}
	ev := collect(t, s, order.Offset{}, 1)[0]
	late := ev.ExpiredAt.Sub(ev.Deadline)
	if ev.OrderID != "unannounced" || late < 0 || late > redisstore.AlarmGrace+300*time.Millisecond {
		t.Errorf("%s expired %v after its deadline; want the unannounced order within %v, long before the sweeper's next wake-up on its own (%v after the deadline)",
			ev.OrderID, late, redisstore.AlarmGrace+300*time.Millisecond, redisstore.MaxSweepSleep-ttl)
	}
	if late < redisstore.AlarmGrace*9/10 {
		t.Errorf("%s expired %v after its deadline, before the alarm could go off (%v after it): something other than the expired-key event woke the sweeper",
			ev.OrderID, late, redisstore.AlarmGrace)
	}
}

func TestUnreachableRedis(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there any more: connections are refused
	checkUnavailable(t, addr, time.Second)
}

// checkUnavailable checks that every call of a store whose Redis cannot be
// reached fails with an Unavailable error within the limit.
func checkUnavailable(t *testing.T, addr string, limit time.Duration) {
	t.Helper()
	rdb, err := redisstore.NewClient("redis://"+addr+"/0", redisstore.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	s := redisstore.New(rdb, redisstore.Options{Retention: time.Hour, Logger: testLogger(t)})
	// Run keeps retrying meanwhile, and stops cleanly when asked.
	run(t, s)

	tests := []struct {
		name string
		call func(context.Context) error
	}{
		{"Checkout", func(ctx context.Context) error { _, _, err := s.Checkout(ctx, "o", time.Minute, nil); return err }},
		{"BatchCheckout", func(ctx context.Context) error {
			for _, r := range s.BatchCheckout(ctx, []order.CheckoutItem{{ID: "o", TTL: time.Minute}, {ID: "p", TTL: time.Minute}}) {
				if order.KindOf(r.Err) != order.KindUnavailable {
					return r.Err
				}
			}
			return order.Unavailable(nil)
		}},
		{"Get", func(ctx context.Context) error { _, err := s.Get(ctx, "o"); return err }},
		{"Complete", func(ctx context.Context) error { _, err := s.Complete(ctx, "o"); return err }},
		{"Cancel", func(ctx context.Context) error { _, err := s.Cancel(ctx, "o"); return err }},
		{"Events", func(ctx context.Context) error { _, err := s.Events(ctx, 0, order.Offset{}, 10, 0); return err }},
		{"Events waiting", func(ctx context.Context) error {
			_, err := s.Events(ctx, 0, order.Offset{}, 10, 5*time.Second)
			return err
		}},
		{"Tail", func(ctx context.Context) error { _, err := s.Tail(ctx, 0); return err }},
		{"CheckCursor", func(ctx context.Context) error { return s.CheckCursor(ctx, order.Offset{Ms: 1}) }},
		{"Ping", s.Ping},
		{"StartOperation", func(ctx context.Context) error {
			_, err := s.StartOperation(ctx, order.Operation{Filter: `metadata.m = "a"`, Change: order.BulkChange{Cancel: true}})
			return err
		}},
		{"GetOperation", func(ctx context.Context) error { _, err := s.GetOperation(ctx, "op"); return err }},
		{"ListOperations", func(ctx context.Context) error { _, err := s.ListOperations(ctx); return err }},
		{"CancelOperation", func(ctx context.Context) error { _, err := s.CancelOperation(ctx, "op"); return err }},
	}
	t.Run("calls", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				start := time.Now()
				err := tt.call(t.Context())
				if d := time.Since(start); d > limit {
					t.Errorf("%s took %v to fail, want at most %v", tt.name, d, limit)
				}
				if k := order.KindOf(err); err == nil || k != order.KindUnavailable {
					t.Errorf("%s: %v (kind %d), want an Unavailable error", tt.name, err, k)
				}
			})
		}
	})
}

// newStore returns a store on the server with a retention of an hour.
func newStore(t *testing.T, srv *redistest.Server) *redisstore.Store {
	t.Helper()
	return redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: testLogger(t)})
}

// run runs the store until the test ends, or until the returned function is
// called.
func run(t *testing.T, s *redisstore.Store) (stop func()) {
	t.Helper()
	return storetest.RunStore(t, s)
}

// expireOnTime checks out an order through one store and waits for its
// expiry, which the other store's sweeper must log promptly.
func expireOnTime(t *testing.T, via, sweeping *redisstore.Store, id string) {
	t.Helper()
	after, err := sweeping.Tail(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := via.Checkout(t.Context(), id, 100*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	evs, err := sweeping.Events(t.Context(), 0, after, 10, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].OrderID != id {
		t.Fatalf("events %v, want the expiry of %q", evs, id)
	}
	if late := evs[0].ExpiredAt.Sub(evs[0].Deadline); late < 0 || late > 250*time.Millisecond {
		t.Errorf("%s expired %v after its deadline, want within 250ms", id, late)
	}
}

// collect waits for n events after a cursor.
func collect(t *testing.T, s *redisstore.Store, after order.Offset, n int) []order.Event {
	t.Helper()
	var got []order.Event
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events came within 10s", len(got), n)
		}
		evs, err := s.Events(t.Context(), 0, after, 1000, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			got = append(got, ev)
			after = ev.Offset
		}
	}
	return got
}

// waitSubscribed waits until a store subscribes to expired-key events and
// has enabled them.
func waitSubscribed(t *testing.T, admin *redis.Client) {
	t.Helper()
	waitUntil(t, 5*time.Second, "the store to subscribe", func() bool {
		flags := notifyFlags(t, admin)
		return numSub(t, admin, expiredChannel) == 1 && strings.Contains(flags, "E") && strings.Contains(flags, "x")
	})
}

// sweepStarted waits for the sweeper's next pass over the deadlines. It
// tells one from the script calls Redis counts: the sweeper's are the only
// EVALSHA calls meanwhile. A sweeper with nothing pending then sleeps for
// MaxSweepSleep unless something wakes it.
func sweepStarted(t *testing.T, admin *redis.Client) {
	t.Helper()
	before := evalshaCalls(t, admin)
	waitUntil(t, 2*redisstore.MaxSweepSleep, "a sweep", func() bool { return evalshaCalls(t, admin) > before })
}

func evalshaCalls(t testing.TB, admin *redis.Client) int64 {
	t.Helper()
	return infoInt(t, admin, "commandstats", "cmdstat_evalsha", "calls")
}

// infoInt reads a number from INFO: the value of a line "key:<n>" of the
// section, or with field set, of "field=<n>" in a line "key:f=1,g=2".
// A key Redis does not list (a command never called) counts as 0.
func infoInt(t testing.TB, admin *redis.Client, section, key, field string) int64 {
	t.Helper()
	info, err := admin.Info(t.Context(), section).Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), key+":")
		if !ok {
			continue
		}
		v := rest
		if field != "" {
			v = ""
			for f := range strings.SplitSeq(rest, ",") {
				if fv, ok := strings.CutPrefix(f, field+"="); ok {
					v = fv
				}
			}
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("INFO %s: no number %s in %q", section, field, line)
		}
		return n
	}
	return 0
}

// killSubscriber kills the connection of the one store's subscriber.
func killSubscriber(t *testing.T, admin *redis.Client) {
	t.Helper()
	killed, err := admin.ClientKillByFilter(t.Context(), "TYPE", "pubsub").Result()
	if err != nil || killed != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub: killed %d, %v; want the store's subscriber killed", killed, err)
	}
}

func notifyFlags(t *testing.T, admin *redis.Client) string {
	t.Helper()
	cfg, err := admin.ConfigGet(t.Context(), "notify-keyspace-events").Result()
	if err != nil {
		t.Fatal(err)
	}
	return cfg["notify-keyspace-events"]
}

func numSub(t *testing.T, admin *redis.Client, channel string) int64 {
	t.Helper()
	n, err := admin.PubSubNumSub(t.Context(), channel).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n[channel]
}

// streamLength counts the entries of the event stream, found by its name's
// ending so that the test does not spell out the key layout.
func streamLength(t testing.TB, srv *redistest.Server) int64 {
	t.Helper()
	rdb := srv.Client(t)
	keys, err := rdb.Keys(t.Context(), "*:events").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("KEYS *:events: %v, %v; want the one event stream", keys, err)
	}
	n, err := rdb.XLen(t.Context(), keys[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testLogger sends the store's log to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func logLines(b *redistest.LockedBuffer) []string {
	return strings.Split(strings.TrimSpace(b.String()), "\n")
}

// TestGroupPushSeenByEveryReplica checks that a push group's settings,
// secret included, are read from Redis by a store that did not create it,
// as every replica's deliverer needs.
func TestGroupPushSeenByEveryReplica(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newStore(t, srv), newStore(t, srv)
	asked := storetest.PushSettings("hooks", "https://hooks.example.com/expired")
	if _, _, err := a.CreateGroup(t.Context(), asked, nil, 10); err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	got, _, err := b.Group(t.Context(), "hooks")
	if err != nil {
		t.Fatalf("Group through another store: %v", err)
	}
	if got.Push != asked.Push || got.Push.Secret != asked.Push.Secret {
		t.Errorf("Group through another store: push settings %v, want %v", got.Push, asked.Push)
	}
}
