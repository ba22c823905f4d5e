package redisstore_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

func TestParseDurability(t *testing.T) {
	for in, want := range map[string]redisstore.Durability{"strict": redisstore.DurabilityStrict, " Fast": redisstore.DurabilityFast} {
		if got, err := redisstore.ParseDurability(in); err != nil || got != want {
			t.Errorf("ParseDurability(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := redisstore.ParseDurability("safe"); err == nil || !strings.Contains(err.Error(), "strict") {
		t.Errorf("ParseDurability(safe): %v; want an error naming the modes", err)
	}
}

// TestStrictSettings: in the strict mode, one Redis without replicas must
// fsync its AOF at every write. Until it does, Ping fails naming the
// settings, and writes are refused before they reach Redis; once it does,
// they are accepted. The fast mode serves on the same Redis.
func TestStrictSettings(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	fast := newStore(t, srv)
	if err := fast.Ping(t.Context()); err != nil {
		t.Fatalf("fast mode: Ping: %v", err)
	}
	s := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Durability: redisstore.DurabilityStrict})
	ctx := t.Context()
	err := s.Ping(ctx)
	if order.KindOf(err) != order.KindFailedPrecondition || !strings.Contains(err.Error(), "appendfsync always") || !strings.Contains(err.Error(), "appendonly no") {
		t.Fatalf("Ping: %v; want FailedPrecondition naming appendonly no and appendfsync always", err)
	}
	if !s.DurabilityUnsafe() {
		t.Error("DurabilityUnsafe is false")
	}
	g := order.Group{ID: "g", AckDeadline: time.Second, MaxDeliveries: 3}
	for name, call := range map[string]func() error{
		"Checkout":    func() error { _, _, err := s.Checkout(ctx, "o", time.Minute, nil); return err },
		"Cancel":      func() error { _, err := s.Cancel(ctx, "o"); return err },
		"CreateGroup": func() error { _, _, err := s.CreateGroup(ctx, g, nil, 10); return err },
	} {
		if err := call(); order.KindOf(err) != order.KindFailedPrecondition || !strings.Contains(err.Error(), "appendfsync") {
			t.Errorf("%s: %v; want FailedPrecondition naming appendfsync", name, err)
		}
	}
	if n, _ := admin.Exists(ctx, "oe:{0}:pending").Result(); n != 0 {
		t.Error("a refused checkout reached Redis")
	}

	// appendonly alone is not enough: everysec may lose a second.
	if err := admin.ConfigSet(ctx, "appendonly", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err == nil || !strings.Contains(err.Error(), "appendfsync everysec") {
		t.Fatalf("Ping with appendfsync everysec: %v; want it named", err)
	}
	if err := admin.ConfigSet(ctx, "appendfsync", "always").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping with appendonly yes, appendfsync always: %v", err)
	}
	if _, _, err := s.Checkout(ctx, "o", time.Minute, nil); err != nil {
		t.Fatalf("Checkout: %v", err)
	}
	if _, _, err := s.CreateGroup(ctx, g, nil, 10); err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
}

// TestStrictWaitsForEveryReplica runs the strict store on a master with two
// replicas: every write waits until both have it, starting from a count of
// replicas that is 0 (the store has not looked yet), and a write that one
// stalled replica cannot confirm is answered UNAVAILABLE, saying that its
// outcome is unknown and that repeating it is safe. The fast store answers
// the same write at once, without WAIT.
func TestStrictWaitsForEveryReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("replicas stalled with SIGSTOP: not in -short")
	}
	master := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	host, port, _ := net.SplitHostPort(master.Addr)
	r1 := redistest.Start(t, "--replicaof", host, port)
	r2 := redistest.Start(t, "--replicaof", host, port)
	admin := master.Client(t)
	ctx := t.Context()
	waitUntil(t, 10*time.Second, "two replicas online", func() bool {
		return strings.Count(admin.Info(ctx, "replication").Val(), "state=online") == 2
	})
	s := redisstore.New(master.Client(t), redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Durability: redisstore.DurabilityStrict})
	fast := newStore(t, master)
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	// Another replica of the service, which has read the store's layout
	// (its connection has written nothing since).
	other := redisstore.New(master.Client(t), redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Durability: redisstore.DurabilityStrict})
	if err := other.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// Both replicas have acknowledged everything so far (they ack once a
	// second), so that the stalled one counts for anything older.
	waitUntil(t, 10*time.Second, "both replicas to acknowledge the master's offset", func() bool {
		info := admin.Info(ctx, "replication").Val()
		var offset string
		for line := range strings.SplitSeq(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "master_repl_offset:"); ok {
				offset = v
			}
		}
		return offset != "" && strings.Count(info, ",offset="+offset+",") == 2
	})

	// The store has never counted the replicas: the first write learns
	// of them from ROLE and waits for both. One of them stalled makes it
	// unconfirmed.
	if err := syscall.Kill(r1.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(r1.PID(), syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	// The master has sent r1 what it had before the stall: the stall must
	// last past that, so the first call is a warm-up of the scripts.
	_, _, _ = fast.Checkout(ctx, "warm-up", time.Hour, nil)
	start := time.Now()
	_, _, err := s.Checkout(ctx, "stalled", time.Hour, nil)
	took := time.Since(start)
	if order.KindOf(err) != order.KindUnavailable || !strings.Contains(err.Error(), "outcome is unknown") || !strings.Contains(err.Error(), "repeating the call is safe") {
		t.Fatalf("Checkout with a replica stalled: %v; want Unavailable, outcome unknown, safe to repeat", err)
	}
	t.Logf("checkout with a replica stalled: %v after %v", err, took.Round(time.Millisecond))
	// A repeat from another replica of the service, whose connection
	// wrote nothing since the replicas last acknowledged, must not confirm
	// what the stalled replica does not have. (WAIT alone would, for a
	// call that wrote nothing: see syncScript. The checkout script's
	// repeat happens to replicate something of its own here, so this
	// passes without the barrier too.)
	if _, created, err := other.Checkout(ctx, "stalled", time.Hour, nil); order.KindOf(err) != order.KindUnavailable {
		t.Errorf("repeated Checkout with a replica stalled, from another store: created %v, %v; want Unavailable", created, err)
	}
	if _, err := s.Complete(ctx, "stalled"); order.KindOf(err) != order.KindUnavailable {
		t.Errorf("Complete with a replica stalled: %v; want Unavailable", err)
	}
	if _, _, err := s.CreateGroup(ctx, order.Group{ID: "g", AckDeadline: time.Second, MaxDeliveries: 3}, nil, 10); order.KindOf(err) != order.KindUnavailable {
		t.Errorf("CreateGroup with a replica stalled: %v; want Unavailable", err)
	}
	if got := s.UnconfirmedWrites(); got != 3 {
		t.Errorf("UnconfirmedWrites %d, want 3", got)
	}
	// The fast mode does not wait.
	waits := infoInt(t, admin, "commandstats", "cmdstat_wait", "calls")
	if _, _, err := fast.Checkout(ctx, "fast", time.Hour, nil); err != nil {
		t.Errorf("fast Checkout with a replica stalled: %v", err)
	}
	if got := infoInt(t, admin, "commandstats", "cmdstat_wait", "calls"); got != waits {
		t.Errorf("the fast checkout ran WAIT %d times", got-waits)
	}

	resume()
	// Repeating is safe: the repeat finds the order that the unconfirmed
	// call did make, and confirms it.
	waitUntil(t, 10*time.Second, "the repeated checkout confirmed", func() bool {
		o, created, err := s.Checkout(ctx, "stalled", time.Hour, nil)
		return err == nil && !created && o.Status == order.StatusPending
	})
	for _, r := range []*redistest.Server{r1, r2} {
		if ok, _ := r.Client(t).HExists(ctx, "oe:{0}:pending", "stalled").Result(); !ok {
			t.Errorf("replica %s has no order stalled after the confirmed repeat", r.Addr)
		}
	}
	waits = infoInt(t, admin, "commandstats", "cmdstat_wait", "calls")
	if _, err := s.Cancel(ctx, "stalled"); err != nil {
		t.Fatal(err)
	}
	if got := infoInt(t, admin, "commandstats", "cmdstat_wait", "calls"); got != waits+1 {
		t.Errorf("the master ran WAIT %d times for one strict cancel, want once", got-waits)
	}
	if _, _, err := s.CreateGroup(ctx, order.Group{ID: "g", AckDeadline: time.Second, MaxDeliveries: 3}, nil, 10); err != nil {
		t.Errorf("CreateGroup: %v", err)
	}
	if err := s.DeleteGroup(ctx, "g"); err != nil {
		t.Errorf("DeleteGroup: %v", err)
	}
}

// TestStrictGroupWaitPerMaster: a group write waits for the replicas of
// the master it went to, as that master last counted them, not as the last
// master written counted its own: on a cluster whose masters have
// different numbers of replicas, a write to the master with fewer is not
// made to wait out replicaWait for replicas it does not have. MONITOR on
// that master shows what its WAITs asked for.
func TestStrictGroupWaitPerMaster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	c := redistest.StartCluster(t, 3, 1)
	ctx := t.Context()
	// The master of the groups' hash, written first, gets a second
	// replica (outside the cluster's own view, which WAIT does not need).
	rich := c.MasterOf(t, "oe:groups")
	host, port, _ := net.SplitHostPort(rich.Addr)
	redistest.Start(t, "--replicaof", host, port)
	waitUntil(t, 10*time.Second, "the second replica online", func() bool {
		return strings.Count(rich.Client(t).Info(ctx, "replication").Val(), "state=online") == 2
	})
	waitUntil(t, 10*time.Second, "both replicas to confirm a write", func() bool {
		conn := rich.Client(t).Conn()
		defer conn.Close()
		conn.Set(ctx, "{oe:groups}warm", "1", 0)
		n, _ := conn.Do(ctx, "WAIT", 2, 100).Int()
		return n == 2
	})
	s := redisstore.New(c.Client(t), redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: 6, Durability: redisstore.DurabilityStrict})
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	// MONITOR on each other master, over a plain connection: Redis
	// answers +OK, then a line a command.
	type monitored struct {
		addr  string
		lines chan string
	}
	var poor []monitored
	for _, m := range c.Masters(t) {
		if m.Addr == rich.Addr {
			continue
		}
		conn, err := net.Dial("tcp", m.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		r := bufio.NewReader(conn)
		if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
			t.Fatal(err)
		}
		if ok, err := r.ReadString('\n'); err != nil || ok != "+OK\r\n" {
			t.Fatalf("MONITOR on %s: %q, %v", m.Addr, ok, err)
		}
		lines := make(chan string, 10000)
		go func() {
			defer close(lines)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				lines <- strings.TrimSpace(line)
			}
		}()
		poor = append(poor, monitored{m.Addr, lines})
	}
	for i := range 3 {
		id := fmt.Sprintf("g%d", i)
		if _, _, err := s.CreateGroup(ctx, order.Group{ID: id, AckDeadline: time.Minute, MaxDeliveries: 3}, nil, 10); err != nil {
			t.Fatal(err)
		}
	}
	waits := 0
	for _, m := range poor {
		// A marker after the writes, so that every WAIT before it was read.
		mc := redis.NewClient(&redis.Options{Addr: m.addr})
		if err := mc.Echo(ctx, "done").Err(); err != nil {
			t.Fatal(err)
		}
		_ = mc.Close()
		timeout := time.After(10 * time.Second)
	read:
		for {
			select {
			case <-timeout:
				t.Fatalf("master %s: MONITOR did not show the marker within 10s", m.addr)
			case line, ok := <-m.lines:
				if !ok {
					t.Fatalf("master %s: MONITOR ended before the marker", m.addr)
				}
				if strings.Contains(line, `"done"`) {
					break read
				}
				if i := strings.Index(strings.ToUpper(line), `"WAIT" `); i >= 0 {
					waits++
					if w := line[i:]; !strings.HasPrefix(strings.ToUpper(w), `"WAIT" "1" `) {
						t.Errorf("master %s, with one replica, ran %s; want WAIT 1 (its own count), not the other master's", m.addr, w)
					}
				}
			}
		}
	}
	if waits == 0 {
		t.Fatalf("the masters with one replica ran no WAIT for three group creations")
	}
	t.Logf("%d WAITs on the masters with one replica", waits)
}
