package e2e

// The fault-injection suite: real redis-server processes, several replicas
// of the server (processes of the built binary where one is killed or its
// memory measured), and faults injected for real (killed connections,
// killed processes, a Redis crash with AOF, a proxy that delays, resets and
// black-holes traffic, a watcher that stops reading). Every scenario asserts
// that no acknowledged order is lost, none expires twice, and every watcher
// receives every event in log order after resuming from its cursor. Each
// logs a RESULT line with its figures; docs/reliability.md records a run.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// faultTest skips a fault-injection test in the fast tier (go test -short).
func faultTest(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("fault injection: skipped with -short")
	}
}

func result(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("RESULT %s: "+format, append([]any{t.Name()}, args...)...)
}

// TestFaultPubSubKilled kills the subscribers' connections over and over
// (CLIENT KILL TYPE pubsub) while thousands of orders expire on two replicas.
func TestFaultPubSubKilled(t *testing.T) {
	faultTest(t)
	r := redistest.Start(t)
	env := map[string]string{"REDIS_URL": r.URL()}
	a, b := startServer(t, env), startServer(t, env)
	fa, fb := follow(t, anyAlive(0, a, b), "0-0"), follow(t, anyAlive(1, a, b), "0-0")

	admin := r.Client(t)
	var mu sync.Mutex
	var kills []time.Time // one per connection killed
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			n, err := admin.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Result()
			if err == nil {
				mu.Lock()
				for range n {
					kills = append(kills, time.Now())
				}
				mu.Unlock()
			}
		}
	})
	const n = 3000
	sched := schedule{first: time.Now().Add(2 * time.Second), step: 2 * time.Millisecond}
	acked := checkoutAll(t, roundRobin(a, b), ids("ps-", n), sched.due)
	time.Sleep(time.Until(sched.due(n - 1)))
	close(stop)
	wg.Wait()
	// The kills must strike while the orders expire.
	during := 0
	for _, at := range kills {
		if !at.Before(sched.due(0)) && !at.After(sched.due(n-1)) {
			during++
		}
	}
	if during < 20 {
		t.Errorf("only %d of %d subscriber connections were killed while the orders expired", during, len(kills))
	}
	l := checkLedger(t, roundRobin(a, b), acked, []*follower{fa, fb}, 20*time.Second)
	p99, maxLate := lateness(fa.received())
	result(t, "events=%d lost=%d doubled=%d pubsub_kills=%d during_expirations=%d lateness_p99=%s max=%s",
		l.Events, l.Lost, l.Doubled, len(kills), during, p99, maxLate)
}

// TestFaultReplicaKilled sends SIGKILL to one of three replicas in the
// middle of a burst of expirations: the survivors go on expiring on time,
// and watchers of the dead one resume on a survivor.
func TestFaultReplicaKilled(t *testing.T) {
	faultTest(t)
	r := redistest.Start(t)
	env := map[string]string{"REDIS_URL": r.URL()}
	reps := []*server{startProcess(t, env), startProcess(t, env), startProcess(t, env)}
	var fs []*follower
	for i := range reps {
		fs = append(fs, follow(t, anyAlive(i, reps...), "0-0"))
	}
	const n = 3000
	sched := schedule{first: time.Now().Add(3 * time.Second), step: time.Millisecond}
	acked := checkoutAll(t, roundRobin(reps...), ids("rk-", n), sched.due)
	time.Sleep(time.Until(sched.due(n / 2))) // mid-burst
	killedAt := time.Now()
	if !reps[0].Stop(syscall.SIGKILL) {
		t.Fatal("replica 0 did not die")
	}
	// The kill must come while orders are still to expire: at least a
	// quarter of them (half, unless the checkouts ran late).
	dueAfterKill := sched.dueAfter(n, killedAt)
	if dueAfterKill < n/4 {
		t.Errorf("only %d of %d orders were due after the kill: the checkouts ran late, and the kill tested little", dueAfterKill, n)
	}
	l := checkLedger(t, roundRobin(reps...), acked, fs, 20*time.Second)
	var after []*pb.ExpirationEvent
	for _, ev := range fs[1].received() {
		if ev.GetDeadline().AsTime().After(killedAt) {
			after = append(after, ev)
		}
	}
	p99, maxLate := lateness(after)
	if len(after) < dueAfterKill {
		t.Errorf("the survivors' watcher received %d expirations due after the kill; %d were due", len(after), dueAfterKill)
	}
	if p99 > 250*time.Millisecond {
		t.Errorf("after the kill, the survivors expired orders late: p99 %s, max %s", p99, maxLate)
	}
	result(t, "events=%d lost=%d doubled=%d due_after_kill=%d lateness_after_kill_p99=%s max=%s resumes=%s",
		l.Events, l.Lost, l.Doubled, len(after), p99, maxLate, fs[0].endsString())
}

// TestFaultRestartCatchUp kills the only replica, lets orders come due while
// it is down, and starts it again: it catches them all up within a second
// of becoming ready.
func TestFaultRestartCatchUp(t *testing.T) {
	faultTest(t)
	r := redistest.Start(t)
	env := map[string]string{"REDIS_URL": r.URL()}
	s := startProcess(t, env)
	const n = 1000
	sched := schedule{first: time.Now().Add(3 * time.Second), step: time.Millisecond}
	acked := checkoutAll(t, func() *server { return s }, ids("rs-", n), sched.due)
	s.Stop(syscall.SIGKILL)
	// Every order must come due while no replica runs.
	if killedAt := time.Now(); !killedAt.Before(sched.due(0)) {
		t.Fatalf("the checkouts took until %s after the first deadline: orders came due before the kill", killedAt.Sub(sched.due(0)))
	}
	time.Sleep(time.Until(sched.due(n - 1).Add(500 * time.Millisecond)))
	restarted := time.Now()
	s2 := startProcess(t, env)
	ready := time.Now()
	f := follow(t, func() *server { return s2 }, "0-0")
	f.waitFor(t, n, 10*time.Second)
	caughtUp := time.Since(ready)
	// No order expired while no replica ran: each was claimed after the
	// restart.
	for _, ev := range f.received() {
		if at := ev.GetExpiredAt().AsTime(); at.Before(restarted) {
			t.Fatalf("%s expired at %s, %s before the restart, while no replica ran", ev.GetOrderId(), at.Format("15:04:05.000"), restarted.Sub(at))
		}
	}
	l := checkLedger(t, func() *server { return s2 }, acked, []*follower{f}, 10*time.Second)
	if caughtUp > time.Second {
		t.Errorf("caught up %s after becoming ready, want within 1s", caughtUp)
	}
	result(t, "events=%d lost=%d doubled=%d caught_up_after_ready=%s", l.Events, l.Lost, l.Doubled, caughtUp.Round(time.Millisecond))
}

// TestFaultRedisCrashAOF kills Redis with SIGKILL in the middle of a burst
// and starts it again from its append-only file. Orders come due while it is
// down; Redis drops their keys while loading without an event, and the
// service still expires them, once. Should Redis lose the tail of its log
// (see checkLedgerByOrder), no follower receives an order twice.
func TestFaultRedisCrashAOF(t *testing.T) {
	faultTest(t)
	r := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "everysec")
	env := map[string]string{"REDIS_URL": r.URL()}
	a, b := startServer(t, env), startServer(t, env)
	fa, fb := follow(t, anyAlive(0, a, b), "0-0"), follow(t, anyAlive(1, a, b), "0-0")
	const n = 2000
	sched := schedule{first: time.Now().Add(3 * time.Second), step: 2 * time.Millisecond}
	acked := checkoutAll(t, roundRobin(a, b), ids("aof-", n), sched.due)
	// The crash comes in the middle of the expirations (due from 3 s to
	// 7 s), and more than a second after the last acknowledgement, so
	// that the AOF (fsync every second) holds every checkout.
	time.Sleep(time.Until(latest(sched.due(n/2), time.Now().Add(1100*time.Millisecond))))
	before := len(fa.received()) // as far as a follower had received them
	dueAfterCrash := sched.dueAfter(n, time.Now())
	if before == 0 || dueAfterCrash < n/10 {
		t.Errorf("at the crash %d expirations had been received and %d orders were still to come due: the crash was not in the middle of the expirations", before, dueAfterCrash)
	}
	r.Kill()
	crashed := time.Now()
	time.Sleep(1500 * time.Millisecond)
	r.Restart(t)
	restarted := time.Now()
	// The service notices within about a second: health says SERVING and
	// checkouts work again.
	a.waitHealthy()
	recovered := time.Since(restarted)
	if recovered > 2*time.Second {
		t.Errorf("the service took %s to serve again after Redis came back", recovered)
	}
	// With appendfsync everysec on a busy disk, Redis may lose the last
	// expirations it logged (it postpones its AOF write while an fsync
	// runs): their orders expire again, and the followers, which had them,
	// must not receive them twice.
	l, gone := checkLedgerByOrder(t, roundRobin(a, b), acked, []*follower{fa, fb}, 20*time.Second)
	result(t, "events=%d lost=%d doubled=%d expired_before_crash=%d due_after_crash=%d redis_down=%s recovery_after_restart=%s received_then_lost_by_redis=%d",
		l.Events, l.Lost, l.Doubled, before, dueAfterCrash, restarted.Sub(crashed).Round(time.Millisecond), recovered.Round(time.Millisecond), gone)
}

// TestFaultNetwork puts Toxiproxy between the replicas and Redis and injects
// latency, connection resets, a black hole and an outage while orders
// expire and checkouts go on.
func TestFaultNetwork(t *testing.T) {
	faultTest(t)
	r := redistest.Start(t)
	tp := startToxiproxy(t)
	proxy, err := tp.CreateProxy("redis", "127.0.0.1:0", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"REDIS_URL": "redis://" + proxy.Listen + "/0"}
	a, b := startServer(t, env), startServer(t, env)
	fa, fb := follow(t, anyAlive(0, a, b), "0-0"), follow(t, anyAlive(1, a, b), "0-0")

	// Orders due all through the faults, and more checked out during them.
	const n = 2000
	sched := schedule{first: time.Now().Add(3 * time.Second), step: 5 * time.Millisecond}
	acked := checkoutAll(t, roundRobin(a, b), ids("net-", n), sched.due)
	var during []string
	var dmu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Refused for good during the outage, as may be.
			got, _ := checkoutEach(t, roundRobin(a, b), []string{fmt.Sprint("net-during-", i)}, func(int) time.Time { return time.Now().Add(4 * time.Second) })
			dmu.Lock()
			during = append(during, got...)
			dmu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	})

	faultsBegan := time.Now()
	phase := func(name string, d time.Duration, typ string, attrs toxiproxy.Attributes) {
		t.Helper()
		withToxic(t, proxy, name, typ, attrs, d)
		time.Sleep(500 * time.Millisecond)
	}
	phase("latency", 2*time.Second, "latency", toxiproxy.Attributes{"latency": 50, "jitter": 20})
	phase("reset", time.Second, "reset_peer", toxiproxy.Attributes{"timeout": 0})
	phase("blackhole", 2*time.Second, "timeout", toxiproxy.Attributes{"timeout": 0})

	// An outage: calls fail fast with UNAVAILABLE, health says NOT_SERVING,
	// and the service recovers by itself once Redis is reachable again.
	if err := proxy.Disable(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	_, err = a.Client.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: "net-outage"})
	failFast := time.Since(begin)
	if status.Code(err) != codes.Unavailable || failFast > time.Second {
		t.Errorf("checkout during the outage: %v after %s, want UNAVAILABLE within 1s", err, failFast)
	}
	waitHealth(t, a, healthpb.HealthCheckResponse_NOT_SERVING, 5*time.Second)
	time.Sleep(time.Second)
	if err := proxy.Enable(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitHealth(t, a, healthpb.HealthCheckResponse_SERVING, 5*time.Second)
	for {
		_, err := a.Client.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: "net-after", Ttl: ttl(200 * time.Millisecond)})
		if err == nil {
			break
		}
		if time.Since(back) > 5*time.Second {
			t.Fatalf("checkout still fails 5s after the outage: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	recovered := time.Since(back)
	// The orders must come due during the faults: a quarter of them at
	// least.
	if dueDuring := sched.dueAfter(n, faultsBegan) - sched.dueAfter(n, back); dueDuring < n/4 {
		t.Errorf("only %d of %d orders came due during the faults", dueDuring, n)
	}
	if recovered > 2*time.Second {
		t.Errorf("recovered %s after the outage, want within 2s", recovered)
	}
	close(stop)
	wg.Wait()
	all := append(append(acked, during...), "net-after")
	l := checkLedger(t, roundRobin(a, b), all, []*follower{fa, fb}, 30*time.Second)
	result(t, "events=%d lost=%d doubled=%d checkouts_during_faults=%d outage_fail_fast=%s recovery=%s watch_ends=%s",
		l.Events, l.Lost, l.Doubled, len(during), failFast.Round(time.Millisecond), recovered.Round(time.Millisecond), fa.endsString())
}

func waitHealth(t *testing.T, s *server, want healthpb.HealthCheckResponse_ServingStatus, timeout time.Duration) {
	t.Helper()
	hc := healthpb.NewHealthClient(s.Conn)
	deadline := time.Now().Add(timeout)
	for {
		h, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil && h.GetStatus() == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health is %v (%v) after %s, want %v", h.GetStatus(), err, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFaultStalledWatcher: a watcher that stops reading for a while, long
// enough to fall far behind its buffer, then reads again, is not cut off:
// it gets every event once, in order, read from the log where the fan-out
// left it, and goes on live on the same stream. The other watcher and the
// server's memory are unaffected while it is stalled.
func TestFaultStalledWatcher(t *testing.T) {
	faultTest(t)
	r := redistest.Start(t)
	s := startProcess(t, map[string]string{"REDIS_URL": r.URL()}, "-watch-buffer", "64", "-debug-addr", "127.0.0.1:0")
	healthy := follow(t, func() *server { return s }, "0-0")
	heapBefore, goroutinesBefore := s.heapInuse(t), s.goroutines(t)

	// A client with fixed, small flow-control windows, so that the server
	// feels it stop reading after about 64 KiB.
	conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stalled, err := pb.NewOrderServiceClient(conn).WatchExpirations(ctx, &pb.WatchExpirationsRequest{AfterCursor: "0-0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stalled.Header(); err != nil {
		t.Fatal(err)
	}

	const n = 5000
	md := map[string]string{"note": strings.Repeat("x", 200)} // events of ~300 bytes
	var acked []string
	for i := range n {
		id := fmt.Sprint("st-", i)
		if _, err := s.Client.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: id, Ttl: ttl(500*time.Millisecond + time.Duration(i/2)*time.Millisecond), Metadata: md}); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, id)
	}
	l := checkLedger(t, func() *server { return s }, acked, []*follower{healthy}, 20*time.Second)
	p99, maxLate := lateness(healthy.received())
	heapStalled, goroutinesStalled := s.heapInuse(t), s.goroutines(t)
	if grew := heapStalled - heapBefore; grew > 16<<20 {
		t.Errorf("heap grew by %d bytes while a watcher was stalled", grew)
	}
	catchUps := s.gauge(t, "orderexpiry_watch_catchups_total")
	if catchUps < 1 {
		t.Errorf("orderexpiry_watch_catchups_total = %d after a watcher fell %d events behind a buffer of 64, want at least 1", catchUps, n)
	}

	// The stalled watcher reads again: every event of the log once, in
	// order, on the same stream.
	type received struct {
		ev  *pb.ExpirationEvent
		err error
	}
	next := make(chan received)
	go func() {
		for {
			ev, err := stalled.Recv()
			next <- received{ev, err}
			if err != nil {
				return
			}
		}
	}()
	recv := func(what string) *pb.ExpirationEvent {
		t.Helper()
		select {
		case r := <-next:
			if r.err != nil {
				t.Fatalf("the slow watch ended with %v (trailer %v) %s; it must not be cut off", r.err, stalled.Trailer(), what)
			}
			return r.ev
		case <-time.After(30 * time.Second):
			t.Fatalf("the slow watch received nothing for 30 s %s", what)
			return nil
		}
	}
	drained := time.Now()
	for i := range l.Events {
		ev := recv(fmt.Sprintf("after %d of %d events", i, l.Events))
		if ev.GetCursor() != l.log[i].cursor || ev.GetOrderId() != l.log[i].orderID {
			t.Fatalf("the slow watcher's event %d is %s %s; the log has %s %s", i, ev.GetCursor(), ev.GetOrderId(), l.log[i].cursor, l.log[i].orderID)
		}
	}
	caughtUp := time.Since(drained)
	// Caught up, it is live again: a new expiration comes next, on the
	// same stream.
	if _, err := s.Client.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: "st-after", Ttl: ttl(50 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if ev := recv("after it caught up"); ev.GetOrderId() != "st-after" {
		t.Fatalf("after the log, the slow watcher got %s %s, want st-after", ev.GetCursor(), ev.GetOrderId())
	}
	heapAfter, goroutinesAfter := s.heapInuse(t), s.goroutines(t)
	result(t, "events=%d lost=%d doubled=%d slow_watcher_received=%d catchups=%d caught_up_in=%s healthy_watcher_p99=%s max=%s heap_before=%d stalled=%d after=%d goroutines_before=%d stalled=%d after=%d",
		l.Events, l.Lost, l.Doubled, l.Events+1, catchUps, caughtUp.Round(time.Millisecond), p99, maxLate,
		heapBefore, heapStalled, heapAfter, goroutinesBefore, goroutinesStalled, goroutinesAfter)
}

// TestManyWatchersNoLeak: hundreds of watchers come and go at once, round
// after round; when they are gone, so are their goroutines, and the heap
// does not keep growing from one round to the next.
func TestManyWatchersNoLeak(t *testing.T) {
	r := redistest.Start(t)
	s := startProcess(t, map[string]string{"REDIS_URL": r.URL()}, "-debug-addr", "127.0.0.1:0")
	waitGoroutines := func(max int) int {
		deadline := time.Now().Add(10 * time.Second)
		for {
			g := s.goroutines(t)
			if g <= max || time.Now().After(deadline) {
				return g
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Warm up: the first REST call opens the gateway's connection to the
	// gRPC port, whose goroutines stay.
	s.watch(t, "").cancel()
	s.restWatch(t, "").cancel()
	time.Sleep(200 * time.Millisecond)
	baseG := s.goroutines(t)

	const grpcWatchers, restWatchers, rounds = 300, 100, 5
	var peakG, afterG int
	var heaps []int
	for round := range rounds {
		var watchers []*watcher
		var rest []*ndjson
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range grpcWatchers + restWatchers {
			wg.Go(func() {
				if i < grpcWatchers {
					w := s.watch(t, "")
					mu.Lock()
					watchers = append(watchers, w)
					mu.Unlock()
					return
				}
				n := s.restWatch(t, "")
				mu.Lock()
				rest = append(rest, n)
				mu.Unlock()
			})
		}
		wg.Wait()
		peakG = max(peakG, s.goroutines(t))
		id := fmt.Sprint("leak-", round)
		if _, err := s.Client.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: id, Ttl: ttl(100 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		for _, w := range watchers {
			if ev := w.next(t, 5*time.Second); ev.GetOrderId() != id {
				t.Fatalf("watcher got %v", ev)
			}
		}
		for _, n := range rest {
			if ev := n.next(t); ev["orderId"] != id {
				t.Fatalf("REST watcher got %v", ev)
			}
		}
		for _, w := range watchers {
			w.cancel()
		}
		for _, n := range rest {
			n.cancel()
		}
		afterG = waitGoroutines(baseG + 5)
		if afterG > baseG+5 {
			t.Errorf("round %d: goroutines: %d before, %d with %d watchers, %d after they left", round, baseG, peakG, grpcWatchers+restWatchers, afterG)
		}
		heaps = append(heaps, s.heapInuse(t))
	}
	// The first round fills pools and buffers that stay, and the heap
	// settles over the next; from the second round on, three more rounds
	// (1,200 watchers) must not add more than 2 MiB, which a leak of
	// 600 bytes per watcher would.
	if heaps[rounds-1] > heaps[1]+2<<20 {
		t.Errorf("heap in use after each round grew: %v", heaps)
	}
	result(t, "watchers_per_round=%d rounds=%d goroutines_before=%d peak=%d after=%d heap_after_each_round=%v",
		grpcWatchers+restWatchers, rounds, baseG, peakG, afterG, heaps)
}
